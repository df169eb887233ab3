"""Attacks on what landed for issue 17 (joining, reseed, block mode and --sync-copies), part b:
each test is a defect found by trying what a hostile peer or a careless administrator would."""
import time

from dag.test_block_sync import dag2, sync_copies  # noqa: F401 (dag2 is a fixture)
from dag.test_replication import drained

U32 = 0xFFFFFFFF


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
