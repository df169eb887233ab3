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


@pytest.fixture
def vssd(store, build_dir):
    """ombra-vssd next to the store (same runtime directory); the store's writer registered."""
    log = open(store.tmp / "vssd.log", "w")
    p = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground", "--event-limit-ms", "20000"],
                         env=store.env, stdout=log, stderr=subprocess.STDOUT)
    store.vssd = p
    end = time.time() + 15
    while time.time() < end:
        r = store.ombra("vss", "writers", "--json", check=False)
        if r.rc == 0 and any(w["name"] == "Ombra Store Writer" and w["connected"] for w in json.loads(r.out)):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the store's writer did not register with ombra-vssd:\n" + store.stderr())
    yield p
    p.terminate()
    p.wait(20)
    log.close()


def writer_instance(store):
    ws = json.loads(store.ombra("vss", "writers", "--json").out)
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

    load(store, "db1", 800, seed=2)
    rc, inc, err = backup(store, build_dir, "db1", "incremental")
    assert rc == 0, err
    imd = inc["components_document"]["components"][0]["backup_metadata"]
    assert imd["log_range"][0] == hi + 1, imd
    h = header(store, "db1")
    pi = h["backups"]["previous_incremental"]
    assert pi and [pi["first_gen"], pi["last_gen"]] == imd["log_range"]
    assert min(gens(store, "db1")) >= min(imd["checkpoint"][0], imd["log_range"][1])

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
    assert len(delivered) > 20
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
