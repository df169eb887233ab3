"""ombra backup against a real store and shadow copy service: every backup type into a
repository, with chains (parent sets) and the writer's slots; refusals surfaced with the writer's
reason; a damaged shadow copy fails the component (no set, nothing truncated); kill -9 of the
backup at every stage leaves a valid repository with no partial set, truncates nothing, and the
next backup succeeds and reuses the blocks already written; an encrypted repository."""
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import resume_when_stopped

STAGES = ["prepared", "snapshot", "copying", "copied", "checked", "committed", "completed"]


def load(store, db, n, seed=1, size=6000):
    store.ombra("mail", "load", db, "--mailboxes", "4", "--messages", str(n), "--size", str(size), "--seed", str(seed))


def gens(store, db, logs=None):
    logs = pathlib.Path(logs or store.db_show(db)["logs"])
    return sorted(int(p.name[3:11], 16) for p in logs.glob("E00????????.log"))


def header(store, db):
    return json.loads(store.ombra("dbutil", "header", store.db_show(db)["edb"], "--json").out)["backups"]


@pytest.fixture
def repo(store, vssd):
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


def backup(store, repo, type_, *dbs, provider="held", check=True, env=None):
    argv = [str(store.cli), "backup", "--repo", str(repo), "--type", type_, "--provider", provider, "--json", *dbs]
    p = subprocess.run(argv, env=dict(store.env, **(env or {})), capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout) if p.stdout.strip().startswith("{") else None
    return p.returncode, res, p.stderr


def sets(store, repo):
    return json.loads(store.ombra("backups", "list", "--repo", repo, "--json").out)["sets"]


def verify(store, repo):
    return store.ombra("verify", "--repo", repo, check=False)


def test_every_type_makes_a_set_with_its_chain_and_the_writer_records_it(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 2500, size=8000)
    rc, full, err = backup(store, repo, "full", "db1")
    assert full["type"] == "full" and [d["name"] for d in full["databases"]] == ["db1"] and full["freeze_ms"] >= 0
    assert full["bytes_read"] > 0 and full["bytes_stored"] > 0 and full["seconds"] > 0
    fs = full["sets"][0]
    assert header(store, "db1")["previous_full"]["last_gen"] == fs["log_range"][1]
    load(store, "db1", 300, seed=2)
    rc, dif, err = backup(store, repo, "differential", "db1")
    load(store, "db1", 300, seed=3)
    rc, inc, err = backup(store, repo, "incremental", "db1")
    rc, res, err = backup(store, repo, "differential", "db1", check=False)
    assert rc == 1 and "-521 InvalidBackupSequence" in err and "incremental" in err, err
    rc, cp, err = backup(store, repo, "copy", "db1")
    listed = {s["id"]: s for s in sets(store, repo)}
    assert len(listed) == 4
    show = lambda sid: json.loads(store.ombra("backups", "show", sid, "--repo", repo, "--json").out)
    i = show(inc["sets"][0]["id"])
    assert i["parent"] == fs["id"] and i["log_range"][0] == fs["log_range"][1] + 1
    d = show(dif["sets"][0]["id"])
    assert d["parent"] == fs["id"] and d["log_range"][0] == fs["log_range"][1] + 1
    f = show(fs["id"])
    assert f["writer_metadata"]["components"] and f["components_document"]["components"]
    names = {x["name"] for x in f["files"]}
    assert any(n.startswith("edb/") for n in names) and "logs/E00.chk" in names
    assert not any(n.startswith("edb/") for n in {x["name"] for x in i["files"]}), "an incremental holds logs only"
    b = header(store, "db1")
    assert b["previous_incremental"] and b["previous_differential"] and b["previous_copy"]
    r = verify(store, repo)
    assert r.rc == 0, r.describe()
    # a second full after a few changes stores little: the blocks are already there
    load(store, "db1", 20, seed=4)
    rc, full2, err = backup(store, repo, "full", "db1")
    assert full2["bytes_stored"] < full["bytes_stored"] / 2, (full2["bytes_stored"], full["bytes_stored"])


def test_refusals_come_with_the_writers_reason(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    rc, res, err = backup(store, repo, "incremental", "db1", check=False)
    assert rc == 1 and "-560 MissingFullBackup" in err and "db1" in err, err
    assert len(err.strip().split("\n")) == 1
    assert sets(store, repo) == []
    rc, res, err = backup(store, repo, "full", "nosuch", check=False)
    assert rc == 1 and "nosuch" in err, err


def test_several_databases_in_one_backup(store, repo):
    for d in ("db1", "db2", "db3"):
        store.ombra("db", "new", d)
        load(store, d, 200, seed=len(d))
    rc, res, err = backup(store, repo, "full", "db1", "db2", "db3")
    assert sorted(s["database"]["name"] for s in res["sets"]) == ["db1", "db2", "db3"]
    for d in ("db1", "db2", "db3"):
        assert header(store, d)["previous_full"]


def test_a_damaged_shadow_copy_fails_the_component_and_truncates_nothing(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 800)
    before = gens(store, "db1")
    logs = store.db_show("db1")["logs"]
    p = subprocess.Popen([str(store.cli), "backup", "--repo", str(repo), "--type", "full", "--provider", "copy", "db1"],
                         env=dict(store.env, OMBRA_BACKUP_PAUSE="snapshot"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("paused snapshot")
    shadows = json.loads(store.ombra("vss", "shadows", "--json").out)["shadows"]
    edb = store.db_show("db1")["edb"]
    sh = [s for s in shadows if edb.startswith(s["original"])][0]
    copy = pathlib.Path(sh["exposed"]) / os.path.relpath(edb, sh["original"])
    os.chmod(copy, 0o644)
    with open(copy, "r+b") as f:  # data page 2
        f.seek(3 * 32768 + 500)
        f.write(b"\xde\xad")
    resume_when_stopped(p)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1 and "-1018 ReadVerifyFailure" in err and "page 2" in err, err
    assert sets(store, repo) == []
    assert header(store, "db1")["previous_full"] is None
    assert all(g in gens(store, "db1", logs) for g in before)


@pytest.mark.slow_under_sanitizers
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_at_any_stage_leaves_a_valid_repository_and_the_next_backup_works(store, vssd, stage):
    # Small packs: blocks count as written once their pack is finished and indexed (a pack still
    # being filled when the process dies is lost), so a run killed after copying leaves most of
    # its blocks for the next one.
    repo = store.tmp / "repo"
    store.ombra("repo", "init", repo, "--pack-size", "1M")
    store.ombra("db", "new", "db1")
    load(store, "db1", 1200, size=8000)
    logs = store.db_show("db1")["logs"]
    before = gens(store, "db1")
    p = subprocess.Popen([str(store.cli), "backup", "--repo", str(repo), "--type", "full", "db1"],
                         env=dict(store.env, OMBRA_BACKUP_PAUSE=stage), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.startswith(f"paused {stage}"), line + p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait()
    listed = sets(store, repo)
    if STAGES.index(stage) < STAGES.index("committed"):
        assert listed == [], "no partial set"
        assert header(store, "db1")["previous_full"] is None
        end = time.time() + 10  # the coordinator aborts the session
        while time.time() < end and json.loads(store.ombra("vss", "shadows", "--json").out)["shadows"]:
            time.sleep(0.1)
        assert all(g in gens(store, "db1", logs) for g in before), "nothing truncated"
    r = verify(store, repo)
    assert r.rc == 0, r.describe()
    rc, res, err = backup(store, repo, "full", "db1")
    assert res["sets"] and header(store, "db1")["previous_full"]
    if stage in ("copied", "committed", "completed"):
        assert res["bytes_stored"] < res["bytes_read"] / 3, res  # the blocks written before were reused
    assert verify(store, repo).rc == 0


def test_an_incremental_never_continues_a_set_damaged_since_its_summary_was_kept(store, repo):
    """The newest incremental's set file damaged in place (same size) after the data directory
    kept its summary: the next incremental reads its parent whole, passes the damaged set over
    and is refused (its logs are in no sound set), so nothing is truncated; the listing says
    damaged from then on."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 200)
    backup(store, repo, "full", "db1")
    load(store, "db1", 200, seed=2)
    _, inc, _ = backup(store, repo, "incremental", "db1")
    sid = inc["sets"][0]["id"]
    assert not any("damaged" in s for s in sets(store, repo))  # its summary is kept
    sf = repo / "sets" / f"{sid}.json"
    b = bytearray(sf.read_bytes())
    b[len(b) // 2] ^= 0x01
    sf.write_bytes(bytes(b))
    load(store, "db1", 200, seed=3)
    before = gens(store, "db1")
    rc, _, err = backup(store, repo, "incremental", "db1", check=False)
    assert rc != 0 and "MissingLogFile" in err and f"set {sid[:12]}, newer, is damaged" in err, err
    assert set(before) <= set(gens(store, "db1"))  # nothing truncated (the snapshot rolled one)
    assert [s["id"] for s in sets(store, repo) if "damaged" in s] == [sid]


def test_an_encrypted_repository(store, vssd, tmp_path):
    pw = tmp_path / "pass"
    pw.write_text("correct horse battery staple\n")
    r = store.tmp / "enc"
    store.ombra("repo", "init", r, "--encrypt", "--passphrase-file", pw)
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    env = {"OMBRA_REPO_PASSPHRASE": "correct horse battery staple"}
    rc, res, err = backup(store, r, "full", "db1", env=env)
    assert res["sets"]
    bad = {"OMBRA_REPO_PASSPHRASE": "wrong"}
    rc, res, err = backup(store, r, "full", "db1", env=bad, check=False)
    assert rc == 1 and "passphrase" in err.lower() and len(err.strip().split("\n")) == 1, err


def test_concurrent_backups_of_different_databases_share_one_repository(store, repo):
    for d in ("db1", "db2"):
        store.ombra("db", "new", d)
        load(store, d, 600, seed=len(d) + 3)
    ps = [subprocess.Popen([str(store.cli), "backup", "--repo", str(repo), "--type", "full", "--json", d],
                           env=store.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for d in ("db1", "db2")]
    outs = [p.communicate(timeout=300) for p in ps]
    for p, (out, err) in zip(ps, outs):
        assert p.returncode == 0, err
    assert sorted(s["database"]["name"] if isinstance(s.get("database"), dict) else s.get("database")
                  for s in sets(store, repo)) == ["db1", "db2"]
    assert verify(store, repo).rc == 0
