"""Reseeding a passive copy from another passive copy (issue 17: `ombra db copy reseed DB
--server S --source S2`; docs/design.md, "Reseeding from another copy"), and a seed whose
source dies half-way. Real servers in network namespaces, a real etcd, ombra-repld on each."""
import os
import time

import pytest

from dag.conftest import (close_generation, copies_match, copy_folder, copy_of, drained, roll,
                          wait_copy)
from dag.test_replication import dag3, repld_log, setup_dag  # noqa: F401 (dag3: fixture)

DB = "db1"


def reseed(bed, s, *args, check=True):
    return bed.a.ombra("db", "copy", "reseed", DB, "--etcd", bed.etcd_url, *args, check=check)


def seed_half_way(a, b):
    """Waits until the first 4 MiB part of a's seed is written on b (the source paused after
    it: OMBRA_REPL_TEST_SEED_PAUSE_MS); returns b's copy folder."""
    folder = b.home / "copies" / a.db_show(DB)["id"]
    deadline = time.time() + 60
    while True:
        tmp = [f for f in folder.glob(f".{DB}.edb.*.tmp") if f.stat().st_size >= 4 << 20] \
            if folder.exists() else []
        if tmp:
            return folder
        assert time.time() < deadline, "the seed never got half-way"
        time.sleep(0.05)


def refused(r, *words):
    assert r.rc != 0, r.describe()
    assert r.err.count("\n") == 1, r.describe()
    for w in words:
        assert w in r.err, r.describe()


@pytest.mark.dag_long
def test_reseed_from_another_passive_copy_then_from_the_active(dag3):
    bed = dag3
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "new", DB)
    for i in range(40):
        a.deliver(DB, f"box{i % 5}", f"before the copies {i}".encode())
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    a.ombra("db", "copy", "add", DB, "--server", "c", "--etcd", bed.etcd_url)
    roll(a, DB, 2)
    close_generation(a, DB)
    drained(a, bed, DB, "b")
    drained(a, bed, DB, "c")

    # refused, one line each: itself, the active, a copy that is not Healthy, no such copy
    refused(reseed(bed, a, "--server", "c", "--source", "c", check=False),
                     "the copy being reseeded")
    refused(reseed(bed, a, "--server", "c", "--source", "a", check=False),
                     "active copy")
    refused(reseed(bed, a, "--server", "c", "--source", "nosuch", check=False),
                     "holds no copy")
    a.ombra("db", "copy", "suspend", DB, "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Suspended", what="suspending")
    refused(reseed(bed, a, "--server", "c", "--source", "b", check=False),
                     "Suspended, not Healthy")
    a.ombra("db", "copy", "resume", DB, "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Healthy", what="resuming")

    # c's copy diverges (garbage of the same size in its .edb): it fails
    a.ombra("db", "copy", "suspend", DB, "--server", "c", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "c", lambda x: x["state"] == "Suspended", what="suspending")
    edb = copy_folder(bed, c, DB) / f"{DB}.edb"
    edb.write_bytes(os.urandom(edb.stat().st_size))
    a.ombra("db", "copy", "resume", DB, "--server", "c", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "c", lambda x: x["state"] == "Failed" and x["last_error"],
              what="the damaged copy failing")

    # mail goes on, b stays a generation or more behind the active's last (its replay paused
    # while it is read is not needed for this), and c is reseeded from b
    roll(a, DB, 2)
    seeds_on_a = repld_log(a).count(f"seeding {DB} (")
    r = reseed(bed, a, "--server", "c", "--source", "b")
    assert "from the copy on b" in r.out, r.describe()
    assert f"seeded {DB}" in repld_log(c) and "from the copy on b" in repld_log(c)
    assert f"seeding the copy of {DB}" in repld_log(b)
    assert repld_log(a).count(f"seeding {DB} (") == seeds_on_a, "the active served the seed"

    # c goes on from the active: mail after the reseed is on both copies
    roll(a, DB, 2)
    for i in range(20):
        a.deliver(DB, f"box{i % 5}", f"after the reseed {i}".encode())
    copies_match(bed, a, DB, [b, c])

    # a later reseed without --source comes from the active again
    r = reseed(bed, a, "--server", "c")
    assert "from the copy on" not in r.out
    assert repld_log(a).count(f"seeding {DB} (") == seeds_on_a + 1


@pytest.mark.dag_long
def test_the_actives_repld_killed_in_the_middle_of_a_seed(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    a.env["OMBRA_REPL_TEST_SEED_PAUSE_MS"] = "4000"  # a's source pauses after each 4 MiB part
    setup_dag(bed, [a, b])
    a.ombra("db", "new", DB)
    roll(a, DB, 6)  # an .edb of more than one part
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url,
            "--wait-seconds", "0")
    folder = seed_half_way(a, b)
    assert a.kill9("repld") == -9
    # the copy waits and retries: never Healthy, and no .edb in place (the half seed is gone)
    end = time.time() + 6
    states = set()
    while time.time() < end:
        c = copy_of(a, bed, DB, "b")
        states.add(c["state"])
        assert c["state"] != "Healthy", c
        assert not (folder / f"{DB}.edb").exists(), "a half seed was put in place"
        time.sleep(0.2)
    assert states & {"Disconnected", "Failed", "Seeding"}, states
    assert not list(folder.glob(f".{DB}.edb.*.tmp")), "the half seed stayed"
    del a.env["OMBRA_REPL_TEST_SEED_PAUSE_MS"]
    a.restart("repld")
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Healthy", seconds=90,
              what="the seed after the restart")
    assert f"seeded {DB}" in repld_log(b)
    copies_match(bed, a, DB, [b])


@pytest.mark.dag_long
def test_a_reseed_whose_source_dies_half_way_is_seeded_from_the_active(dag_bed):
    bed = dag_bed(3)
    a, b, c = bed.a, bed.b, bed.c
    c.env["OMBRA_REPL_TEST_SEED_PAUSE_MS"] = "3000"  # c's seeds pause after each part
    setup_dag(bed, [a, b, c])
    a.ombra("db", "new", DB)
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    a.ombra("db", "copy", "add", DB, "--server", "c", "--etcd", bed.etcd_url)
    roll(a, DB, 3)
    close_generation(a, DB)
    drained(a, bed, DB, "b")
    drained(a, bed, DB, "c")
    seeds_on_a = repld_log(a).count(f"seeding {DB} (")
    reseed(bed, a, "--server", "b", "--source", "c", "--wait-seconds", "0")
    deadline = time.time() + 60
    while f"seeding the copy of {DB}" not in repld_log(c):
        assert time.time() < deadline, repld_log(c)
        time.sleep(0.1)
    c.kill9("repld")  # the source dies half-way through the seed
    # b's copy is wiped; after a few failed tries from c, the active seeds it
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Healthy", seconds=90,
              what="the copy seeded from the active after its source died")
    assert "seeding from the active (a) instead" in repld_log(b), repld_log(b)
    assert repld_log(a).count(f"seeding {DB} (") == seeds_on_a + 1
    for i in range(10):
        a.deliver(DB, f"box{i % 5}", f"after the reseed {i}".encode())
    copies_match(bed, a, DB, [b])


@pytest.mark.dag_long
def test_a_seed_whose_database_was_remounted_half_way_is_never_put_in_place(dag_bed):
    """The seed reads the active's .edb under the held provider's shadow copy: the database's
    own file while its page writes are held. The store killed and started again half-way (or a
    failover dismounting it) releases the hold: recovery writes pages into that same file under
    the reader, which then holds an older header over newer pages (the nemesis found such a
    copy failing its replay many generations later, "page 473 is at dbtime 11364, between the
    log record's 11343 and 11389"). The source must see that the mount it took the shadow copy
    of is gone and send no seed; the copy is seeded again and ends equal to the active."""
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    a.env["OMBRA_REPL_TEST_SEED_PAUSE_MS"] = "4000"  # a's source pauses after each 4 MiB part
    setup_dag(bed, [a, b])
    a.ombra("db", "new", DB)
    roll(a, DB, 6)  # an .edb of more than one part
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url,
            "--wait-seconds", "0")
    folder = seed_half_way(a, b)
    # changes the .edb does not hold yet, then the store killed: its recovery on the restart
    # writes them into the file the seed is being read from
    roll(a, DB, 2)
    assert a.kill9("store") == -9
    a.restart("store")
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Healthy", seconds=120,
              what="the seed after the remount")
    log = repld_log(a) + repld_log(b)
    assert "was dismounted and mounted again while its shadow copy was read" in log, log[-3000:]
    roll(a, DB, 1)
    copies_match(bed, a, DB, [b])
