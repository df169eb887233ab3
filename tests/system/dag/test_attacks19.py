"""Attacks on issue 19's active manager (switchover, failover, fencing): each test is what a
careless administrator, a paused process or a hostile member of the DAG did, and the outcome a
user must see: nothing acknowledged lost, never two actives, no failover of a healthy active,
no database left unmounted without a word."""
import json
import signal
import time

import pytest

from dag.test_failover import DB, LEASE, active_of, dag_db, three, wait_active  # noqa: F401


def db_id(bed, s):
    return dag_db(bed, s)["id"]


def activelease(bed, s):
    v = bed.etcd_get(f"/ombra/dag/dag1/activelease/{db_id(bed, s)}")
    return json.loads(v) if v else None


def test_a_paused_store_coming_back_leaves_the_new_actives_lease_alone(three):
    """a's store is paused (SIGSTOP) past the lease: its ombra-repld waits on it, the server's
    lease lapses and the database fails over. When the store goes on, a's ombra-repld learns
    that its store no longer takes the database's commits: it must not delete the activelease
    key the new active wrote meanwhile, or the primary fails the healthy new active over too
    (mail refused again, and generations lost in asynchronous mode)."""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    store = a.process("store")
    store.send_signal(signal.SIGSTOP)
    try:
        got = wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2 and g[2], 40,
                          "failover")
        time.sleep(1)
    finally:
        store.send_signal(signal.SIGCONT)
    new = got[0]
    # past the primary's quiet time after a move (30 s) and a few lease rounds
    end = time.monotonic() + 40
    while time.monotonic() < end:
        act = active_of(bed, b)
        assert act[:2] == (new, 2), f"the healthy new active {new} was failed over: {act}, " \
            f"last move {dag_db(bed, b).get('last_move')}"
        time.sleep(0.5)
    al = activelease(bed, b)
    assert al and al["server"] == new and al["epoch"] == 2, al
    r = a.ombra("mail", "deliver", DB, "box", input=b"deposed", check=False, timeout=60)
    assert r.rc != 0, "the deposed active acknowledged a delivery"
