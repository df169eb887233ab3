"""A restore and a backup attacked as root by someone with write access to the repository and
the data folders (issue 14): links planted at every name a restore writes (the target's
checkpoint and prepared log included), new paths into a live database's folder, a set whose log
range lies, kill -9 of the restore or the store at random moments then a retry, edge values of
the point. Each test states the promise it checks: exactly what was backed up, or one clear
line; nothing outside the target touched."""
import hashlib
import json
import os
import pathlib
import subprocess
import time

import pytest

from conftest import resume_when_stopped

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run as root")


def load(store, db, n, seed=1):
    store.ombra("mail", "load", db, "--mailboxes", "3", "--messages", str(n), "--size", "5000",
                "--seed", str(seed))


def backup(store, repo, t, db="db1", check=True, env=None):
    r = store.ombra("backup", "--repo", repo, "--type", t, "--json", db, check=check, env=env)
    return json.loads(r.out)["sets"][0] if r.rc == 0 else r


def restore(store, repo, db, *args, check=True, timeout=120):
    return store.ombra("restore", db, "--repo", repo, "--json", *args, check=check, timeout=timeout)


def dismount_for_restore(store, db):
    store.ombra("db", "dismount", db)
    store.ombra("db", "set", db, "--allow-restore", "on")


def one_line(r):
    return len(r.err.strip().split("\n")) == 1


def tree_state(d):
    """name -> (inode, size, mtime_ns, sha256) of every entry under d (links not followed)."""
    out = {}
    for p in sorted(pathlib.Path(d).rglob("*")):
        st = p.lstat()
        h = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[str(p)] = (st.st_ino, st.st_size, st.st_mtime_ns, h)
    return out


# ---- A1: new paths whose --logs is the live source database's own log folder ----------------

def test_new_paths_into_the_live_originals_log_folder_leave_it_alone(store, repo, source, tmp_path):
    info = store.db_show("db1")
    logs = pathlib.Path(info["logs"])
    load(store, "db1", 50, seed=9)  # db1 goes on after the backup
    d_live = store.digest("db1")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in logs.iterdir() if p.is_file()}
    r = restore(store, repo, "db1", "--edb", tmp_path / "x" / "new.edb", "--logs", logs, check=False)
    print(r.describe())
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in logs.iterdir() if p.is_file()}
    changed = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    print("changed in db1's live log folder:", changed)
    # the live database goes on taking mail; then the store crashes and recovers it
    load(store, "db1", 30, seed=10)
    d_live = store.digest("db1")
    store.kill9()
    store.start()
    m = store.ombra("db", "mount", "db1", check=False)
    print(m.describe())
    d_after = store.digest("db1") if m.rc == 0 or "mounted" in m.err else None
    print("live digest", d_live, "after crash recovery", d_after)
    assert r.rc != 0 and changed == [], f"restore to new paths wrote into db1's live log folder: {changed}"
    assert d_after == d_live, "the live database lost mail"


# ---- A2: hard links at the names hard recovery writes in place -------------------------------

class Canary:
    def __init__(self, root):
        self.dir = root / "canary"
        self.dir.mkdir()
        self.file = self.dir / "canary.txt"
        self.file.write_bytes(b"do not touch\n" * 100)
        os.utime(self.file, ns=(1_000_000_000, 1_000_000_000))
        self.before = tree_state(self.dir)

    def changed(self):
        return tree_state(self.dir) != self.before


@pytest.mark.parametrize("kind", ["hard", "sym"])
@pytest.mark.parametrize("mount", [False, True])
@pytest.mark.parametrize("name", ["chk", "log", "tmp", "jrs", "pgj"])
def test_a_link_at_a_target_log_name_is_never_written_through(store, repo, source, tmp_path, name,
                                                                  mount, kind):
    c = Canary(tmp_path)
    store.ombra("db", "new", "db2")
    info = store.db_show("db2")
    dismount_for_restore(store, "db2")
    logs, base = pathlib.Path(info["logs"]), info.get("base", "E01")
    at = logs / {"chk": f"{base}.chk", "log": f"{base}.log", "tmp": f"{base}tmp.log",
                 "jrs": f"{base}res00001.jrs", "pgj": f"{base}.pgj"}[name]
    if at.exists():
        at.unlink()
    (os.link if kind == "hard" else os.symlink)(c.file, at)
    r = restore(store, repo, "db1", "--to", "db2", *(["--mount"] if mount else []), check=False)
    print(r.describe())
    assert not c.changed(), f"the restore wrote through a hard link at {at}"
    assert r.rc == 0 or (r.rc == 1 and one_line(r)), r.describe()


# ---- A3: links in a new --logs folder, and at the original's checkpoint ----------------------

@pytest.mark.parametrize("name", ["E00.chk", "E00tmp.log", "E00.log"])
def test_links_in_a_new_logs_folder_are_not_followed(store, repo, source, tmp_path, name):
    c = Canary(tmp_path)
    logs = tmp_path / "n" / "logs"
    logs.mkdir(parents=True)
    os.symlink(c.file, logs / name)
    r = restore(store, repo, "db1", "--edb", tmp_path / "n" / "r.edb", "--logs", logs, check=False)
    print(r.describe())
    assert not c.changed(), f"the restore wrote through a link at {logs / name}"


@pytest.mark.parametrize("name", ["E00.chk", "E00tmp.log"])
def test_links_at_the_originals_checkpoint_are_not_followed(store, repo, source, tmp_path, name):
    c = Canary(tmp_path)
    info = store.db_show("db1")
    dismount_for_restore(store, "db1")
    at = pathlib.Path(info["logs"]) / name
    if at.exists():
        at.unlink()
    os.symlink(c.file, at)
    r = restore(store, repo, "db1", check=False)
    print(r.describe())
    assert not c.changed(), f"the restore wrote through a link at {at}"


# ---- A4: a set whose log range lies wins the default restore ---------------------------------

def craft(repo, set_id, edit, keep_old=True):
    old = repo / "sets" / f"{set_id}.json"
    doc = json.loads(old.read_bytes())
    edit(doc)
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    new_id = hashlib.sha256(data).hexdigest()
    (repo / "sets" / f"{new_id}.json").write_bytes(data)
    if not keep_old:
        old.unlink()
    return new_id


def test_a_set_whose_log_range_lies_does_not_give_an_older_state_silently(store, repo, source, tmp_path):
    # the full's own document, its range stretched: it holds generation 2 only
    lie = craft(repo, source["full"]["id"], lambda d: d.__setitem__("log_range", [d["log_range"][0], 50]))
    v = store.ombra("verify", "--repo", repo, check=False)
    print(v.describe())
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", "--mount", check=False)
    print(r.describe())
    if r.rc == 0:
        got = store.digest("db2")
        assert got == source["digest"], (f"restore exit 0 with an older state (through set "
                                         f"{lie[:12]}, whose range lies; verify rc {v.rc})")


# ---- A5: point in time edges --------------------------------------------------------------------

@pytest.mark.parametrize("until", ["0", "1", "4294967295", "4294967296", "-1", "99999999999999"])
def test_until_gen_edges_are_exact_or_refused(store, repo, source, until):
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", "--until-gen", until, "--mount", check=False)
    print(r.describe())
    assert r.rc in (0, 1, 2) and (r.rc == 0 or one_line(r)), r.describe()
    if r.rc == 0:
        # a point past the end of every chain: exactly the newest state, or a refusal
        assert store.digest("db2") == source["digest"], "exit 0 with another state"


def test_until_gen_past_the_chain_with_no_roll_forward_says_where_it_stopped(store, repo, source):
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", "--until-gen", "40", "--mount", check=False)
    print(r.describe())
    if r.rc == 0:
        rep = json.loads(r.out)
        print("replay", rep.get("replay"))


def test_until_time_at_a_printed_set_time(store, repo, source):
    listing = store.json("backups", "list", "--repo", repo)["sets"]
    print(json.dumps(listing, indent=1)[:3000])
    txt = store.ombra("backups", "list", "--repo", repo).out
    print(txt)


# ---- A6: the same restore twice at once; kill -9 of the restore and of the store -------------

def popen_restore(store, repo, *args, env=None):
    return subprocess.Popen([str(store.cli), "restore", "db1", "--repo", str(repo), *map(str, args)],
                            env=dict(store.env, **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", ["same_target", "to_and_edb"])
def test_two_restores_of_one_target_at_once(store, repo, source, how):
    store.ombra("db", "new", "db2")
    info = store.db_show("db2")
    dismount_for_restore(store, "db2")
    a = ["--to", "db2"]
    b = a if how == "same_target" else ["--edb", info["edb"], "--logs", info["logs"]]
    ps = [popen_restore(store, repo, *a), popen_restore(store, repo, *b)]
    outs = [p.communicate(timeout=120) for p in ps]
    rcs = [p.returncode for p in ps]
    print(rcs, outs)
    for rc, (o, e) in zip(rcs, outs):
        assert rc == 0 or len(e.strip().splitlines()) == 1, e
    if 0 in rcs:
        store.ombra("db", "mount", "db2")
        assert store.digest("db2") == source["digest"]


@pytest.mark.parametrize("seed", range(6))
def test_kill_9_of_the_restore_at_a_random_moment_then_retry(store, repo, source, seed):
    import random
    rnd = random.Random(seed)
    store.ombra("db", "new", "db2")
    untouched = store.digest("db2")
    dismount_for_restore(store, "db2")
    p = popen_restore(store, repo, "--to", "db2")
    time.sleep(rnd.uniform(0.0, 0.12))
    p.kill()
    p.communicate()
    end = time.time() + 30
    while True:
        r = restore(store, repo, "db1", "--to", "db2", "--mount", check=False)
        if r.rc == 0 or time.time() > end or "in progress" not in r.err and "being restored" not in r.err:
            break
        time.sleep(0.3)
    print(r.describe())
    assert r.rc == 0 or (r.rc == 1 and one_line(r)), r.describe()
    if r.rc == 0:
        assert store.digest("db2") == source["digest"]


@pytest.mark.parametrize("seed", range(6))
def test_kill_9_of_the_store_during_a_restore_then_retry(store, repo, source, seed):
    import random
    rnd = random.Random(seed)
    store.ombra("db", "new", "db2")
    untouched = store.digest("db2")
    dismount_for_restore(store, "db2")
    p = popen_restore(store, repo, "--to", "db2")
    time.sleep(rnd.uniform(0.0, 0.12))
    store.kill9()
    o, e = p.communicate(timeout=60)
    print("first:", p.returncode, e)
    store.start()
    assert store.writer_registered()
    st = store.db_show("db2")
    print("db2 after restart:", st)
    # never mountable with a half restore
    m = store.ombra("db", "mount", "db2", check=False)
    print(m.describe())
    # a restore killed before PreRestore leaves db2 as it was (mountable, empty); one killed
    # later never mounts until it is restored whole
    if m.rc == 0 and p.returncode != 0:
        d = store.digest("db2")
        assert d in (source["digest"], untouched), "a half-restored db2 mounted with another state"
        store.ombra("db", "dismount", "db2")
    if m.rc == 0:
        store.ombra("db", "dismount", "db2", check=False)
    r = restore(store, repo, "db1", "--to", "db2", "--mount", check=False)
    print(r.describe())
    assert r.rc == 0, r.describe()
    assert store.digest("db2") == source["digest"]


# ---- A7: restore --to a database whose files are links ----------------------------------------

@pytest.mark.parametrize("what", ["edb_link", "logs_link", "edb_hardlink"])
def test_restore_to_a_database_whose_files_are_links(store, repo, source, tmp_path, what):
    c = Canary(tmp_path)
    store.ombra("db", "new", "db2")
    info = store.db_show("db2")
    dismount_for_restore(store, "db2")
    edb, logs = pathlib.Path(info["edb"]), pathlib.Path(info["logs"])
    if what == "edb_link":
        edb.unlink()
        os.symlink(c.file, edb)
    elif what == "edb_hardlink":
        edb.unlink()
        os.link(c.file, edb)
    else:
        import shutil
        shutil.rmtree(logs)
        os.symlink(c.dir, logs)
    r = restore(store, repo, "db1", "--to", "db2", "--mount", check=False)
    print(r.describe())
    assert not c.changed(), "the restore wrote through a link at db2's files"
    assert r.rc == 0 or (r.rc == 1 and one_line(r)), r.describe()


# ---- B1: expire while a backup is paused at copying ------------------------------------------

@pytest.mark.parametrize("lock", ["kept", "replaced"])
def test_expire_while_a_backup_is_paused(store, repo, tmp_path, lock):
    store.ombra("db", "new", "db1")
    load(store, "db1", 200)
    backup(store, repo, "full")
    load(store, "db1", 200, seed=2)
    backup(store, repo, "full")
    load(store, "db1", 400, seed=3)
    p = subprocess.Popen([str(store.cli), "backup", "--repo", str(repo), "--type", "full", "--json", "db1"],
                         env=dict(store.env, OMBRA_BACKUP_PAUSE="copying"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.startswith("paused"), line
    d = store.digest("db1")
    if lock == "replaced":  # a careless administrator's rsync/cleanup: the lock file is new
        lf = repo / "locks" / "repo.lock"
        lf.unlink()
        lf.write_bytes(b"")
    e = store.ombra("expire", "--repo", repo, "--keep-full", "1", check=False)
    print(e.describe())
    resume_when_stopped(p)
    o, err = p.communicate(timeout=120)
    print("backup:", p.returncode, err)
    v = store.ombra("verify", "--repo", repo, check=False)
    print(v.describe())
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", "--mount", check=False)
    print(r.describe())
    if p.returncode == 0:
        assert r.rc == 0 and store.digest("db2") == d, "the backup said it succeeded, its restore did not give its state"
    assert r.rc == 0 or one_line(r)


# ---- dbutil recover of a folder whose _restoredLogs is another database's ----------------------

def test_dbutil_recover_never_takes_a_neighbours_restore_by_a_planted_link_or_a_copied_env(store, repo, source):
    # db3 holds a restore laid down without replay; db2 is a neighbour. A link planted at
    # db2's _restoredLogs pointing at db3's, or a copy of db3's .env put there, must not make
    # `dbutil recover <db2's logs>` hard-recover db3: one clear line, db3's files untouched, and
    # db3's own recovery still gives the backup's digest.
    for db in ("db2", "db3"):
        store.ombra("db", "new", db)
        dismount_for_restore(store, db)
    restore(store, repo, "db1", "--to", "db3", "--no-replay")
    logs3 = pathlib.Path(store.db_show("db3")["logs"])
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    dir3 = pathlib.Path(store.db_show("db3")["edb"]).parent
    before = tree_state(dir3)
    os.symlink(logs3 / "_restoredLogs", logs2 / "_restoredLogs")
    r = store.ombra("dbutil", "recover", logs2, check=False)
    assert r.rc != 0 and one_line(r) and "symbolic link" in r.err, r.err
    assert tree_state(dir3) == before
    os.unlink(logs2 / "_restoredLogs")
    (logs2 / "_restoredLogs").mkdir(mode=0o750)
    for f in (logs3 / "_restoredLogs").iterdir():
        if f.name.endswith("restore.env"):
            (logs2 / "_restoredLogs" / f.name).write_bytes(f.read_bytes())
    r = store.ombra("dbutil", "recover", logs2, check=False)
    assert r.rc != 0 and one_line(r) and "not this folder's restore" in r.err, r.err
    assert tree_state(dir3) == before
    # a .env of 2 MiB, and one that is a fifo (never opened: it would block): one line each
    env2 = next((logs2 / "_restoredLogs").glob("*restore.env"))
    env2.write_bytes(b" " * (2 << 20))
    r = store.ombra("dbutil", "recover", logs2, check=False)
    assert r.rc != 0 and one_line(r) and "more than the" in r.err, r.err
    env2.unlink()
    os.mkfifo(env2)
    r = store.ombra("dbutil", "recover", logs2, check=False, timeout=20)
    assert r.rc != 0 and one_line(r) and "not a regular file" in r.err, r.err
    assert tree_state(dir3) == before
    r = store.ombra("dbutil", "recover", logs3)
    store.ombra("db", "mount", "db3")
    assert store.digest("db3") == source["digest"]


@pytest.mark.parametrize("stage", ["prepared", "edb"])
def test_dbutil_recover_refuses_while_a_restore_of_the_folder_is_in_progress(store, repo, source, stage):
    # The store holds the target's .env locked from PreRestore until the restore is done: a
    # dbutil recover of the folder meanwhile says so in one line and recovers nothing (it used to
    # run, and the restore then failed with a log-set mismatch); the restore then ends with the
    # backup's digest.
    from conftest import Paused
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    p = Paused(store, ["restore", "db1", "--repo", repo, "--to", "db2"], "OMBRA_RESTORE_PAUSE", stage)
    assert p.reached, p.first
    r = store.ombra("dbutil", "recover", logs2, check=False)
    assert r.rc != 0 and one_line(r) and "in progress" in r.err and not r.out, r.describe()
    res = p.resume()
    assert res.rc == 0, res.err
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == source["digest"]


def test_a_restore_refuses_while_dbutil_recover_of_its_target_runs(store, repo, source):
    # The other way round: `dbutil recover` holds the .env locked for as long as it recovers, so
    # a restore of that target meanwhile says so in one line and touches nothing (it used to take
    # the leftovers as its own and remove the logs being replayed); the recovery then ends with
    # the backup's digest.
    from conftest import Paused
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--to", "db2", "--no-replay")
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    dir2 = pathlib.Path(store.db_show("db2")["edb"]).parent
    before = tree_state(dir2)
    p = Paused(store, ["dbutil", "recover", logs2], "OMBRA_DBUTIL_PAUSE", "locked")
    assert p.reached, p.first
    r = store.ombra("restore", "db1", "--repo", repo, "--to", "db2", check=False)
    assert r.rc != 0 and one_line(r) and "dbutil recover" in r.err and "restore.env" in r.err, r.describe()
    assert tree_state(dir2) == before
    res = p.resume()
    assert res.rc == 0, res.err
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == source["digest"]
    # the lock went with the recovery: a restore of the target now runs
    store.ombra("db", "dismount", "db2")
    restore(store, repo, "db1", "--to", "db2")
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == source["digest"]


def test_a_restore_killed_before_its_last_generation_never_lets_dbutil_finish_the_old_edb(store, repo, source):
    # dbutil recover takes a restore whose last generation is in place as laid whole. The
    # requester used to lay the last generation before the .edb took its name: a restore killed
    # in between left the .edb the target had before (an older restore of the same database, so
    # its chain matched), and dbutil recover "finished" it and exited 0 with the older state
    # (attack review, 2026-12-07). Now the last generation waits for the .edb.
    from conftest import Paused
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--to", "db2", "--set", source["full"]["id"])
    store.ombra("db", "mount", "db2")
    older = store.digest("db2")
    assert older != source["digest"]
    store.ombra("db", "dismount", "db2")
    edb2 = pathlib.Path(store.db_show("db2")["edb"])
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    ino = edb2.stat().st_ino
    p = Paused(store, ["restore", "db1", "--repo", repo, "--to", "db2"], "OMBRA_RESTORE_PAUSE", "last_log")
    assert p.reached, p.first
    assert edb2.stat().st_ino != ino, "the last generation came before the .edb took its name"
    p.kill9()
    r = store.ombra("dbutil", "recover", logs2, check=False)
    if r.rc == 0:
        store.ombra("db", "mount", "db2")
        assert store.digest("db2") == source["digest"], "dbutil recover exited 0 with another state"
        store.ombra("db", "dismount", "db2")
    else:
        assert one_line(r), r.describe()
    restore(store, repo, "db1", "--to", "db2")
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == source["digest"]
