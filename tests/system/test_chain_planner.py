"""Which sets a restore uses, through the CLI (spec §6, issue 14 points 1 and 3): a copy backup
between a full and an incremental does not take the default restore; backups list says which
sets a restore can use and their chains; a damaged or orphaned newest set stops the restore
naming it, and the --set its hint names restores the older point on purpose."""
import json
import re

import pytest


def load(store, db, n, seed=1):
    store.ombra("mail", "load", db, "--mailboxes", "3", "--messages", str(n), "--size", "4000",
                "--seed", str(seed))


@pytest.fixture
def repo(store, vssd):
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


def backup(store, repo, t, db="db1"):
    r = store.ombra("backup", "--repo", repo, "--type", t, "--json", db)
    return json.loads(r.out)["sets"][0]["id"]


def restore(store, repo, db, *args, check=True):
    return store.ombra("restore", db, "--repo", repo, "--json", *args, check=check)


def new_target(store, name):
    store.ombra("db", "new", name)
    store.ombra("db", "dismount", name)
    store.ombra("db", "set", name, "--allow-restore", "on")


@pytest.fixture
def copy_between(store, repo):
    """full -> mail -> copy -> mail -> incremental of db1; the digests at the copy and at the
    incremental."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 200)
    ids = {"full": backup(store, repo, "full")}
    load(store, "db1", 60, seed=2)
    ids["copy"] = backup(store, repo, "copy")
    d_copy = store.digest("db1")
    load(store, "db1", 60, seed=3)
    ids["inc"] = backup(store, repo, "incremental")
    d_inc = store.digest("db1")
    assert d_copy != d_inc
    return ids, d_copy, d_inc


def test_a_copy_between_full_and_incremental_does_not_take_the_default_restore(store, repo,
                                                                              copy_between):
    ids, d_copy, d_inc = copy_between
    new_target(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", "--mount")
    res = json.loads(r.out)
    assert [s["id"] for s in res["sets"]] == [ids["full"], ids["inc"]], res
    assert store.digest("db2") == d_inc
    # the copy still restores on its own, on purpose (db2, a copy of live db1, is a recovery
    # database: one is mounted at a time)
    store.ombra("db", "dismount", "db2")
    new_target(store, "db3")
    restore(store, repo, "db1", "--set", ids["copy"][:12], "--to", "db3", "--mount")
    assert store.digest("db3") == d_copy

    sets = {s["id"]: s for s in store.json("backups", "list", "--repo", repo)["sets"]}
    assert all(s["restorable"] is True and "why" not in s for s in sets.values()), sets
    assert sets[ids["inc"]]["chain"] == [ids["full"], ids["inc"]]
    assert sets[ids["copy"]]["chain"] == [ids["copy"]]
    assert sets[ids["full"]]["chain"] == [ids["full"]]
    listing = store.ombra("backups", "list", "--repo", repo).out.splitlines()
    inc_row = next(l for l in listing if l.startswith(ids["inc"][:12]))
    assert inc_row.endswith(f"RESTORABLE: base {ids['full'][:12]}, 2 sets"), listing
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", inc_row), "times carry their zone"


def hinted_set(err):
    m = re.search(r"HINT: --set ([0-9a-f]{12})", err)
    assert m, err
    return m.group(1)


def test_a_damaged_newest_set_stops_the_restore_naming_it_and_the_hint_restores_the_older_point(
        store, repo, copy_between):
    ids, d_copy, d_inc = copy_between
    f = repo / "sets" / f"{ids['inc']}.json"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    new_target(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.describe()
    assert "RepositoryCorrupt" in r.err and ids["inc"][:12] in r.err and "damaged" in r.err
    assert hinted_set(r.err) == ids["copy"][:12]  # the newest point that remains whole
    restore(store, repo, "db1", "--set", hinted_set(r.err), "--to", "db2", "--mount")
    assert store.digest("db2") == d_copy
    listing = store.ombra("backups", "list", "--repo", repo).out
    assert "DAMAGED" in listing
    sets = {s["id"]: s for s in store.json("backups", "list", "--repo", repo)["sets"]}
    assert sets[ids["inc"]]["restorable"] is False and sets[ids["inc"]]["why"]


def test_an_orphaned_incremental_stops_the_restore_and_the_listing_says_why(store, repo,
                                                                            copy_between):
    ids, d_copy, d_inc = copy_between
    (repo / "sets" / f"{ids['full']}.json").unlink()  # the incremental's parent is gone
    new_target(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.describe()
    assert ids["inc"][:12] in r.err and "not in the repository" in r.err, r.describe()
    assert hinted_set(r.err) == ids["copy"][:12]
    r = restore(store, repo, "db1", "--set", ids["inc"][:12], "--to", "db2", check=False)
    assert r.rc == 1 and ids["full"][:12] in r.err and "not in the repository" in r.err
    sets = {s["id"]: s for s in store.json("backups", "list", "--repo", repo)["sets"]}
    assert sets[ids["inc"]]["restorable"] is False
    assert ids["full"][:12] in sets[ids["inc"]]["why"]
    assert sets[ids["copy"]]["restorable"] is True
    listing = store.ombra("backups", "list", "--repo", repo).out.splitlines()
    inc_row = next(l for l in listing if l.startswith(ids["inc"][:12]))
    assert "NOT RESTORABLE: its parent" in inc_row, listing
