"""ombra restore: round trips through the repository and the store's writer, proven by the
mail digest — full + incrementals to the original database, full + differential to another
database, a point by generation, the recovery database; a block damaged in the repository stops
the restore before any replay, naming the set and file; refusals with their reasons."""
import json
import os
import pathlib
import subprocess

import pytest


def load(store, db, n, seed=1):
    store.ombra("mail", "load", db, "--mailboxes", "4", "--messages", str(n), "--size", "6000", "--seed", str(seed))


@pytest.fixture
def repo(store, vssd):
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


def backup(store, repo, t, db="db1"):
    r = store.ombra("backup", "--repo", repo, "--type", t, "--json", db)
    return json.loads(r.out)


def restore(store, repo, db, *args, check=True):
    return store.ombra("restore", db, "--repo", repo, "--json", *args, check=check)


def test_full_and_incrementals_back_into_the_original_and_a_differential_into_another(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 500)
    backup(store, repo, "full")
    load(store, "db1", 200, seed=2)
    dif = backup(store, repo, "differential")
    d_dif = store.digest("db1")
    load(store, "db1", 200, seed=3)
    backup(store, repo, "incremental")
    load(store, "db1", 200, seed=4)
    backup(store, repo, "incremental")
    d_last = store.digest("db1")
    # the original, destroyed: its files gone
    info = store.db_show("db1")
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    os.remove(info["edb"])
    r = restore(store, repo, "db1", "--mount")
    res = json.loads(r.out)
    assert [s["type"] for s in res["sets"]] == ["full", "incremental", "incremental"], res
    assert res["replay"]["last_gen"] >= res["replay"]["first_gen"] > 0
    assert store.digest("db1") == d_last
    # the differential's state, into another database
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    r = restore(store, repo, "db1", "--set", dif["sets"][0]["set"][:12], "--to", "db2", "--mount")
    assert [s["type"] for s in json.loads(r.out)["sets"]] == ["full", "differential"]
    assert store.digest("db2") == d_dif


def test_a_damaged_block_stops_the_restore_naming_it(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    for pack in (repo / "packs").rglob("*"):
        if pack.is_file() and pack.stat().st_size > 100000:
            with open(pack, "r+b") as f:
                f.seek(pack.stat().st_size // 2)
                f.write(b"\x00\xff\x00\xff")
            break
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and "set" in r.err and "file" in r.err, r.describe()
    assert len(r.err.strip().split("\n")) == 1
    m = store.ombra("db", "mount", "db2", check=False)
    assert m.rc == 1 and "-506 RestoreInProgress" in m.err, "a half-restored database is not mounted"
    # the original too: a failed restore over it leaves it dismounted and marked
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "file" in r.err, r.describe()
    m = store.ombra("db", "mount", "db1", check=False)
    assert m.rc == 1 and "-506 RestoreInProgress" in m.err, m.describe()


def test_refusals(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "SetNotFound" in r.err, r.describe()
    backup(store, repo, "full")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "-1202 DatabaseInUse" in r.err and "dismount" in r.err, r.describe()
    store.ombra("db", "dismount", "db1")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "-1032 FileAccessDenied" in r.err, r.describe()


def test_a_point_in_time_keeps_the_mail_before_it_and_drops_the_mail_after_it(store, repo):
    import datetime
    import time
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    load(store, "db1", 100, seed=2)
    before = store.digest("db1")
    time.sleep(1.1)
    point = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(1.1)
    load(store, "db1", 100, seed=3)
    after = store.digest("db1")
    backup(store, repo, "incremental")
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    r = restore(store, repo, "db1", "--until-time", point, "--to", "db2", "--mount")
    res = json.loads(r.out)
    assert res["replay"]["stopped_at_point"], res
    assert store.digest("db2") == before != after
    r = restore(store, repo, "db1", "--until-time", "yesterday", check=False)
    assert r.rc == 2 and "--until-time" in r.err
