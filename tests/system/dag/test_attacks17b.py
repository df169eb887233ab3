"""Attacks on what landed for issue 17 (joining, reseed, block mode and --sync-copies), part b:
each test is a defect found by trying what a hostile peer or a careless administrator would."""
import time

import pytest

from dag.test_block_sync import dag2, sync_copies  # noqa: F401 (dag2 is a fixture)
from dag.test_replication import dag3  # noqa: F401 (a fixture)
from dag.test_replication import drained

U32 = 0xFFFFFFFF

pytestmark = pytest.mark.dag_long  # make test-dag and make test-long; make test keeps 12 others


def test_sync_copies_count_only_the_passive_copies_of_the_record_not_any_name_reported(dag2):
    """A position reported to the store for a server that holds no passive copy of the database
    (a name made up on the store's socket, or a copy removed since) never acknowledges a
    commit: with the only copy stopped, a delivery still fails retryably."""
    bed = dag2
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    sync_copies(a, bed, "db1", 1)
    time.sleep(3)
    a.deliver("db1", "box", b"acknowledged by the copy")
    db_id = a.db_show("db1")["id"]
    b.stop()
    try:
        for server in ("ghost", "a"):  # a name of no server; the active itself
            rep = a.request({"op": "db.sync_position", "db": "db1", "id": db_id,
                             "server": server, "gen": U32, "len": U32})
            assert rep is not None
            r = a.ombra("mail", "deliver", "db1", "box", input=b"no copy holds this",
                        check=False)
            assert r.rc == 75, (server, rep, r.describe())
            assert "0 of the 1 synchronous copies" in r.err, r.err
    finally:
        b.cont()


def test_a_join_the_store_could_not_read_back_at_its_next_start_is_refused(dag_bed):
    """dag.join with a DAG name or etcd URL longer than the directory file's fields hold: the
    store used to join (the names cut short in memory, whole in the file), then refuse to start
    ('says that the directory is in etcd, but not which'), its databases out of reach. It is
    refused in one line, and nothing changes."""
    bed = dag_bed(1)
    a = bed.a
    a.ombra("db", "new", "mail1")
    m = a.deliver("mail1", "alice", b"before the join")
    long_url = bed.etcd_url + "," + ",".join([bed.etcd_url] * 60)  # > 1023 bytes
    assert len(long_url) >= 1024
    for req in ({"etcd": bed.etcd_url, "dag": "d" * 65}, {"etcd": long_url, "dag": "dag1"}):
        rep = a.request(dict(req, op="dag.join"))
        assert rep is not None and rep.get("ok") is not True, rep
        assert a.ombra("db", "list").rc == 0
    a.restart("store")
    assert a.get("mail1", "alice", m) == b"before the join"


def test_two_copies_reseeded_from_each_other_the_second_is_refused(dag3):
    """`db copy reseed --server b --source c`, then `--server c --source b` before b's reseed
    ran: both were taken (c's copy still said Healthy), each copy wiped itself and waited for a
    seed from the other, and neither was ever Healthy again. The second is refused in one line,
    in the transaction that would ask it; b is reseeded from c."""
    from dag.conftest import close_generation, copies_match, roll, wait_copy
    bed = dag3
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "new", "db1")
    for i in range(20):
        a.deliver("db1", f"box{i % 5}", f"before the copies {i}".encode())
    for s in ("b", "c"):
        a.ombra("db", "copy", "add", "db1", "--server", s, "--etcd", bed.etcd_url)
    roll(a, "db1", 2)
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    drained(a, bed, "db1", "c")
    b.stop()  # b's reseed is asked but not begun yet: its copy still says Healthy
    try:
        a.ombra("db", "copy", "reseed", "db1", "--server", "b", "--source", "c",
                "--wait-seconds", "0", "--etcd", bed.etcd_url)
        r = a.ombra("db", "copy", "reseed", "db1", "--server", "c", "--source", "b",
                    "--wait-seconds", "0", "--etcd", bed.etcd_url, check=False)
    finally:
        b.cont()
    assert r.rc != 0 and r.err.count("\n") == 1, r.describe()
    assert "being reseeded itself" in r.err and "HINT" in r.err, r.describe()
    wait_copy(a, bed, "db1", "b", lambda x: x["state"] == "Healthy", what="b reseeded from c")
    a.deliver("db1", "box", b"after the reseed")
    copies_match(bed, a, "db1", [b, c])
