"""A restore writes only what it was asked for (spec §6, issue 14): as root, symbolic links
planted at every name a restore creates or removes are never followed (the restore refuses with
one line or succeeds, and what the links point to is untouched); a restore to new paths never
touches a neighbour; names and sizes from a crafted set document are refused before anything is
laid down; a set entry that can never be whole is one error, not a hang; failed restores do not
use up the store's restore slots; a restore to new paths killed half way is taken up again by
the next one, and a file at --edb that no restore made is refused."""
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the attacks are on a restore run as root (links a root restore "
                              "would follow); run as root")


def load(store, db, n, seed=1):
    store.ombra("mail", "load", db, "--mailboxes", "3", "--messages", str(n), "--size", "5000",
                "--seed", str(seed))


def backup(store, repo, t, db="db1"):
    return json.loads(store.ombra("backup", "--repo", repo, "--type", t, "--json", db).out)["sets"][0]


def restore(store, repo, db, *args, check=True, timeout=120):
    return store.ombra("restore", db, "--repo", repo, "--json", *args, check=check, timeout=timeout)


def dismount_for_restore(store, db):
    store.ombra("db", "dismount", db)
    store.ombra("db", "set", db, "--allow-restore", "on")


def one_line(r):
    return len(r.err.strip().split("\n")) == 1


def refused_or_succeeded(r):
    assert r.rc == 0 or (r.rc == 1 and one_line(r)), r.describe()
    return r.rc == 0


# ---- canaries: what a planted link points to ------------------------------------------------

class Canaries:
    """A folder of files that no restore may touch: every link planted points into it."""

    def __init__(self, root):
        self.dir = root / "canary"
        self.dir.mkdir()
        self.file = self.dir / "canary.txt"
        self.file.write_text("do not touch\n")
        self.sub = self.dir / "folder"
        self.sub.mkdir()
        (self.sub / "inside.txt").write_text("inside\n")
        os.utime(self.file, ns=(1_000_000_000, 1_000_000_000))
        self.before = self.state()

    def state(self):
        out = {}
        for p in sorted(self.dir.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
        st = self.dir.lstat()
        out[str(self.dir)] = (st.st_mode, st.st_mtime_ns, None)
        return out

    def untouched(self):
        assert self.state() == self.before, "a restore wrote or removed through a planted link"


def plant(at, target):
    at = pathlib.Path(at)
    at.parent.mkdir(parents=True, exist_ok=True)
    if at.is_symlink() or at.exists():
        at.unlink()
    os.symlink(target, at)


def generations(source):
    first = source["full"]["log_range"][0]
    last = source["inc"]["log_range"][1]
    return [f"E00{g:08X}.log" for g in range(first, last + 1)]


# ---- links at every name ----------------------------------------------------------------------

TO_ANOTHER = ["restoredLogs_dir", "restoredLogs_file", "part", "env", "env_tmp", "progress",
              "generations"]


@pytest.mark.parametrize("spot", TO_ANOTHER)
def test_a_link_at_any_name_of_a_restore_to_another_database_is_never_followed(
        store, repo, source, tmp_path, spot):
    c = Canaries(tmp_path)
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    info = store.db_show("db2")
    edb, logs = pathlib.Path(info["edb"]), pathlib.Path(info["logs"])
    pending = logs / "_restoredLogs"
    if spot == "restoredLogs_dir":
        plant(pending, c.dir)
    elif spot == "restoredLogs_file":
        plant(pending, c.file)
    elif spot == "part":  # the names the restore used to lay its files under
        plant(edb.parent / f".{edb.name}.part", c.file)
        plant(edb.parent / ".db1.edb.part", c.file)
        for g in generations(source):
            plant(logs / f".{g}.part", c.file)
    elif spot == "env":
        plant(pending / "E00restore.env", c.file)
    elif spot == "env_tmp":
        pending.mkdir(mode=0o750)
        plant(pending / "E00restore.env.tmp", c.file)
    elif spot == "progress":
        plant(pending / "E00restore.laid", c.file)
    elif spot == "generations":
        for g in generations(source):
            plant(pending / g, c.file)
        plant(pending / "sub", c.sub)
    r = restore(store, repo, "db1", "--to", "db2", "--mount", check=False)
    if refused_or_succeeded(r):
        assert store.digest("db2") == source["digest"]
    else:
        assert "_restoredLogs" in r.err, r.describe()
    c.untouched()


def test_a_leftover_of_this_target_is_removed_name_by_name_never_through_its_links(
        store, repo, source, tmp_path):
    """An unfinished restore of db2 (--no-replay) left _restoredLogs with its .env: the next
    restore takes it, removing the leftovers' names; links among them are removed, not
    followed."""
    c = Canaries(tmp_path)
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--to", "db2", "--no-replay")
    pending = pathlib.Path(store.db_show("db2")["logs"]) / "_restoredLogs"
    assert (pending / "E00restore.env").is_file()
    for g in generations(source):
        plant(pending / g, c.file)
    plant(pending / "E00restore.laid", c.file)
    plant(pending / f".{generations(source)[0]}.0123456789abcdef.tmp", c.dir)
    restore(store, repo, "db1", "--to", "db2", "--mount")
    assert store.digest("db2") == source["digest"]
    assert not pending.exists()
    c.untouched()
    # one name no restore writes, and the folder is not taken
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--to", "db2", "--no-replay")
    plant(pending / "stranger", c.file)
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and one_line(r) and "stranger" in r.err, r.describe()
    c.untouched()


def test_retired_folders_left_by_a_crash_go_at_the_next_restore_never_through_a_link(
        store, repo, source, tmp_path):
    """A crash after PostRestore retired _restoredLogs leaves _retiredLogs.<16 hex> in the log
    folder: the next restore into that folder removes it (only names a restore writes). A link
    named like one, a folder of another user's, and one holding a name no restore writes stay,
    each with a warning; a link inside one is removed as a name; what the links point to is
    untouched."""
    c = Canaries(tmp_path)
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    logs = pathlib.Path(store.db_show("db2")["logs"])
    left = logs / "_retiredLogs.0123456789abcdef"  # as a crash leaves it
    left.mkdir(mode=0o750)
    for g in generations(source)[:3]:
        (left / g).write_bytes(b"\0" * 4096)
    (left / "E00restore.env").write_text("{}")
    (left / "E00restore.laid").write_bytes(b"")
    (left / ".E0000000001.log.0123456789abcdef.tmp").write_bytes(b"x")
    linked = logs / "_retiredLogs.00000000000000aa"  # a link under a retired name
    plant(linked, c.dir)
    with_link = logs / "_retiredLogs.00000000000000bb"  # a link inside one, among its names
    with_link.mkdir(mode=0o750)
    plant(with_link / generations(source)[0], c.file)
    plant(with_link / "E00restore.env", c.sub)
    stray = logs / "_retiredLogs.00000000000000cc"  # a name no restore writes
    stray.mkdir(mode=0o750)
    (stray / generations(source)[0]).write_bytes(b"x")
    (stray / "stranger").write_text("mine\n")
    other = logs / "_retiredLogs.00000000000000dd"  # another user's folder
    other.mkdir(mode=0o750)
    (other / generations(source)[0]).write_bytes(b"theirs")
    os.chown(other / generations(source)[0], 65534, 65534)
    os.chown(other, 65534, 65534)
    restore(store, repo, "db1", "--to", "db2", "--mount")
    assert store.digest("db2") == source["digest"]
    assert not (logs / "_restoredLogs").exists()
    assert not left.exists(), "the crash's retired folder is removed"
    assert not with_link.exists(), "links inside are removed as names"
    assert linked.is_symlink(), "a link under a retired name is left"
    assert (stray / "stranger").read_text() == "mine\n"
    assert sorted(p.name for p in stray.iterdir()) == ["stranger"]
    err = store.stderr()
    assert "stranger" in err and "_retiredLogs.00000000000000aa" in err, err
    assert (other / generations(source)[0]).read_bytes() == b"theirs"
    assert "_retiredLogs.00000000000000dd" in err, err
    c.untouched()
    # this restore's own retired folder goes too; the two left stay
    end = time.time() + 20
    while len(list(logs.glob("_retiredLogs.*"))) > 3 and time.time() < end:
        time.sleep(0.1)
    assert sorted(p.name for p in logs.glob("_retiredLogs.*")) == [linked.name, stray.name,
                                                                   other.name]
    c.untouched()


def test_links_in_the_originals_log_folder_are_replaced_never_followed(store, repo, source,
                                                                       tmp_path):
    c = Canaries(tmp_path)
    info = store.db_show("db1")
    dismount_for_restore(store, "db1")
    logs = pathlib.Path(info["logs"])
    edb = pathlib.Path(info["edb"])
    os.remove(edb)
    plant(edb, c.file)  # its own .edb name: replaced (the link), never written through
    for g in generations(source):
        plant(logs / f".{g}.part", c.file)
    for g in generations(source)[:2]:  # generations the chain restores: replaced as names
        plant(logs / g, c.file)
    r = restore(store, repo, "db1", "--mount", check=False)
    if refused_or_succeeded(r):
        assert store.digest("db1") == source["digest"]
    c.untouched()


@pytest.mark.parametrize("spot", ["edb", "logs_dir", "restoredLogs_dir"])
def test_a_link_at_the_new_paths_is_refused(store, repo, source, tmp_path, spot):
    c = Canaries(tmp_path)
    x = tmp_path / "x"
    x.mkdir()
    edb, logs = x / "restored.edb", x / "rlogs"
    if spot == "edb":
        plant(edb, c.file)
    elif spot == "logs_dir":
        plant(logs, c.dir)
    else:
        plant(logs / "_restoredLogs", c.dir)
    r = restore(store, repo, "db1", "--edb", edb, "--logs", logs, check=False)
    assert r.rc == 1 and one_line(r), r.describe()
    c.untouched()


# ---- new paths next to another database -------------------------------------------------------

def test_a_restore_to_new_paths_leaves_the_database_next_to_them_alone(store, repo, tmp_path):
    x = tmp_path / "x"
    store.ombra("db", "new", "A", "--edb", x / "A.edb", "--logs", x / "alogs")
    load(store, "A", 150)
    backup(store, repo, "full", db="A")
    d = store.digest("A")
    store.ombra("db", "dismount", "A")
    before = hashlib.sha256((x / "A.edb").read_bytes()).hexdigest()
    r = restore(store, repo, "A", "--edb", x / "restored.edb", "--logs", x / "rlogs")
    assert hashlib.sha256((x / "A.edb").read_bytes()).hexdigest() == before
    h = json.loads(store.ombra("dbutil", "header", x / "restored.edb", "--json").out)
    assert h["state"] == "Clean Shutdown", h
    store.ombra("db", "mount", "A")
    assert store.digest("A") == d
    # once restored there, the file at --edb is not the restore's to replace
    r = restore(store, repo, "A", "--edb", x / "restored.edb", "--logs", x / "rlogs", check=False)
    assert r.rc == 1 and one_line(r) and ("restored.edb" in r.err or "rlogs" in r.err) and \
        "HINT" in r.err, r.describe()


def test_a_restore_to_new_paths_killed_half_way_is_taken_up_by_the_next(store, repo, source,
                                                                         tmp_path):
    edb, logs = tmp_path / "n" / "x.edb", tmp_path / "n" / "logs"
    p = subprocess.Popen([str(store.cli), "restore", "db1", "--repo", str(repo), "--edb", str(edb),
                          "--logs", str(logs)], env=dict(store.env, OMBRA_RESTORE_PAUSE="edb"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.startswith("paused edb"), line + p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert edb.exists(), "the .edb was in place when it was killed"
    end = time.time() + 30
    while True:
        r = restore(store, repo, "db1", "--edb", edb, "--logs", logs, check=False)
        if r.rc == 0 or "-505" not in r.err or time.time() > end:
            break
        time.sleep(0.2)
    assert r.rc == 0, r.describe()
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] == "Clean Shutdown"
    assert not (logs / "_restoredLogs").exists()
    assert not list(edb.parent.glob(".*.tmp")), "no temporary name left"


def test_dbutil_recover_refuses_the_logs_of_a_restore_stopped_before_its_last_generation(
        store, repo, source, tmp_path):
    """A restore stopped while it laid the logs down (killed, its machine down) leaves the first
    generations only; dbutil recover, which the -506 HINT names, replayed them and said success:
    an older state than the set's. The .env now says which generations the restore lays down,
    and dbutil recover refuses until the last is there; the same restore again takes it up."""
    edb, logs = tmp_path / "n" / "x.edb", tmp_path / "n" / "logs"
    restore(store, repo, "db1", "--edb", edb, "--logs", logs, "--no-replay")
    pending = logs / "_restoredLogs"
    gens = sorted(pending.glob("*.log"))
    assert len(gens) >= 2, gens
    last = gens[-1]
    last.rename(tmp_path / "held-back.log")  # as a restore killed before laying it leaves it
    r = store.ombra("dbutil", "recover", logs, check=False)
    assert r.rc == 1 and one_line(r), r.describe()
    assert "stopped before its last generation" in r.err and last.name in r.err, r.describe()
    assert "HINT" in r.err
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] != "Clean Shutdown", h  # nothing replayed
    assert sorted(pending.glob("*.log")) == gens[:-1], "the laid generations are kept"
    # the same restore again finishes it
    r = restore(store, repo, "db1", "--edb", edb, "--logs", logs, check=False)
    assert r.rc == 0, r.describe()
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] == "Clean Shutdown", h
    assert not pending.exists()


@pytest.mark.parametrize("loss", ["empty", "zeroed", "tail-zeroed"])
def test_dbutil_recover_refuses_a_middle_generation_whose_bytes_were_lost(store, repo, source,
                                                                         tmp_path, loss):
    """A restore that replays lays its generations down unsynced, all but the last (only the
    .env's boot id keeps dbutil recover from them after a restart). Were that guard gone (the
    field edited away) and a middle generation's bytes lost to a crash, as write-back that never
    happened leaves them (an empty file, zeros, zeros after its first page), replay must still
    find it: one line, nothing replayed to Clean Shutdown, never an older state and exit 0."""
    edb, logs = tmp_path / "n" / "x.edb", tmp_path / "n" / "logs"
    restore(store, repo, "db1", "--edb", edb, "--logs", logs, "--no-replay")
    pending = logs / "_restoredLogs"
    gens = sorted(pending.glob("*.log"))
    assert len(gens) >= 3, gens
    mid = gens[len(gens) // 2]
    size = mid.stat().st_size
    with open(mid, "r+b") as f:
        if loss == "empty":
            f.truncate(0)
        else:
            keep = 0 if loss == "zeroed" else 4096
            f.seek(keep)
            f.write(bytes(size - keep))
    r = store.ombra("dbutil", "recover", logs, check=False)
    assert r.rc != 0 and one_line(r), r.describe()
    assert mid.name in r.err, r.err  # the message names the generation
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] != "Clean Shutdown", h
    # the same restore again finishes it
    r = restore(store, repo, "db1", "--edb", edb, "--logs", logs, check=False)
    assert r.rc == 0, r.describe()
    assert json.loads(store.ombra("dbutil", "header", edb, "--json").out)["state"] == "Clean Shutdown"


# ---- crafted set documents ----------------------------------------------------------------

def set_path(repo, set_id):
    return repo / "sets" / f"{set_id}.json"


def craft(repo, set_id, edit):
    """Rewrites a plain repository's set document with edit(doc) under the name its new bytes
    give it (a set's name is the SHA-256 of its bytes); returns the new id."""
    old = set_path(repo, set_id)
    doc = json.loads(old.read_bytes())
    edit(doc)
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    new_id = hashlib.sha256(data).hexdigest()
    set_path(repo, new_id).write_bytes(data)
    old.unlink()
    return new_id


def log_entries(doc):
    return [f for f in doc["files"] if f["name"].startswith("logs/") and f["name"].endswith(".log")]


@pytest.mark.parametrize("name", ["../../etc/x", "/abs/path", "edb/../../x.edb", "logs/../../E00x.log",
                                  "edb/.hidden.edb"])
def test_a_crafted_file_name_is_refused_before_anything_is_laid_down(store, repo, tmp_path, name):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    full = backup(store, repo, "full")
    target = tmp_path / "t"

    def edit(doc):
        e = log_entries(doc)[0] if not name.startswith("edb/") else \
            [f for f in doc["files"] if f["name"].startswith("edb/")][0]
        e["name"] = name
    sid = craft(repo, full["id"], edit)
    r = restore(store, repo, "db1", "--set", sid[:12], "--edb", target / "r.edb", "--logs",
                target / "logs", check=False)
    assert r.rc == 1 and one_line(r) and sid[:12] in r.err and name in r.err, r.describe()
    assert not target.exists(), "nothing laid down"
    for p in ("/abs/path", "/etc/x", str(tmp_path / "x.edb")):
        assert not os.path.exists(p)


def test_backup_metadata_naming_another_databases_file_is_harmless(store, repo, tmp_path):
    x = tmp_path / "x"
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    d1 = store.digest("db1")
    full = backup(store, repo, "full")
    store.ombra("db", "new", "victim", "--edb", x / "victim.edb", "--logs", x / "vlogs")
    load(store, "victim", 50, seed=5)
    dv = store.digest("victim")
    store.ombra("db", "dismount", "victim")
    before = hashlib.sha256((x / "victim.edb").read_bytes()).hexdigest()

    def edit(doc):
        for c in doc["components_document"]["components"]:
            c["backup_metadata"]["edb"] = str(x / "victim.edb")
    sid = craft(repo, full["id"], edit)
    for dest in (["--edb", x / "restored.edb", "--logs", x / "rlogs"], ):
        r = restore(store, repo, "db1", "--set", sid[:12], *dest, check=False)
        refused_or_succeeded(r)
    store.ombra("db", "new", "db2", "--edb", x / "db2.edb", "--logs", x / "db2logs")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--set", sid[:12], "--to", "db2", "--mount", check=False)
    if refused_or_succeeded(r):
        assert store.digest("db2") == d1
    assert hashlib.sha256((x / "victim.edb").read_bytes()).hexdigest() == before
    store.ombra("db", "mount", "victim")
    assert store.digest("victim") == dv


@pytest.mark.parametrize("how", ["empty", "blocks_short", "blocks_long"])
def test_a_file_entry_whose_size_and_blocks_disagree_is_one_error_not_a_hang(store, repo,
                                                                            tmp_path, how):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    full = backup(store, repo, "full")

    def edit(doc):
        e = log_entries(doc)[-1]
        if how == "empty":
            e["size"], e["blocks"] = 0, ""
        elif how == "blocks_short":
            e["blocks"] = e["blocks"][:64 * (len(e["blocks"]) // 64 - 1)]
        else:
            e["blocks"] = e["blocks"] + e["blocks"][:64]
    sid = craft(repo, full["id"], edit)
    t0 = time.monotonic()
    r = restore(store, repo, "db1", "--set", sid[:12], "--edb", tmp_path / "t" / "r.edb", "--logs",
                tmp_path / "t" / "logs", check=False, timeout=30)
    assert time.monotonic() - t0 < 30
    assert r.rc == 1 and one_line(r) and sid[:12] in r.err and "logs/E00" in r.err, r.describe()
    assert not (tmp_path / "t").exists(), "refused before anything is laid down"


# ---- the store's restore slots ------------------------------------------------------------

def test_failed_restores_release_their_slot(store, repo, source):
    """Nine restores that fail after PreRestore (a damaged block), then a good one: the store
    once kept every failed restore's slot and refused the ninth with -1011."""
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    packs = sorted((p for p in (repo / "packs").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    pack = packs[-1]
    good = pack.read_bytes()
    bad = bytearray(good)
    for i in range(len(bad) // 3, len(bad) // 3 + 64):
        bad[i] ^= 0xFF
    pack.write_bytes(bytes(bad))
    for i in range(9):
        r = restore(store, repo, "db1", "--to", "db2", check=False)
        assert r.rc == 1 and one_line(r) and "-1011" not in r.err, f"restore {i + 1}:\n" + r.describe()
    pack.write_bytes(good)
    restore(store, repo, "db1", "--to", "db2", "--mount")
    assert store.digest("db2") == source["digest"]
