"""Restore in a DAG (issue 18; docs/design.md "Restore in a DAG"): `ombra restore` of a DAG
database goes to its active copy, through the active server's store, and every passive copy is
then reseeded from the restored active by its own ombra-repld (no command per copy), coming back
Healthy with the active's digest; mail delivered after the restore reaches every copy. On a
passive copy's server the restore is refused in one line naming the active server; a recovery
database on any server takes a set made on any other. Real servers in network namespaces, a real
etcd, ombra-repld on each."""
import json
import time

import pytest

from dag.conftest import (close_generation, copies_match, copy_of, drained, passive_digest, roll,
                          wait_copy)
from dag.test_replication import dag3, repld_log, setup_dag  # noqa: F401 (dag3: fixture)

DB = "db1"


def full_backup(bed, s, repo):
    s.ombra("repo", "init", str(repo))
    r = s.ombra("backup", "--repo", str(repo), "--type", "full", DB)
    assert "full backup set" in r.out, r.describe()


def refused(r, *words):
    assert r.rc != 0, r.describe()
    assert r.err.count("\n") == 1, r.describe()
    for w in words:
        assert w in r.err, r.describe()


def seeds(s):
    return repld_log(s).count(f"seeded {DB} (")


def test_a_restore_on_a_passive_copys_server_is_refused_and_a_recovery_database_there_takes_the_set(
        dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", DB)
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    for i in range(30):
        a.deliver(DB, f"box{i % 4}", f"in the backup {i}".encode())
    repo = bed.tmp / "repo"
    full_backup(bed, a, repo)
    in_set = a.digest(DB)
    for i in range(10):
        a.deliver(DB, f"box{i % 4}", f"after the backup {i}".encode())
    drained(a, bed, DB, "b")

    # b holds the passive copy: a restore of db1 there is refused in one line naming a
    for extra in ((), ("--mount",), ("--to", DB)):
        r = b.ombra("restore", "--repo", str(repo), DB, *extra, check=False)
        refused(r, "active copy is on server a", "run ombra restore on a")
    assert copy_of(a, bed, DB, "b")["state"] == "Healthy"

    # a recovery database on b takes the set made on a, through b's own store writer
    rdb = b.dir / "rdb"
    b.ombra("db", "new-recovery", "rdb", "--edb", str(rdb / "rdb.edb"), "--logs",
            str(rdb / "logs"))
    r = b.ombra("restore", "--repo", str(repo), DB, "--recovery", "rdb", "--mount", "--json")
    res = json.loads(r.out)
    assert res["target"] == "rdb" and res["recovery"] and res["replay"], res
    assert "reseeding" not in res, res  # a recovery database is never replicated
    assert b.digest("rdb") == in_set
    # the DAG's database and its copy on b are untouched
    assert copy_of(a, bed, DB, "b")["state"] == "Healthy"
    assert a.digest(DB) != in_set


@pytest.mark.dag_long
def test_a_restore_to_the_active_reseeds_every_passive_copy_from_it(dag3):
    bed = dag3
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "new", DB)
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    a.ombra("db", "copy", "add", DB, "--server", "c", "--etcd", bed.etcd_url)
    for i in range(40):
        a.deliver(DB, f"box{i % 5}", f"in the backup {i}".encode())
    roll(a, DB, 1)
    repo = bed.tmp / "repo"
    full_backup(bed, a, repo)
    in_set = a.digest(DB)
    # mail after the backup, on every copy: the restore goes back before it
    roll(a, DB, 2)
    for i in range(20):
        a.deliver(DB, f"box{i % 5}", f"lost by the restore {i}".encode())
    close_generation(a, DB)
    drained(a, bed, DB, "b")
    drained(a, bed, DB, "c")
    # c is suspended by its administrator: it stays so, and reseeds once resumed
    a.ombra("db", "copy", "suspend", DB, "--server", "c", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "c", lambda x: x["state"] == "Suspended", what="suspending")
    seeds_b, seeds_c = seeds(b), seeds(c)

    a.ombra("db", "dismount", DB)
    a.ombra("db", "set", DB, "--allow-restore", "on")
    r = a.ombra("restore", "--repo", str(repo), DB, "--no-roll-forward", "--mount")
    assert "passive copies of db1 being reseeded from this server's restored copy: b, c " \
           "(suspended: when resumed)" in r.out, r.describe()
    assert a.digest(DB) == in_set

    # b is reseeded from the restored active by itself, and takes the mail that follows
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Healthy" and seeds(b) > seeds_b,
              seconds=90, what="the reseed after the restore")
    assert "a reseed was asked" in repld_log(b), repld_log(b)
    assert seeds(c) == seeds_c  # suspended: not yet
    after = []
    for i in range(25):
        after.append(a.deliver(DB, f"box{i % 5}", f"after the restore {i}".encode()))
    roll(a, DB, 1)
    want = copies_match(bed, a, DB, [b])
    assert want != in_set

    # c, resumed, is reseeded too and holds the same mail
    a.ombra("db", "copy", "resume", DB, "--server", "c", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "c", lambda x: x["state"] == "Healthy" and seeds(c) > seeds_c,
              seconds=90, what="the reseed of the resumed copy")
    for i in range(5):
        a.deliver(DB, f"box{i % 5}", f"after the resume {i}".encode())
    copies_match(bed, a, DB, [b, c])
    assert b"after the restore 24" in a.get(DB, "box4", after[-1])


@pytest.mark.dag_long
def test_a_restore_left_dismounted_reseeds_its_copy_once_mounted(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", DB)
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    for i in range(30):
        a.deliver(DB, f"box{i % 3}", f"in the backup {i}".encode())
    repo = bed.tmp / "repo"
    full_backup(bed, a, repo)
    in_set = a.digest(DB)
    roll(a, DB, 1)
    close_generation(a, DB)
    drained(a, bed, DB, "b")
    seeds_b = seeds(b)
    a.ombra("db", "dismount", DB)
    a.ombra("db", "set", DB, "--allow-restore", "on")
    res = json.loads(a.ombra("restore", "--repo", str(repo), DB, "--no-roll-forward",
                             "--json").out)
    assert res["reseeding"] == [{"server": "b", "suspended": False}], res
    # the active is dismounted: nothing to seed from, and the copy never turns Healthy on its
    # old files meanwhile
    end = time.time() + 5
    while time.time() < end:
        assert copy_of(a, bed, DB, "b")["state"] != "Healthy" or seeds(b) > seeds_b
        time.sleep(0.3)
    assert seeds(b) == seeds_b
    a.ombra("db", "mount", DB)
    assert a.digest(DB) == in_set
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Healthy" and seeds(b) > seeds_b,
              seconds=90, what="the reseed once the active is mounted")
    for i in range(10):
        a.deliver(DB, f"box{i % 3}", f"after the restore {i}".encode())
    copies_match(bed, a, DB, [b])
