"""Resync after a change of active (issue 19; docs/design.md "Resync after a change of active"):
the copier's side of a failover. The active manager is not in these tests: they do its steps
themselves, as it will: ask the chosen copy's ombra-repld to activate it (admin op
copy.activate), then write active/<id> = {server, epoch + 1, since_gen} and the new active's
paths in databases/<id> in one etcd transaction, so that its store mounts it.

What a user relies on: an activated copy mounts holding everything the active acknowledged
(with synchronous copies, a commit held only in the copy's stream too); a copy that followed the
deposed active and got generations the new active never had sets them aside and follows the
new active, ending with its digest; a copy whose database replayed past the fork reseeds itself
and comes back Healthy; the deposed active, back, keeps its store's files where they were and is
reseeded beside them; a log request of another epoch than the DAG's is refused."""
import base64
import json
import os
import socket
import ssl
import struct
import time

import pytest

from dag.conftest import close_generation, copy_folder, passive_digest, roll, wait_copy
from dag.dagbed import REPLD_PORT
from dag.test_replication import DAG, repld_log, setup_dag

DB = "db1"


def _b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def key(suffix):
    return f"/ombra/dag/{DAG}/{suffix}"


def record(bed, suffix):
    v = bed.etcd_get(key(suffix))
    return json.loads(v) if v else None


def setup_joined(bed, servers):
    """setup_dag, then every server's store joins (its directory in etcd), so that a store
    mounts what active/<id> names it active for."""
    setup_dag(bed, servers)
    for s in servers[1:]:
        s.ombra("dag", "add-server", s.server, "--address", f"{s.addr}:{REPLD_PORT}", "--etcd",
                bed.etcd_url)


def repld_call(s, obj, timeout=60):
    """One request on server s's ombra-repld admin socket (<run>/repl.sock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(s.run_dir / "repl.sock"))
    try:
        sock.sendall(s.frame(obj))
        return s.read_reply(sock)
    finally:
        sock.close()


def activate(s, db_id, through=0, use_stream=False, timeout_ms=5000):
    r = repld_call(s, {"op": "copy.activate", "db": db_id, "through_gen": through,
                       "use_stream": use_stream, "timeout_ms": timeout_ms})
    assert r and r.get("ok"), r
    return r


def make_active(bed, s, db_id, since_gen, sync_copies=None):
    """The active manager's transaction: active/<id> names s at the next epoch from since_gen,
    and s's copy folder is the record's path of s's copy, mounted."""
    dbrec = record(bed, f"databases/{db_id}")
    act = record(bed, f"active/{db_id}")
    epoch = act.get("epoch", 1) + 1
    folder = s.home / "copies" / db_id
    dbrec["copies"][s.server].update(edb=str(folder / f"{dbrec['name']}.edb"),
                                     logs=str(folder / "logs"), mounted=True)
    if sync_copies is not None:
        dbrec["sync_copies"] = sync_copies
    act = dict(server=s.server, epoch=epoch, since_gen=since_gen, since_ns=time.time_ns(),
               why="test")
    puts = [{"requestPut": {"key": _b64(key(k)), "value": _b64(json.dumps(v))}}
            for k, v in ((f"databases/{db_id}", dbrec), (f"active/{db_id}", act))]
    r = bed.etcd_request("/v3/kv/txn", {"success": puts})
    assert r.get("succeeded", True), r
    return epoch


def wait_mounted(s, db, seconds=60):
    end = time.time() + seconds
    while time.time() < end:
        r = s.ombra("db", "show", db, "--json", check=False)
        if r.rc == 0 and json.loads(r.out).get("mounted"):
            return
        time.sleep(0.3)
    pytest.fail(f"{db} never mounted on {s.server}:\n{s.stderr()}")


def dbutil_digest(s, folder, db):
    return s.ombra("dbutil", "digest", str(folder / f"{db}.edb"), "--logs",
                   str(folder / "logs")).out.strip()


def closed_gen(s, db):
    return s.db_show(db)["gen_current"] - 1


def copied_through(bed, s, db, server, gen, seconds=90, what="copying"):
    return wait_copy(s, bed, db, server, lambda c: c["state"] == "Healthy" and c["copied"] >= gen,
                     seconds=seconds, what=what)


def test_activation_with_the_stream_mounts_every_acknowledged_commit(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_joined(bed, [a, b])
    a.ombra("db", "new", DB)
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    db_id = a.db_show(DB)["id"]
    roll(a, DB, 2)
    a.ombra("db", "set", DB, "--sync-copies", "1", "--etcd", bed.etcd_url)
    ids = [a.deliver(DB, "box", f"synchronous {i}".encode()) for i in range(10)]
    want = a.digest(DB)
    open_gen = a.db_show(DB)["gen_current"]
    a.kill9("store")  # the active is lost; its last commits are in b's stream only
    a.kill9("repld")

    r = activate(b, db_id, use_stream=True, timeout_ms=3000)
    assert r["used_stream"] and r["last_gen"] == open_gen - 1 and r["lost_from"] == open_gen, r
    folder = copy_folder(bed, b, DB)
    assert (folder / "logs" / "E00.log").stat().st_size == 1 << 20
    assert dbutil_digest(b, folder, DB) == want  # eng's own mount of the activated copy
    # activated: the copier copies nothing more, and a second activation is refused
    again = repld_call(b, {"op": "copy.activate", "db": db_id})
    assert not again["ok"] and "activated already" in again["message"], again

    make_active(bed, b, db_id, r["lost_from"], sync_copies=0)
    wait_mounted(b, DB)
    assert b.digest(DB) == want
    assert b.get(DB, "box", ids[-1]) == b"synchronous 9"
    b.deliver(DB, "box", b"on the new active")
    assert f"copy of {DB} activated" in repld_log(b)


@pytest.mark.dag_long
def test_a_copy_without_its_database_or_of_another_server_is_not_activated(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_joined(bed, [a, b])
    a.ombra("db", "new", DB)
    a.ombra("db", "copy", "add", DB, "--server", "b", "--etcd", bed.etcd_url)
    db_id = a.db_show(DB)["id"]
    r = repld_call(a, {"op": "copy.activate", "db": db_id})  # a holds the active, no copier
    assert not r["ok"] and "is active on this server (a) already" in r["message"], r
    a.ombra("db", "copy", "suspend", DB, "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "b", lambda c: c["state"] == "Suspended", what="suspending")
    r = repld_call(b, {"op": "copy.activate", "db": db_id})
    assert not r["ok"] and "suspended" in r["message"], r
    a.ombra("db", "copy", "resume", DB, "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "b", lambda c: c["state"] == "Healthy", what="resuming")
    # more than the active gives: refused, and the copy goes on as before
    r = repld_call(b, {"op": "copy.activate", "db": db_id, "through_gen": 500,
                       "timeout_ms": 1000})
    assert not r["ok"] and "not through 500" in r["message"], r
    roll(a, DB, 1)
    copied_through(bed, a, DB, "b", closed_gen(a, DB), what="copying after a refused activation")


def stale_log_wait(bed, s, peer, db_id, epoch):
    """A log.wait to s's replication port at epoch, over TLS with peer's certificate of the
    DAG: the reply header."""
    dag = peer.home / "dag"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(str(dag / "ca.crt"))
    ctx.load_cert_chain(str(dag / "server.crt"), str(dag / "server.key"))
    ctx.check_hostname = False
    raw = socket.create_connection((s.addr, REPLD_PORT), timeout=10)
    with ctx.wrap_socket(raw) as t:
        hdr = json.dumps({"op": "log.wait", "db": db_id, "name": DB, "after": 0,
                          "timeout_ms": 0, "epoch": epoch}).encode()
        t.sendall(struct.pack("<I", len(hdr)) + hdr + struct.pack("<I", 0))

        def exactly(n):
            b = b""
            while len(b) < n:
                c = t.recv(n - len(b))
                assert c, "the replication service closed the connection"
                b += c
            return b
        (n,) = struct.unpack("<I", exactly(4))
        reply = json.loads(exactly(n))
        (m,) = struct.unpack("<I", exactly(4))
        exactly(m)
        return reply


@pytest.mark.dag_long
def test_after_a_failover_every_copy_follows_the_new_active(dag_bed):
    """a active; b falls behind (suspended) and becomes the new active; c (a replay lag: it
    copied the deposed active's last generations without replaying them) sets them aside and
    follows b; d (replayed them) reseeds itself; a, back, is reseeded beside its store's files."""
    bed = dag_bed(4)
    a, b, c, d = bed.a, bed.b, bed.c, bed.d
    setup_joined(bed, [a, b, c, d])
    a.ombra("db", "new", DB)
    for s, lag in ((b, None), (c, "3600"), (d, None)):
        a.ombra("db", "copy", "add", DB, "--server", s.server, "--etcd", bed.etcd_url,
                *(["--replay-lag", lag] if lag else []))
    db_id = a.db_show(DB)["id"]
    roll(a, DB, 2)
    close_generation(a, DB)
    fork = closed_gen(a, DB)
    for s in (b, c, d):
        copied_through(bed, a, DB, s.server, fork)
    a.ombra("db", "copy", "suspend", DB, "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, DB, "b", lambda x: x["state"] == "Suspended", what="suspending")
    roll(a, DB, 3)  # the generations b will never have
    close_generation(a, DB)
    last = closed_gen(a, DB)
    assert last > fork
    copied_through(bed, a, DB, "c", last)
    wait_copy(a, bed, DB, "d", lambda x: x["replayed"] >= last, what="d replaying")
    a.kill9("store")
    a.kill9("repld")

    # the failover: b, with generations through fork only
    a.ombra("db", "copy", "resume", DB, "--server", "b", "--etcd", bed.etcd_url)
    r = activate(b, db_id, timeout_ms=2000)
    assert r["last_gen"] == fork and r["lost_from"] == fork + 1, r
    epoch = make_active(bed, b, db_id, fork + 1)
    wait_mounted(b, DB)
    for i in range(20):
        b.deliver(DB, f"box{i % 3}", f"on the new active {i}".encode())
    roll(b, DB, 2)
    close_generation(b, DB)
    want = b.digest(DB)
    now = closed_gen(b, DB)

    # a log request of the old epoch is refused, of the new one served
    old = stale_log_wait(bed, b, c, db_id, epoch - 1)
    assert not old["ok"] and "epoch" in old["message"] and old["error"] == -1091, old
    assert stale_log_wait(bed, b, c, db_id, epoch)["ok"]

    # c: the deposed active's generations set aside, then b's copied
    copied_through(bed, b, DB, "c", now, what="c following the new active")
    aside = list((copy_folder(bed, c, DB) / "divergent").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(f"{epoch}-"), aside
    names = sorted(p.name for p in aside[0].iterdir())
    for g in range(fork + 1, last + 1):
        assert f"E00{g:08X}.log" in names, names
    assert "set aside" in repld_log(c)
    assert "reseed" not in repld_log(c).split("set aside", 1)[1]
    assert record(bed, f"copies/{db_id}/c")["epoch"] == epoch
    assert passive_digest(bed, c, DB) == want

    # d: its database replayed past the fork: it reseeded itself from b
    copied_through(bed, b, DB, "d", now, what="d reseeded from the new active")
    assert "diverged from the new active (b, epoch 2) at generation" in repld_log(d)
    assert f"seeded {DB} ({db_id}) from b" in repld_log(d)
    assert (copy_folder(bed, d, DB) / "divergent").is_dir()
    assert passive_digest(bed, d, DB) == want

    # a, back: its store does not mount it; its copier sets its divergent generations aside
    # from the store's folder, leaves the store's files there and is reseeded into copies/
    store_edb = record(bed, f"databases/{db_id}")["copies"]["a"]["edb"]
    a.restart("store")
    a.restart("repld")
    copied_through(bed, b, DB, "a", now, seconds=120, what="the deposed active reseeded")
    assert os.path.exists(store_edb), "the deposed active's own files were deleted"
    assert "edb" not in record(bed, f"databases/{db_id}")["copies"]["a"]
    assert "diverged from the new active" in repld_log(a)
    assert passive_digest(bed, a, DB) == want
