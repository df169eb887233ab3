"""The backup session's rules of spec §5, as a user meets them: a database named twice in one
backup is selected once (and the store keeps answering), a selection of a database's Logs
component alone is refused, and while a database is in a backup session (PrepareBackup to
BackupComplete or abort) dismounting it, switching its circular logging and allowing restores
are refused with one line naming the session, and allowed again once the backup completed, was
aborted, or its requester died."""
import json
import re
import subprocess
import time

import pytest

from conftest import Paused, one_line_refusal

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# What a backup session must not let an administrator change under it.
ACTIONS = (("db", "dismount", "db1"),
           ("db", "set", "db1", "--circular-logging", "on"),
           ("db", "set", "db1", "--allow-restore", "on"))


def writer_instance(store):
    ws = json.loads(store.ombra("vss", "writers", "--json").out)["writers"]
    return [w for w in ws if w["name"] == "Ombra Store Writer" and w["connected"]][0]["instance_id"]


def component(store, db, logs=False):
    return f"{writer_instance(store)}:Ombra Store\\srv1\\{store.db_show(db)['id']}" + ("\\Logs" if logs else "")


def requester(store, build_dir, comps, pause_at=None, type_="full"):
    argv = [str(build_dir / "tests/tools/vss_requester"), "--type", type_, "--provider", "held"]
    for c in comps:
        argv += ["--component", c]
    if pause_at:
        argv += ["--pause-at", pause_at]
    return subprocess.Popen(argv, env=store.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_requester(store, build_dir, comps, seconds=90):
    p = requester(store, build_dir, comps)
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"the requester did not end within {seconds} s (a wedged writer?)")
    res = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    return p.returncode, res, err


def answers(store, seconds=10):
    """The store still serves admin and mail requests promptly (a wedged writer blocks both)."""
    try:
        dbs = json.loads(store.ombra("db", "list", "--json", timeout=seconds).out)["databases"]
        names = [d["name"] for d in (dbs["databases"] if isinstance(dbs, dict) else dbs)]
        r = store.ombra("mail", "deliver", "db1", "after", input="Subject: after\n\nstill here",
                        timeout=seconds)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the store did not answer `{' '.join(map(str, e.cmd[1:]))}` within {seconds} s")
    assert "db1" in names and r.rc == 0


def setting(store, db):
    d = store.db_show(db)
    return d["mounted"], d["circular_logging"], d["allow_restore"]


def refused_naming(r, session=None):
    """A refusal of an administrative action during a backup: one line, -505, the session."""
    assert one_line_refusal(r), r.describe()
    assert "-505" in r.err and "HINT" in r.err, r.describe()
    m = re.search(UUID, r.err)
    assert m, f"the refusal names no session:\n{r.describe()}"
    if session:
        assert session in r.err, r.describe()


# ---- a database named twice ----

def test_a_database_named_twice_is_backed_up_once_and_the_store_keeps_answering(store, repo):
    store.ombra("db", "new", "db1")
    store.ombra("db", "new", "db2")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "100", "--size", "3000")
    try:
        r = store.ombra("backup", "--repo", repo, "--type", "full", "--json", "db1", "db1",
                        check=False, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("`ombra backup db1 db1` did not end within 90 s")
    assert r.rc == 0, r.describe() + store.stderr()
    res = json.loads(r.out)
    assert [s["database"]["name"] for s in res["sets"]] == ["db1"], res
    answers(store)
    # in a longer list too, and the next backup of each goes on normally
    r = store.ombra("backup", "--repo", repo, "--type", "full", "--json", "db2", "db1", "db2",
                    check=False, timeout=90)
    assert r.rc == 0, r.describe()
    assert sorted(s["database"]["name"] for s in json.loads(r.out)["sets"]) == ["db1", "db2"]
    answers(store)
    h = json.loads(store.ombra("dbutil", "header", store.db_show("db1")["edb"], "--json").out)
    assert h["backups"]["previous_full"], "the backup is recorded"


def test_a_requester_that_names_a_component_twice_or_with_its_logs_gets_it_once(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "100", "--size", "3000")
    db, logs = component(store, "db1"), component(store, "db1", logs=True)
    name = db.split(":", 1)[1]
    for comps in ((db, db), (db, logs), (logs, db)):
        rc, res, err = run_requester(store, build_dir, comps)
        assert rc == 0, (err, comps)
        cs = res["components_document"]["components"]
        assert [c["component"] for c in cs] == [name], (comps, cs)
        assert cs[0]["backup_metadata"]["db_name"] == "db1", cs
        answers(store)


# ---- a Logs component alone ----

def test_a_selection_of_the_logs_alone_is_refused(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "100", "--size", "3000")
    before = json.loads(store.ombra("dbutil", "header", store.db_show("db1")["edb"], "--json").out)["backups"]
    rc, res, err = run_requester(store, build_dir, [component(store, "db1", logs=True)])
    lines = [l for l in err.strip().split("\n") if l.strip()]
    assert rc == 1 and len(lines) == 1, err
    assert "Logs" in err and "db1" in err and "-1003" in err, err
    assert res["shadows"] == [] and res["components_document"] is None, res
    assert json.loads(store.ombra("vss", "shadows", "--json").out)["shadows"] == [], "no shadow copy is left"
    after = json.loads(store.ombra("dbutil", "header", store.db_show("db1")["edb"], "--json").out)["backups"]
    assert after == before, "nothing is recorded"
    answers(store)


# ---- administrative actions during a backup session ----

def test_admin_actions_are_refused_during_a_backup_session_and_allowed_after_backup_complete(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    store.ombra("db", "new", "db2")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "100", "--size", "3000")
    p = requester(store, build_dir, [component(store, "db1")], pause_at="complete")
    line = p.stdout.readline()
    assert line.startswith("paused complete"), line + p.stderr.read()
    session = json.loads(line[len("paused complete"):])["components_document"]["session"]
    try:
        for a in ACTIONS:
            refused_naming(store.ombra(*a, check=False), session)
        assert setting(store, "db1") == (True, False, False), "nothing changed"
        # another database is not in the session
        store.ombra("db", "set", "db2", "--allow-restore", "on")
        store.ombra("db", "dismount", "db2")
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    for a in ACTIONS:
        store.ombra(*a)
    assert setting(store, "db1") == (False, True, True)


def test_admin_actions_are_refused_from_prepare_backup_and_allowed_again_after_backup_complete(store, vssd, build_dir):
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "100", "--size", "3000")
    # right after PrepareBackup, before any snapshot
    p = requester(store, build_dir, [component(store, "db1")], pause_at="snapshot")
    line = p.stdout.readline()
    assert line.startswith("paused snapshot"), line + p.stderr.read()
    try:
        for a in ACTIONS:
            refused_naming(store.ombra(*a, check=False))
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    # BackupComplete done, the session not yet released: the database is no longer in a backup
    p = requester(store, build_dir, [component(store, "db1")], pause_at="release")
    line = p.stdout.readline()
    assert line.startswith("paused release"), line + p.stderr.read()
    try:
        for a in ACTIONS:
            r = store.ombra(*a, check=False)
            assert r.rc == 0, r.describe()
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert setting(store, "db1") == (False, True, True)


def test_admin_actions_are_allowed_again_once_a_killed_backup_is_aborted(store, repo):
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "100", "--size", "3000")
    b = Paused(store, ["backup", "--repo", repo, "--type", "full", "db1"], "OMBRA_BACKUP_PAUSE",
               "prepared")
    assert b.reached, b.first
    try:
        for a in ACTIONS:
            refused_naming(store.ombra(*a, check=False))
        assert setting(store, "db1") == (True, False, False)
    finally:
        b.kill9()
    # the coordinator sees the requester gone and aborts: the writer lets the database go
    end = time.monotonic() + 15
    while True:
        r = store.ombra(*ACTIONS[1], check=False)
        if r.rc == 0 or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert r.rc == 0, r.describe()
    for a in (ACTIONS[2], ACTIONS[0]):
        store.ombra(*a)
    assert setting(store, "db1") == (False, True, True)
    # and a new backup of it runs (mounted again)
    store.ombra("db", "mount", "db1")
    store.ombra("backup", "--repo", repo, "--type", "full", "db1")
