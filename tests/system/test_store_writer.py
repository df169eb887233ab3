"""The store's writer through ombra-vssd, driven by a small requester (tests/tools/vss_requester):
each backup type's truncation and header slot as `ombra dbutil header --json` and the log folder
show them; the refusals with their numbers; deliveries that never stop during a backup; kill -9
of the store between Freeze and BackupComplete."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time

import pytest


def writer_instance(store):
    ws = json.loads(store.ombra("vss", "writers", "--json").out)["writers"]
    return [w for w in ws if w["name"] == "Ombra Store Writer" and w["connected"]][0]["instance_id"]


def requester(store, build_dir, db, type_="full", provider="held", pause_at=None, extra=()):
    info = store.db_show(db)
    comp = f"Ombra Store\\srv1\\{info['id']}"
    argv = [str(build_dir / "tests/tools/vss_requester"), "--type", type_, "--provider", provider,
            "--component", f"{writer_instance(store)}:{comp}", *extra]
    if pause_at:
        argv += ["--pause-at", pause_at]
    return subprocess.Popen(argv, env=store.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def backup(store, build_dir, db, type_="full", provider="held"):
    p = requester(store, build_dir, db, type_, provider)
    out, err = p.communicate(timeout=300)
    res = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    return p.returncode, res, err


def header(store, db):
    edb = store.db_show(db)["edb"]
    r = store.ombra("dbutil", "header", edb, "--json")
    return json.loads(r.out)


def gens(store, db, logs=None):
    logs = pathlib.Path(logs or store.db_show(db)["logs"])
    return sorted(int(p.name[3:11], 16) for p in logs.glob("E00????????.log"))


def load(store, db, n, seed=1):
    store.ombra("mail", "load", db, "--mailboxes", "4", "--messages", str(n), "--size", "6000", "--seed", str(seed))


def test_each_backup_type_truncates_and_records_its_slot(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    load(store, "db1", 1500)
    before = gens(store, "db1")
    assert len(before) >= 3, before
    rc, full, err = backup(store, build_dir, "db1", "full")
    assert rc == 0, err
    md = full["components_document"]["components"][0]["backup_metadata"]
    lo, hi = md["log_range"]
    h = header(store, "db1")
    pf = h["backups"]["previous_full"]
    assert pf and pf["first_gen"] == lo and pf["last_gen"] == hi, (pf, md)
    assert min(gens(store, "db1")) >= md["checkpoint"][0], "logs below the checkpoint at freeze stay"
    assert not any(g < md["checkpoint"][0] for g in gens(store, "db1"))

    load(store, "db1", 800, seed=3)
    kept = gens(store, "db1")
    for t, slot in (("differential", "previous_differential"), ("copy", "previous_copy")):
        rc, res, err = backup(store, build_dir, "db1", t)
        assert rc == 0, err
        m = res["components_document"]["components"][0]["backup_metadata"]
        s = header(store, "db1")["backups"][slot]
        assert s and [s["first_gen"], s["last_gen"]] == m["log_range"], (t, s, m)
        now = gens(store, "db1")
        assert all(g in now for g in kept), f"{t} must not truncate: {kept} -> {now}"
    assert header(store, "db1")["backups"]["previous_differential"]["first_gen"] == hi + 1

    load(store, "db1", 800, seed=2)
    rc, inc, err = backup(store, build_dir, "db1", "incremental")
    assert rc == 0, err
    imd = inc["components_document"]["components"][0]["backup_metadata"]
    assert imd["log_range"][0] == hi + 1, imd
    h = header(store, "db1")
    pi = h["backups"]["previous_incremental"]
    assert pi and [pi["first_gen"], pi["last_gen"]] == imd["log_range"]
    assert min(gens(store, "db1")) >= min(imd["checkpoint"][0], imd["log_range"][1])
    # the incremental truncated what a differential needs: refused until the next full
    rc, res, err = backup(store, build_dir, "db1", "differential")
    assert rc == 1 and "-521 InvalidBackupSequence" in err, err

    rc, res, err = backup(store, build_dir, "db1", "full")
    assert rc == 0, err
    b = header(store, "db1")["backups"]
    assert b["previous_incremental"] is None and b["previous_differential"] is None and b["previous_copy"]


def test_refusals_carry_their_numbers(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    store.ombra("db", "new", "circ", "--circular-logging")
    load(store, "db1", 100)
    rc, res, err = backup(store, build_dir, "db1", "incremental")
    assert rc == 1 and "-560 MissingFullBackup" in err and "db1" in err, err
    rc, res, err = backup(store, build_dir, "db1", "differential")
    assert rc == 1 and "-560 MissingFullBackup" in err, err
    rc, res, err = backup(store, build_dir, "circ", "full")
    assert rc == 0, err
    rc, res, err = backup(store, build_dir, "circ", "incremental")
    assert rc == 1 and "-526 InvalidBackup" in err and "circular" in err, err
    # a second backup of a database in the middle of one
    a = requester(store, build_dir, "db1", "full", pause_at="complete")
    assert a.stdout.readline().startswith("paused complete")
    rc, res, err = backup(store, build_dir, "db1", "copy")
    assert rc == 1 and "-505 BackupInProgress" in err, err
    a.stdin.write("\n")
    a.stdin.flush()
    out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    # nothing held: a dismounted database is not offered
    store.ombra("db", "dismount", "db1")
    rc, res, err = backup(store, build_dir, "db1", "full")
    assert rc == 1 and ("ObjectNotFound" in err or "not mounted" in err), err


@pytest.mark.slow_under_sanitizers
def test_deliveries_never_stop_during_a_held_backup_and_the_shadow_recovers(store, vssd, build_dir, tmp_path):
    store.ombra("db", "new", "db1")
    load(store, "db1", 2000)
    stop = threading.Event()
    delivered, failures, worst = [], [], [0.0]

    def deliver():
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            r = store.ombra("mail", "deliver", "db1", f"user{i % 7}", input=f"Subject: m{i}\n\nbody {i}".encode(),
                            check=False, binary=True)
            worst[0] = max(worst[0], time.monotonic() - t0)
            if r.rc != 0:
                failures.append(r.describe())
            else:
                delivered.append((f"user{i % 7}", int(r.out.strip())))
            i += 1

    th = threading.Thread(target=deliver)
    th.start()
    try:
        time.sleep(0.5)
        p = requester(store, build_dir, "db1", "full", "held", pause_at="complete")
        line = p.stdout.readline()
        assert line.startswith("paused complete"), line + p.stderr.read()
        snap = json.loads(line[len("paused complete"):])
        sh = snap["shadows"]
        time.sleep(1.0)  # deliveries go on while the shadow copy is held
        # copy the shadow (as the backup application would) and prove it recovers
        info = store.db_show("db1")
        dest = tmp_path / "copy"
        for s in sh:
            shutil.copytree(s["exposed"], dest / os.path.relpath(s["original"], "/"), symlinks=True)
        edb = dest / os.path.relpath(info["edb"], "/")
        logs = dest / os.path.relpath(info["logs"], "/")
        names = os.listdir(logs)
        assert "E00.chk" in names and not [n for n in names if n.endswith((".pgj", ".jrs")) or "tmp" in n], names
        r = store.ombra("dbutil", "check-set", "--edb", edb, "--logs", logs, check=False)
        assert r.rc == 0, r.describe()
        p.stdin.write("\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        time.sleep(0.5)
    finally:
        stop.set()
        th.join()
    assert not failures, failures[:3]
    assert len(delivered) > 5  # a few seconds of deliveries, on a busy machine under ASan too
    r = store.ombra("dbutil", "recover", logs, "--edb", edb, check=False)
    assert r.rc == 0 and "Clean Shutdown" in r.out, r.describe()
    assert store.ombra("dbutil", "checksum", edb, check=False).rc == 0
    for box, mid in delivered:
        store.ombra("mail", "get", "db1", box, str(mid))
    print(f"{len(delivered)} deliveries during the backup, slowest {worst[0] * 1000:.0f} ms")


def test_a_store_killed_between_freeze_and_backup_complete_truncates_nothing(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    load(store, "db1", 1500)
    digest = store.digest("db1")
    logs = store.db_show("db1")["logs"]
    before_gens, before = gens(store, "db1"), header(store, "db1")["backups"]
    p = requester(store, build_dir, "db1", "full", "held", pause_at="complete")
    assert p.stdout.readline().startswith("paused complete")
    store.kill9()
    p.stdin.write("\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1 and ("WriterNotResponding" in err or "disconnected" in err), err
    assert all(g in gens(store, "db1", logs) for g in before_gens), "nothing may be truncated"
    store.start()
    assert store.digest("db1") == digest
    assert header(store, "db1")["backups"] == before, "no slot may be written"
    end = time.time() + 15
    while time.time() < end and backup(store, build_dir, "db1", "full")[0] != 0:
        time.sleep(0.3)  # the writer registers again after the restart
    assert header(store, "db1")["backups"]["previous_full"], "the next backup succeeds"
    assert vssd.poll() is None


# ---- restore through the writer (the test lays the files down, as `ombra restore` will) ----

def held_backup(store, build_dir, db, type_, dest):
    """A backup whose files the test copies out of the shadow copy into dest; returns the run's
    JSON (writers' metadata and the components document) and the files copied."""
    p = requester(store, build_dir, db, type_, "held", pause_at="complete")
    line = p.stdout.readline()
    assert line.startswith("paused complete"), line + p.stderr.read()
    snap = json.loads(line[len("paused complete"):])
    md = snap["components_document"]["components"][0]["backup_metadata"]
    lo, hi = md["log_range"]
    info = store.db_show(db)
    dest.mkdir(parents=True, exist_ok=True)
    for s in snap["shadows"]:
        src = pathlib.Path(s["exposed"])
        if type_ in ("full", "copy"):
            e = src / os.path.relpath(info["edb"], s["original"])
            if e.exists():
                shutil.copy(e, dest / "db.edb")
        lg = src / os.path.relpath(info["logs"], s["original"])
        for g in range(lo, hi + 1):
            f = lg / f"{md['base']}{g:08X}.log"
            if f.exists():
                shutil.copy(f, dest / f.name)
    p.stdin.write("\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    run = json.loads(out.strip().splitlines()[-1])
    for g in range(lo, hi + 1):
        assert (dest / f"{md['base']}{g:08X}.log").exists(), f"generation {g} not in the shadow copy"
    return run


def restore_via_writer(store, build_dir, run, sets, options, new_target=None, additional=False):
    """The restore sequence; between PreRestore and PostRestore the files of `sets` (folders
    from held_backup, in order) are laid where the writer says."""
    argv = [str(build_dir / "tests/tools/vss_requester"), "--restore", "-", "--pause-at", "post",
            "--restore-options", json.dumps(options)]
    f = store.tmp / f"run-{time.monotonic_ns()}.json"
    f.write_text(json.dumps(run))
    argv[2] = str(f)
    if new_target:
        argv += ["--new-target", json.dumps(new_target)]
    if additional:
        argv.append("--additional")
    p = subprocess.Popen(argv, env=store.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("paused post"):
        out, err = p.communicate(timeout=60)
        return p.returncode, None, line + out + err
    targets = json.loads(line[len("paused post"):])
    t = list(targets.values())[0]
    for d in sets:
        for f in sorted(d.iterdir()):
            if f.name == "db.edb":
                shutil.copy(f, t["edb"])
            else:
                shutil.copy(f, pathlib.Path(t["logs"]) / f.name)
    p.stdin.write("\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=300)
    res = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    return p.returncode, res, err


@pytest.fixture
def backed_up(store, vssd, build_dir, tmp_path):
    """db1 with mail, a full backup (digest d0), more mail (d1)."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 600)
    d0 = store.digest("db1")
    run = held_backup(store, build_dir, "db1", "full", tmp_path / "full")
    load(store, "db1", 300, seed=9)
    d1 = store.digest("db1")
    assert d1 != d0
    return {"run": run, "d0": d0, "d1": d1, "full": tmp_path / "full", "id": store.db_show("db1")["id"]}


def test_restore_over_the_original_without_and_with_roll_forward(store, build_dir, backed_up):
    b = backed_up
    store.ombra("db", "dismount", "db1")
    opts = {"target": "db1", "target_id": b["id"], "mount": True, "roll_forward": False}
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], opts)
    assert rc == 1 and "-1032 FileAccessDenied" in err and "allow" in err, err  # not allowed yet
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], opts)
    assert rc == 0, err
    assert store.digest("db1") == b["d0"], "the restored database is the backup's"
    assert store.db_show("db1")["mounted"]


def test_restore_over_the_original_rolls_forward_through_the_logs_on_disk(store, build_dir, backed_up):
    b = backed_up
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    opts = {"target": "db1", "target_id": b["id"], "mount": True, "roll_forward": True}
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], opts)
    assert rc == 0, err
    assert store.digest("db1") == b["d1"], "roll forward replays the logs written after the backup"


def test_restore_to_another_database_and_to_the_recovery_database(store, build_dir, backed_up, tmp_path):
    b = backed_up
    store.ombra("db", "new", "db2")
    load(store, "db2", 50, seed=5)
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], {"target": "db2", "mount": True})
    assert rc == 1 and "-1202 DatabaseInUse" in err and "dismount" in err, err
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]],
                                      {"target": "db2", "target_id": b["id"]})
    assert rc == 1 and "-531 BadDbSignature" in err, err
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], {"target": "db2", "mount": True})
    assert rc == 0, err
    assert store.digest("db2") == b["d0"] and store.digest("db1") == b["d1"]
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    assert not (logs2 / "_restoredLogs").exists()
    mid = store.deliver("db2", "after", b"Subject: after\n\nnew mail in the restored database")
    store.kill9()  # the restored database recovers from its own new logs
    store.start()
    assert b"new mail in the restored database" in store.get("db2", "after", mid)
    # the recovery database (db2, a copy of live db1, is one too: one is mounted at a time)
    assert store.db_show("db2")["recovery"] is True
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "new-recovery", "rdb", "--edb", tmp_path / "r" / "rdb.edb", "--logs", tmp_path / "r" / "logs")
    store.ombra("db", "dismount", "rdb")
    store.ombra("db", "set", "rdb", "--allow-restore", "on")
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]],
                                      {"target": "rdb", "recovery": True, "mount": True})
    assert rc == 0, err
    assert store.digest("rdb") == b["d0"]


def test_point_in_time_and_additional_restores(store, vssd, build_dir, tmp_path):
    store.ombra("db", "new", "db1")
    load(store, "db1", 400)
    full = held_backup(store, build_dir, "db1", "full", tmp_path / "full")
    load(store, "db1", 300, seed=2)
    da = store.digest("db1")
    inc1 = held_backup(store, build_dir, "db1", "incremental", tmp_path / "inc1")
    load(store, "db1", 300, seed=3)
    db_ = store.digest("db1")
    inc2 = held_backup(store, build_dir, "db1", "incremental", tmp_path / "inc2")
    stop = inc1["components_document"]["components"][0]["backup_metadata"]["log_range"][1]
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    # every set laid down at once, replay stopped at the first incremental's last generation
    rc, res, err = restore_via_writer(store, build_dir, inc2, [tmp_path / "full", tmp_path / "inc1", tmp_path / "inc2"],
                                      {"target": "db2", "mount": True, "stop_gen": stop})
    assert rc == 0, err
    assert store.digest("db2") == da, "mail after the point is absent, before it present"
    # additional restores: the full first without replay, then the incrementals with it (into
    # db3 once db2, a recovery database as a copy of live db1, is dismounted: one is mounted)
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "new", "db3")
    store.ombra("db", "dismount", "db3")
    store.ombra("db", "set", "db3", "--allow-restore", "on")
    rc, res, err = restore_via_writer(store, build_dir, full, [tmp_path / "full"], {"target": "db3"}, additional=True)
    assert rc == 0, err
    r = store.ombra("db", "mount", "db3", check=False)
    assert r.rc == 1 and "-506 RestoreInProgress" in r.err, r.describe()  # nothing replayed yet
    rc, res, err = restore_via_writer(store, build_dir, inc2, [tmp_path / "inc1", tmp_path / "inc2"],
                                      {"target": "db3", "mount": True})
    assert rc == 0, err
    assert store.digest("db3") == db_


def test_restore_to_new_paths_leaves_a_clean_database_there(store, build_dir, backed_up, tmp_path):
    b = backed_up
    edb, logs = tmp_path / "new" / "restored.edb", tmp_path / "new" / "logs"
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], {},
                                      new_target={"edb": str(edb), "logs": str(logs)})
    assert rc == 0, err
    replay = list(res["post"].values())[0]["replay"]
    assert replay["last_gen"] >= replay["first_gen"] > 0, res
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] == "Clean Shutdown" and h["log_required"] == [0, 0]
    assert not (logs / "_restoredLogs").exists()
    assert store.digest("db1") == b["d1"], "the original is untouched"


def test_additional_restores_leave_the_env_file_and_refuse_a_mount_until_replayed(store, build_dir, backed_up):
    b = backed_up
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]], {"target": "db2"}, additional=True)
    assert rc == 0, err
    info2 = store.db_show("db2")
    env = json.loads((pathlib.Path(info2["logs"]) / "_restoredLogs" / "E00restore.env").read_text())
    assert env["original"]["id"] == b["id"] and env["target"]["id"] == info2["id"], env
    # db2 becomes a recovery database: it is given the id of db1, which is live here
    assert env["base"] == "E00" and env["recovery"] is True and env["log_signature"]
    r = store.ombra("db", "mount", "db2", check=False)
    assert r.rc == 1 and "-506 RestoreInProgress" in r.err, r.describe()
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [], {"target": "db2", "mount": True})
    assert rc == 0, err
    assert store.digest("db2") == b["d0"]


def test_a_restore_with_additional_restores_gets_its_logs_synced_even_when_it_asks_otherwise(store, build_dir, backed_up):
    """logs_unsynced is agreed only when this PostRestore replays the logs and they then go. A
    requester that asks for it with additional restores (no replay now: the next restore
    continues the folder and, after a restart of the machine perhaps, replays them) gets each
    generation synced: the .env names no boot, and the next restore, which rewrites the .env,
    cannot lose that mark."""
    b = backed_up
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    lo, hi = b["run"]["components_document"]["components"][0]["backup_metadata"]["log_range"]
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [b["full"]],
                                      {"target": "db2", "logs_arriving": [lo, hi], "logs_unsynced": True},
                                      additional=True)
    assert rc == 0, err
    assert list(res["pre"].values())[0]["logs_unsynced"] is False, res
    env = pathlib.Path(store.db_show("db2")["logs"]) / "_restoredLogs" / "E00restore.env"
    assert json.loads(env.read_text())["logs_unsynced_boot"] is None
    rc, res, err = restore_via_writer(store, build_dir, b["run"], [], {"target": "db2", "mount": True})
    assert rc == 0, err
    assert store.digest("db2") == b["d0"]


def test_a_database_dismounted_after_backup_complete_lets_its_hold_go_and_truncates_nothing(store, vssd, build_dir):
    # (dismounting it during the session, before BackupComplete, is refused: test_session_rules)
    store.ombra("db", "new", "db1")
    load(store, "db1", 800)
    before = gens(store, "db1")
    logs = store.db_show("db1")["logs"]
    p = requester(store, build_dir, "db1", "full", "held", pause_at="release")
    assert p.stdout.readline().startswith("paused release")
    store.ombra("db", "dismount", "db1")
    p.stdin.write("\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    b = header(store, "db1")["backups"]
    assert b["previous_full"], b
    assert all(g in gens(store, "db1", logs) for g in before), "a dismounted database: nothing truncated"
    store.ombra("db", "mount", "db1")
    assert backup(store, build_dir, "db1", "full")[0] == 0


def test_the_writer_registers_again_when_the_coordinator_comes_back(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    store.ombra("db", "new-recovery", "rdb", "--edb", store.tmp / "r" / "rdb.edb", "--logs", store.tmp / "r" / "logs")
    vssd.send_signal(signal.SIGKILL)
    vssd.wait()
    log = open(store.tmp / "vssd2.log", "w")
    p = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground"], env=store.env, stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        if not store.writer_registered():
            pytest.fail("the writer did not register again")
        rc, res, err = backup(store, build_dir, "db1", "full")
        assert rc == 0, err
        ids = [w for w in res["writers"] if w["name"] == "Ombra Store Writer"][0]["metadata"]["components"]
        names = {c["caption"] for c in ids if c.get("selectable")}
        assert names == {"db1"}, names  # the recovery database is not offered
    finally:
        p.terminate()
        p.wait(20)
        log.close()


def test_a_requester_that_dies_after_backup_complete_before_storing_its_set_truncates_nothing(store, vssd, build_dir):
    """BackupComplete records the backup; the logs it holds are deleted only once the requester
    says it stored the backup (vss_req_set_backup_stored, sent with release). A requester killed
    in between leaves every generation on disk: no log is lost that no stored set holds."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 1500)
    before_gens = gens(store, "db1")
    assert len(before_gens) >= 3, before_gens
    p = requester(store, build_dir, "db1", "full", "held", pause_at="release")
    line = p.stdout.readline()
    assert line.startswith("paused release"), line + p.stderr.read()
    assert store.db_show("db1")["backups"]["previous_full"], "BackupComplete recorded the backup"
    p.kill()
    p.wait(10)
    deadline = time.time() + 20  # the coordinator's BackupShutdown for the lost requester
    while time.time() < deadline and "no log is truncated" not in store.stderr():
        time.sleep(0.1)
    assert "no log is truncated" in store.stderr(), store.stderr()
    assert all(g in gens(store, "db1") for g in before_gens), "nothing may be truncated"

    # the same backup released normally truncates
    rc, res, err = backup(store, build_dir, "db1", "full")
    assert rc == 0, err
    md = res["components_document"]["components"][0]["backup_metadata"]
    assert min(gens(store, "db1")) >= md["checkpoint"][0]


def test_one_restore_session_of_two_databases_keeps_each_slot_until_that_one_is_done(store, vssd, build_dir, tmp_path):
    """The protocol lets a requester restore several components in one session (ombra restore
    sends one). PostRestore takes them in order, and the first one's mount must not let the
    second one's restore go: while the second waits for its logs (logs_arriving, the requester
    holds its progress file), the store's status lists it, another session's restore of it is
    refused (-506), and the .edb the restore replaced is still held by the store. Then both are
    their backups, mounted, and the store holds no slot and neither old .edb."""
    from test_restore import held_deleted, let_go
    runs, lay, d0, info = {}, {}, {}, {}
    for i, db in enumerate(("db1", "db2")):
        store.ombra("db", "new", db)
    for i, db in enumerate(("db1", "db2")):
        load(store, db, 400, seed=i + 1)
        d0[db] = store.digest(db)
        runs[db] = held_backup(store, build_dir, db, "full", tmp_path / db)
        load(store, db, 200, seed=i + 7)
        assert store.digest(db) != d0[db]
        info[db] = store.db_show(db)
        store.ombra("db", "dismount", db)
        store.ombra("db", "set", db, "--allow-restore", "on")
    # a third database's backup, for another session's restore into db2 (the coordinator itself
    # refuses a component that is in a session already: -505)
    store.ombra("db", "new", "db3")
    load(store, "db3", 50, seed=5)
    run3 = held_backup(store, build_dir, "db3", "full", tmp_path / "db3")
    both = json.loads(json.dumps(runs["db1"]))
    both["components_document"]["components"] += runs["db2"]["components_document"]["components"]
    f = store.tmp / "run-both.json"
    f.write_text(json.dumps(both))
    lo2, hi2 = runs["db2"]["components_document"]["components"][0]["backup_metadata"]["log_range"]
    opts = [{"target": db, "target_id": info[db]["id"], "mount": True, "roll_forward": False} for db in ("db1", "db2")]
    opts[1]["logs_arriving"] = [lo2, hi2]
    p = subprocess.Popen([str(build_dir / "tests/tools/vss_requester"), "--restore", str(f), "--pause-at", "post",
                          "--restore-options", json.dumps(opts[0]), "--restore-options", json.dumps(opts[1]),
                          "--say-laid"],
                         env=store.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("paused post"), line + p.stderr.read()
        targets = {t["name"]: t for t in json.loads(line[len("paused post"):]).values()}
        assert sorted(targets) == ["db1", "db2"], targets
        for db, t in targets.items():
            # the .edb replaced by a rename, as ombra restore lays it: the old inode is the store's
            tmp = pathlib.Path(t["edb"]).with_name(".restore.tmp")
            shutil.copy(tmp_path / db / "db.edb", tmp)
            os.replace(tmp, t["edb"])
            for g in sorted((tmp_path / db).glob("E00*.log")):
                shutil.copy(g, pathlib.Path(t["logs"]) / g.name)
        p.stdin.write("\n")
        p.stdin.flush()
        end = time.monotonic() + 120
        while not store.db_show("db1")["mounted"]:
            assert time.monotonic() < end and p.poll() is None, "db1 was not restored and mounted"
            time.sleep(0.05)
        # db1 is done and mounted; db2's replay waits for generation lo2
        restores = store.request({"op": "status"})["restores"]
        assert [r["target"] for r in restores] == ["db2"], restores
        assert held_deleted(store.proc.pid, info["db2"]["edb"]), "db2's replaced .edb was let go before its replay"
        rc, res, err = restore_via_writer(store, build_dir, run3, [], {"target": "db2", "mount": True})
        assert rc == 1 and "-506 RestoreInProgress" in err and restores[0]["session"] in err, err
        assert p.poll() is None
        p.stdin.write(f"say db2 {hi2}\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    post = json.loads(out.strip().splitlines()[-1])["post"]
    assert sorted(t["name"] for t in post.values() if t.get("mounted")) == ["db1", "db2"], post
    for db in ("db1", "db2"):
        assert store.digest(db) == d0[db], f"{db} is not its backup"
        assert let_go(store, info[db]["edb"], held=held_deleted), f"{db}'s replaced .edb is still held"
    assert store.request({"op": "status"})["restores"] == []


def test_a_store_stopped_while_its_replay_waits_for_unlaid_generations_exits(store, vssd, build_dir, tmp_path):
    """The interleaving a clean clone once caught by chance, made certain: PostRestore's replay
    waits for generations the requester has not said are laid (logs_arriving, the progress file
    held by the requester, which says nothing), and the store gets SIGTERM. The wait gives up
    (one line naming the generation), the session is aborted, the store exits 0 at once (before:
    it waited for the requester for ever), and the next restore of the same files succeeds."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 400)
    d0 = store.digest("db1")
    run = held_backup(store, build_dir, "db1", "full", tmp_path / "full")
    lo, hi = run["components_document"]["components"][0]["backup_metadata"]["log_range"]
    load(store, "db1", 100, seed=4)
    info = store.db_show("db1")
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    f = store.tmp / "run-stop.json"
    f.write_text(json.dumps(run))
    opts = {"target": "db1", "target_id": info["id"], "mount": True, "roll_forward": False,
            "logs_arriving": [lo, hi]}
    p = subprocess.Popen([str(build_dir / "tests/tools/vss_requester"), "--restore", str(f), "--pause-at", "post",
                          "--restore-options", json.dumps(opts), "--say-laid"],
                         env=store.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("paused post"), line + p.stderr.read()
        t = list(json.loads(line[len("paused post"):]).values())[0]
        tmp = pathlib.Path(t["edb"]).with_name(".restore.tmp")
        shutil.copy(tmp_path / "full" / "db.edb", tmp)
        os.replace(tmp, t["edb"])
        for g in sorted((tmp_path / "full").glob("E00*.log")):
            shutil.copy(g, pathlib.Path(t["logs"]) / g.name)
        p.stdin.write("\n")  # PostRestore starts; nothing is said laid: its replay waits for lo
        p.stdin.flush()
        end = time.monotonic() + 60
        while not any(r.get("target") == "db1" for r in store.request({"op": "status"})["restores"]) or \
                "replay starts while log generations" not in store.stderr():
            assert time.monotonic() < end and p.poll() is None, store.stderr()
            time.sleep(0.05)
        time.sleep(0.3)  # well into the wait
        t0 = time.monotonic()
        assert store.stop(seconds=15) == 0, store.stderr()
        took = time.monotonic() - t0
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert took < 10, f"the store took {took:.1f} s to stop"
    assert p.returncode == 1, out + err
    assert f"the store is stopping: log generation {lo} was not laid down yet" in store.stderr(), store.stderr()
    # started again, the same files restored by the same sequence: the backup, mounted
    store.start()
    rc, res, err = restore_via_writer(store, build_dir, run, [tmp_path / "full"],
                                      {"target": "db1", "target_id": info["id"], "mount": True,
                                       "roll_forward": False})
    assert rc == 0, err
    assert store.digest("db1") == d0
