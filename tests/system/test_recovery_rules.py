"""Issue 15, point 8: the recovery database and the small promises around it.

A restore into another database of the server gives it the id of the database the backup is
of. When an ordinary database of this server carries that id already (the live original, or
another copy of it), the target becomes a recovery database (spec §6: never backed up, no
circular logging, one mounted at a time) and the restore says so: two ordinary databases never
carry one id. `db new-recovery` says the database is dismounted, as it is. A dismount whose
clean shutdown fails on a full disk dismounts, exits 0 and warns in one line. A passphrase file
others can read is used with a one-line warning naming it and its mode."""
import json
import os
import pathlib
import subprocess

import pytest

from conftest import one_line_refusal, start_vssd


def header_id(store, edb):
    """The database id in an .edb's header (what the file carries, whatever the directory says)."""
    return json.loads(store.ombra("dbutil", "header", edb, "--json").out)["db_id"]


def made_ready(store, name):
    """name: a new database, dismounted and open to a restore."""
    store.ombra("db", "new", name)
    store.ombra("db", "dismount", name)
    store.ombra("db", "set", name, "--allow-restore", "on")


def restore(store, repo, db, *opts, check=True):
    return store.ombra("restore", db, "--repo", repo, *opts, check=check)


def warning_lines(r):
    return [l for l in r.err.strip().split("\n") if l.strip()]


def test_a_restore_next_to_the_live_database_makes_the_target_a_recovery_database(store, repo, source):
    db1 = store.db_show("db1")
    made_ready(store, "alt")
    r = restore(store, repo, "db1", "--to", "alt", "--mount")
    assert "note: alt is now a recovery database" in r.out and "db1" in r.out, r.describe()
    alt = store.db_show("alt")
    assert header_id(store, alt["edb"]) == db1["id"], "the restored files carry db1's id"
    assert alt["recovery"] is True and alt["mounted"] is True and alt["circular_logging"] is False
    assert store.digest("alt") == source["digest"], "the old mail is there to read"
    assert store.digest("db1") == source["digest"], "the live database is untouched"
    # what a recovery database is: never backed up, never circular
    b = store.ombra("backup", "--repo", repo, "--type", "full", "alt", check=False)
    assert one_line_refusal(b) and "'alt' is a recovery database: it is never backed up" in b.err, \
        b.describe()
    c = store.ombra("db", "set", "alt", "--circular-logging", "on", check=False)
    assert one_line_refusal(c) and "recovery database" in c.err, c.describe()
    # the JSON says it too
    made_ready(store, "alt2")
    store.ombra("db", "dismount", "alt")
    d = store.ombra("backup", "--repo", repo, "--type", "full", "alt", check=False)
    assert one_line_refusal(d) and "'alt' is a recovery database" in d.err, d.describe()
    store.ombra("db", "dismount", "db1")
    d = store.ombra("backup", "--repo", repo, "--type", "full", "db1", check=False)
    assert one_line_refusal(d) and "'db1' is dismounted" in d.err and "ombra db mount db1" in d.err, \
        d.describe()
    store.ombra("db", "mount", "db1")
    res = json.loads(restore(store, repo, "db1", "--to", "alt2", "--json").out)
    assert res["recovery"] is True and res["copy_of"] == "db1", res
    # the live database itself is restored as itself: it stays ordinary
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    res = json.loads(restore(store, repo, "db1", "--mount", "--json").out)
    assert res["recovery"] is False and "copy_of" not in res, res
    assert store.db_show("db1")["recovery"] is False
    # files restored to new paths carry db1's id: no command makes them an ordinary database
    new = store.tmp / "np"
    restore(store, repo, "db1", "--edb", new / "x.edb", "--logs", new / "logs")
    assert header_id(store, new / "x.edb") == db1["id"]
    n = store.ombra("db", "new", "x", "--edb", new / "x.edb", "--logs", new / "logs", check=False)
    assert one_line_refusal(n) and "exists" in n.err, n.describe()
    assert [d["name"] for d in store.db_list() if not d["recovery"]] == ["db1"]


def test_a_second_copy_of_a_database_from_another_server_is_a_recovery_database(store, repo, server_beta):
    """A backup of a database that is not on this server restores into another database as an
    ordinary one (spec §6: another database); a second copy of it would be a second ordinary
    database with its id, so it is a recovery database."""
    beta = server_beta
    beta.ombra("db", "new", "far")
    beta.ombra("mail", "load", "far", "--mailboxes", "2", "--messages", "50", "--size", "3000")
    beta.ombra("backup", "--repo", repo, "--type", "full", "far")
    far_id = beta.db_show("far")["id"]
    made_ready(store, "a1")
    r = restore(store, repo, "far", "--to", "a1", "--mount")
    assert "recovery database" not in r.out, r.describe()
    assert store.db_show("a1")["recovery"] is False, "the first copy is another database"
    assert header_id(store, store.db_show("a1")["edb"]) == far_id
    made_ready(store, "a2")
    r = restore(store, repo, "far", "--to", "a2", "--mount")
    assert "note: a2 is now a recovery database" in r.out and "a1" in r.out, r.describe()
    assert store.db_show("a2")["recovery"] is True
    assert store.digest("a2") == store.digest("a1") == beta.digest("far")


def test_new_recovery_says_it_is_dismounted_and_another_is_made_while_one_is_mounted(store, repo, source):
    d = store.tmp / "r1"
    r = store.ombra("db", "new-recovery", "r1", "--edb", d / "r1.edb", "--logs", d / "logs")
    assert "(mounted)" not in r.out and "dismounted" in r.out, r.describe()
    shown = store.db_show("r1")
    assert shown["mounted"] is False and shown["recovery"] is True and shown["allow_restore"] is True
    j = store.json("db", "new-recovery", "r0", "--edb", d / "r0.edb", "--logs", d / "logs0")
    assert j["mounted"] is False, j
    restore(store, repo, "db1", "--recovery", "r1", "--mount")
    assert store.digest("r1") == source["digest"]
    # a second recovery database can be made (it is not mounted) while r1 is mounted
    d2 = store.tmp / "r2"
    store.ombra("db", "new-recovery", "r2", "--edb", d2 / "r2.edb", "--logs", d2 / "logs")
    # and a restore that could not mount it at the end is refused before it lays anything
    before = (d2 / "r2.edb").read_bytes()
    r = restore(store, repo, "db1", "--recovery", "r2", "--mount", check=False)
    assert one_line_refusal(r) and "r1" in r.err and "HINT" in r.err, r.describe()
    assert (d2 / "r2.edb").read_bytes() == before, "nothing laid down"
    assert not (d2 / "logs" / "_restoredLogs").exists()
    restore(store, repo, "db1", "--recovery", "r2")
    store.ombra("db", "dismount", "r1")
    store.ombra("db", "mount", "r2")
    assert store.digest("r2") == source["digest"]


@pytest.fixture
def small_fs(tmp_path):
    """A 12 MiB tmpfs to fill up (root only). Ask for it before `store`, so that the store has
    stopped before it is unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def fill(d):
    """Fills the filesystem of d to the last byte; returns the filler to remove."""
    f = d / "filler"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 16, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return f


def test_a_dismount_whose_clean_shutdown_fails_on_a_full_disk_dismounts_and_warns(small_fs, store):
    store.ombra("db", "new", "d", "--edb", small_fs / "d.edb", "--logs", small_fs / "logs")
    store.ombra("mail", "load", "d", "--mailboxes", "2", "--messages", "100", "--size", "2000")
    store.deliver("d", "inbox", b"the last message before the disk filled up\n")
    digest = store.digest("d")
    filler = fill(small_fs)
    r = store.ombra("db", "dismount", "d", check=False)
    assert r.rc == 0, f"the database is dismounted: no failure to report\n{r.describe()}"
    assert r.out.strip() == "dismounted d", r.describe()
    lines = warning_lines(r)
    assert len(lines) == 1 and "warning" in lines[0] and "DiskFull" in lines[0], r.describe()
    assert store.db_show("d")["mounted"] is False
    m = store.ombra("mail", "digest", "d", check=False)
    assert m.rc != 0 and "not mounted" in m.err
    filler.unlink()
    store.ombra("db", "mount", "d")
    assert store.digest("d") == digest, "every commit came back at the next mount"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606], ids=["0644", "0640", "0606"])
def test_a_passphrase_file_others_can_read_or_write_is_warned_in_one_line(store, tmp_path, mode):
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    pw.chmod(0o600)
    repo = tmp_path / "repo"
    r = store.ombra("repo", "init", repo, "--encrypt", "--passphrase-file", pw)
    assert r.err.strip() == "", f"a mode 0600 file is used quietly\n{r.describe()}"
    pw.chmod(mode)
    r = store.ombra("backups", "list", "--repo", repo, "--passphrase-file", pw)
    lines = warning_lines(r)
    assert len(lines) == 1 and "warning" in lines[0], r.describe()
    assert str(pw) in lines[0] and f"{mode:04o}" in lines[0] and "chmod 600" in lines[0], r.describe()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_passphrase_file_owned_by_another_user_is_warned_in_one_line(store, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    pw.chmod(0o600)
    repo = tmp_path / "repo"
    store.ombra("repo", "init", repo, "--encrypt", "--passphrase-file", pw)
    os.chown(pw, 65534, 65534)  # nobody: it could replace what the file says
    r = store.ombra("backups", "list", "--repo", repo, "--passphrase-file", pw)
    lines = warning_lines(r)
    assert len(lines) == 1 and str(pw) in lines[0] and "uid 65534" in lines[0], r.describe()


def test_a_passphrase_file_that_is_no_text_file_is_refused_in_one_line(store, tmp_path):
    """A FIFO nobody writes does not hang the command; a device, a folder, a zero byte (a
    binary key cut short in silence) and a line of blanks are each one line naming the file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "dir").mkdir()
    zero = tmp_path / "zero"
    zero.write_bytes(b"ab\x00cdefgh\n")
    blank = tmp_path / "blank"
    blank.write_text("   \n")
    for f in (tmp_path / "zero", tmp_path / "blank"):
        f.chmod(0o600)
    for f, words in ((fifo, "a FIFO"), ("/dev/zero", "a device"), (tmp_path / "dir", "a folder"),
                     (zero, "a zero byte at offset 2"), (blank, "only blanks")):
        r = store.ombra("repo", "init", tmp_path / f"repo-{pathlib.Path(f).name}", "--encrypt",
                        "--passphrase-file", f, check=False, timeout=20)
        assert one_line_refusal(r) and str(f) in r.err and words in r.err, r.describe()
        assert not (tmp_path / f"repo-{pathlib.Path(f).name}").exists()
