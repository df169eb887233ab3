"""Fencing and handoff in the store (issue 19): a store acknowledges commits of a replicated
database only while ombra-repld renews its lease (op dag.lease), so a store cut off from the DAG
stops acknowledging within the lease time; a handoff (op db.handoff, a switchover's first step)
stops commits, closes the last log generation, dismounts the database and keeps it dismounted
while the directory still names this server, until the DAG names it again at a greater epoch.
The test calls dag.lease and db.handoff over the store's socket itself (as root, like
ombra-repld), with the active manager of every ombra-repld quiet (OMBRA_REPL_TEST_NO_AM=1: no
renewal, no switchover or failover) and the stores armed at the first renewal
(OMBRA_FENCE_ALWAYS=0), so that the test alone drives them."""
import json
import os
import re
import threading
import time

import pytest

from dag.dagbed import REPLD_PORT
from dag.test_replication import DAG, drained, setup_dag

LEASE_MS = 3000
WAIT_MS = 1500  # how long a commit waits for a renewal or a handoff (OMBRA_FENCE_WAIT_MS)


@pytest.fixture
def dag2(dag_bed):
    """Two servers; db1 on a with a passive copy on b (replicated); db2 on a alone. The stores
    wait WAIT_MS for a renewal."""
    bed = dag_bed(2)
    for s in (bed.a, bed.b):
        s.env["OMBRA_FENCE_WAIT_MS"] = str(WAIT_MS)
        s.env["OMBRA_FENCE_ALWAYS"] = "0"
        s.env["OMBRA_REPL_TEST_NO_AM"] = "1"
        s.restart("store")
    setup_dag(bed, [bed.a, bed.b])
    # b's store joins too (its certificate was issued into its dag folder): its directory is
    # the DAG's, so it knows where db1 is active.
    b = bed.b
    b.ombra("dag", "add-server", "b", "--address", f"{b.addr}:{REPLD_PORT}", "--etcd",
            bed.etcd_url)
    a = bed.a
    a.ombra("db", "new", "db1")
    a.ombra("db", "new", "db2")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    return bed


def lease(s, valid_ms=LEASE_MS):
    rep = s.request({"op": "dag.lease", "valid_ms": valid_ms})
    assert rep and rep.get("ok"), rep
    return {d["name"]: d for d in rep["databases"]}


def deliver(s, db, body, *opts, check=True):
    """ombra mail deliver --json: (the reply as JSON or None, the result, seconds taken)."""
    t0 = time.monotonic()
    r = s.ombra("mail", "deliver", db, "box", "--json", *opts, input=body, check=check)
    took = time.monotonic() - t0
    return (json.loads(r.out) if r.rc == 0 else None), r, took


def store_log(s):
    return open(s.logs[-1], errors="replace").read()


def wait_for(what, pred, seconds=20):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {seconds} s")


def mounted(s, db):
    return any(d["name"] == db and d["mounted"] for d in s.db_list())


def test_a_store_whose_lease_is_not_renewed_stops_acknowledging_within_the_lease_time(dag2):
    bed = dag2
    a = bed.a
    # Mail for db1 sent to b, which holds a passive copy: the retryable answer naming a.
    _, r, _ = deliver(bed.b, "db1", b"to the passive", check=False)
    assert r.rc == 75 and r.err.count("\n") == 1 and "active on server a" in r.err, r.describe()
    # Before the first dag.lease the store acknowledges as it always did, and says who did.
    ack, _, _ = deliver(a, "db1", b"before any lease")
    assert ack["server"] == "a" and ack["epoch"] == 1 and ack["acked_ns"] > 0 and ack["id"] > 0
    dbs = lease(a)
    assert dbs["db1"]["epoch"] == 1 and dbs["db1"]["mounted"] and dbs["db1"]["taking_commits"]
    assert dbs["db2"]["taking_commits"]
    t_lease = time.time()
    ack, _, _ = deliver(a, "db1", b"under the lease")
    assert ack["epoch"] == 1 and ack["acked_ns"] / 1e9 < t_lease + LEASE_MS / 1000
    before = len(a.messages("db1", "box"))

    # No renewal: once the lease time is over, the store stops acknowledging (and says so in its
    # log at that moment); a delivery waits for a renewal, then exits 75 with one line.
    wait_for("the stop line", lambda: "database db1: stopped taking commits at epoch 1" in
             store_log(a), seconds=LEASE_MS / 1000 + 5)
    # (the slack: the log's poll every 0.1 s, and a loaded machine's scheduling of both)
    assert time.time() - t_lease < LEASE_MS / 1000 + 3
    _, r, took = deliver(a, "db1", b"after the lease", check=False)
    assert r.rc == 75, r.describe()
    assert r.err.count("\n") == 1 and "ActiveLeaseLapsed" in r.err and "HINT" in r.err, r.err
    assert took >= WAIT_MS / 1000 * 0.9
    assert len(a.messages("db1", "box")) == before  # nothing was committed
    # A database with one copy is not fenced.
    ack, _, _ = deliver(a, "db2", b"one copy only")
    assert ack["server"] == "a"

    # A renewal that comes while a delivery waits lets it through.
    threading.Timer(0.5, lambda: lease(a)).start()
    ack, r, took = deliver(a, "db1", b"renewed while waiting")
    assert ack["epoch"] == 1 and 0.4 < took < WAIT_MS / 1000 + 3, r.describe()
    log = store_log(a)
    assert log.count("database db1: taking commits at epoch 1 on server a") >= 2, log

    # --retry: refused while the lease is lapsed, delivered once it is renewed again.
    wait_for("the second stop", lambda: store_log(a).count(
        "database db1: stopped taking commits at epoch 1") >= 2, seconds=LEASE_MS / 1000 + 5)
    threading.Timer(WAIT_MS / 1000 + 1.0, lambda: lease(a)).start()
    ack, r, took = deliver(a, "db1", b"delivered by retries", "--retry", "20")
    assert ack and took > WAIT_MS / 1000, r.describe()
    # --retry that runs out: exit 75, one line.
    wait_for("the third stop", lambda: store_log(a).count(
        "database db1: stopped taking commits at epoch 1") >= 3, seconds=LEASE_MS / 1000 + 5)
    _, r, _ = deliver(a, "db1", b"never", "--retry", "2", check=False)
    assert r.rc == 75 and r.err.count("\n") == 1, r.describe()


@pytest.mark.dag_long
def test_dac_a_store_armed_from_the_start_acknowledges_nothing_before_the_dag_spoke(dag2):
    a = dag2.a
    a.env["OMBRA_FENCE_ALWAYS"] = "1"
    a.restart("store")
    wait_for("db1 mounted", lambda: mounted(a, "db1"))
    _, r, _ = deliver(a, "db1", b"before the DAG spoke", check=False)
    assert r.rc == 75 and "not renewed since the database mounted" in r.err, r.describe()
    assert lease(a)["db1"]["taking_commits"]
    ack, _, _ = deliver(a, "db1", b"after")
    assert ack["server"] == "a" and ack["epoch"] == 1


def gen_files(s, db):
    logs = s.db_show(db)["logs"]
    names = sorted(os.listdir(logs))
    return logs, [n for n in names if re.fullmatch(r"E00[0-9A-F]{8}\.log", n)], names


@pytest.mark.dag_long
def test_a_handoff_closes_the_last_generation_and_keeps_the_database_dismounted(dag2):
    bed = dag2
    a = bed.a
    db_id = a.db_show("db1")["id"]
    lease(a, 60000)
    ids = [deliver(a, "db1", f"message {i}".encode())[0]["id"] for i in range(5)]
    digest = a.digest("db1")
    gen = a.db_show("db1")["gen_current"]

    rep = a.request({"op": "db.handoff", "id": db_id, "epoch": 2, "timeout_ms": 5000})
    assert rep["ok"] is False and "epoch" in rep["message"], rep  # not the current epoch
    t0 = time.time_ns()
    rep = a.request({"op": "db.handoff", "id": db_id, "epoch": 1, "timeout_ms": 5000})
    assert rep["ok"], rep
    assert rep["last_gen"] == gen and t0 <= rep["refused_since_ns"] <= time.time_ns()
    logs, numbered, names = gen_files(a, "db1")
    assert "E00.log" not in names and f"E00{gen:08X}.log" in numbered, names
    assert not mounted(a, "db1")
    log = store_log(a)
    assert "database db1: stopped taking commits at epoch 1: it is being handed off" in log, log
    # Asked again (a lost reply): the same answer.
    again = a.request({"op": "db.handoff", "id": db_id, "epoch": 1, "timeout_ms": 5000})
    assert again["ok"] and again["last_gen"] == gen, again

    # The directory still names a active: mail waits for the move, then exits 75; the store does
    # not mount it, nor does an administrator's mount, nor a restart.
    _, r, took = deliver(a, "db1", b"during the move", check=False)
    assert r.rc == 75 and r.err.count("\n") == 1 and "DatabaseMoving" in r.err, r.describe()
    assert took >= WAIT_MS / 1000 * 0.9
    r = a.ombra("db", "mount", "db1", check=False)
    assert r.rc == 75 and "handed off at epoch 1" in r.err, r.describe()
    a.restart("store")
    wait_for("the restarted store's directory", lambda: "handed off at epoch 1: not mounted"
             in store_log(a))
    assert not mounted(a, "db1") and mounted(a, "db2")
    _, numbered2, names2 = gen_files(a, "db1")
    assert names2 == names  # nothing started a generation

    # An aborted switchover: the DAG names a again at a greater epoch; it mounts and goes on
    # with the next generation, the mail all there.
    key = f"/ombra/dag/{DAG}/active/{db_id}"
    bed.etcd_put(key, json.dumps({"server": "a", "epoch": 2, "since_gen": gen + 1,
                                  "since_ns": time.time_ns(), "why": "switchover aborted"}))
    wait_for("db1 mounted again", lambda: mounted(a, "db1"))
    assert a.db_show("db1")["gen_current"] == gen + 1
    assert a.digest("db1") == digest
    assert lease(a, 60000)["db1"]["epoch"] == 2
    ack, _, _ = deliver(a, "db1", b"after the aborted switchover")
    assert ack["epoch"] == 2 and ack["id"] > max(ids)
    assert "database db1: taking commits at epoch 2 on server a" in store_log(a)

    # The DAG names b active: a's store refuses mail with the retryable answer naming b.
    bed.etcd_put(key, json.dumps({"server": "b", "epoch": 3, "since_gen": gen + 2}))
    wait_for("db1 dismounted on a", lambda: not mounted(a, "db1"))
    _, r, _ = deliver(a, "db1", b"to the wrong server", check=False)
    assert r.rc == 75 and "active on server b" in r.err and "WrongServer" in r.err, r.describe()
