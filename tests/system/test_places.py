"""No database's files where another's are (issue 15, the second attack): a log roll or a
truncation meets only files its own log wrote.

A database file in another database's log folder, or named as a log folder's files are, was
deleted by that database's truncation (it scans the folder for generation names) or replaced by
its next log roll. Now the places are refused when a database is made or restored to new paths,
and, whatever is planted there, truncation deletes only files whose header says they are that
generation of that stream, and a roll never renames over a file that is not its own."""
import os
import pathlib

from conftest import one_line_refusal


def gens(d):
    return sorted(p.name for p in pathlib.Path(d).glob("E00????????.log"))


def test_a_database_is_never_made_or_restored_where_another_ones_files_are(store, repo, source):
    logs = pathlib.Path(store.db_show("db1")["logs"])
    edb_dir = pathlib.Path(store.db_show("db1")["edb"]).parent
    other = store.tmp / "other"
    for args, words in (
        (["--edb", logs / "E0000000002.log", "--logs", other], "named as a log folder's own files"),
        (["--edb", logs / "x.edb", "--logs", other], "that folder is its log folder"),
        (["--edb", other / "x.edb", "--logs", edb_dir], "its database file is in that folder"),
        (["--edb", other / "x.edb", "--logs", logs], "its log stream is in that folder"),
    ):
        r = store.ombra("db", "new", "x", *args, "--base", "E00", check=False)
        assert one_line_refusal(r) and words in r.err, r.describe()
    assert "x" not in [d["name"] for d in store.db_list()]
    assert not (logs / "x.edb").exists() and not (logs / "E0000000002.log").exists()
    # a restore to new paths: the same rules
    for edb, lg in ((logs / "E0000000099.log", other), (logs / "y.edb", other)):
        r = store.ombra("restore", "--repo", repo, "db1", "--edb", edb, "--logs", lg, check=False)
        assert one_line_refusal(r), r.describe()
        assert not edb.exists()


def test_truncation_leaves_a_file_at_a_generations_name_that_is_not_that_generation(store, repo):
    store.ombra("db", "new", "db1")
    logs = pathlib.Path(store.db_show("db1")["logs"])
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "300", "--size", "8000")
    store.ombra("backup", "--repo", repo, "--type", "full", "db1")
    left = gens(logs)
    # An administrator's file at the name of a generation the backup truncated.
    planted = logs / "E0000000001.log"
    assert planted.name not in left, left
    planted.write_bytes(b"not a log: someone's notes\n" * 100)
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "300", "--size", "8000")
    store.ombra("backup", "--repo", repo, "--type", "full", "db1")
    assert planted.read_bytes() == b"not a log: someone's notes\n" * 100
    assert "is named as generation 1 of this log but is not one: left in place" in store.stderr(tail=200000)
    assert len(gens(logs)) < len(left) + 10, "the real generations were truncated"


def test_a_log_roll_never_replaces_a_file_it_did_not_write(store):
    store.ombra("db", "new", "db1")
    logs = pathlib.Path(store.db_show("db1")["logs"])
    last = max(int(g[3:11], 16) for g in gens(logs)) if gens(logs) else 0
    # The name the current generation takes when it is finished, and the next few.
    planted = [logs / f"E00{g:08X}.log" for g in range(last + 1, last + 4)]
    for p in planted:
        p.write_bytes(b"precious\n" * 1000)
    r = store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "400", "--size",
                    "8000", check=False)
    assert r.rc != 0, "the log rolled onto a file it did not write:\n" + r.describe()
    for p in planted:
        assert p.read_bytes() == b"precious\n" * 1000, p
    assert "is not that generation of this log" in store.stderr(tail=200000) + r.err, r.describe()
    # Moved away, the database goes on (its commits are kept by its log).
    for p in planted:
        p.rename(store.tmp / p.name)
    store.ombra("db", "dismount", "db1", check=False)
    store.ombra("db", "mount", "db1")
    i = store.deliver("db1", "bob", b"Subject: after\n\nstill here\n")
    assert store.get("db1", "bob", i) == b"Subject: after\n\nstill here\n"
