"""Block mode and synchronous copies (issue 17, "Go past Exchange's file mode"): the active's
log writes streamed to a healthy copy as they are made, so its copy queue stays under one
generation; and `db set --sync-copies N`: a delivery is acknowledged only once N passive copies
hold its log durably, else it fails with a retryable error (exit 75)."""
import os
import threading
import time

import pytest

MIB = 1 << 20

from dag.test_replication import (DAG, close_generation, copy_folder, copy_of, copy_status,
                                  drained, passive_digest, setup_dag, wait_copy)


@pytest.fixture
def dag2(dag_bed):
    bed = dag_bed(2)
    setup_dag(bed, [bed.a, bed.b])
    return bed


def streaming(a, bed, db, server):
    """Waits until the copy on server holds part of the generation the active writes."""
    def ok(c):
        return (c["state"] == "Healthy" and c.get("mode") == "block"
                and c.get("streamed_gen") == a.db_show(db)["gen_current"]
                and c.get("streamed_bytes", 0) > 4096)
    return wait_copy(a, bed, db, server, ok, what="streaming the open generation")


@pytest.mark.dag_long
def test_block_mode_keeps_the_copy_queue_under_one_generation_while_mail_arrives(dag2):
    bed = dag2
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    a.deliver("db1", "box", b"the first message after the seed")
    streaming(a, bed, "db1", "b")
    # Mail arrives for a while (several generations): the copy never falls a whole
    # generation behind, and always holds bytes of the open one.
    stop = threading.Event()
    acked = []

    def mail():
        i = 0
        while not stop.is_set():
            acked.append(a.deliver("db1", f"box{i % 5}", os.urandom(20000).hex().encode()))
            i += 1

    t = threading.Thread(target=mail)
    t.start()
    seen, gens = [], set()
    try:
        end = time.time() + 20
        while time.time() < end:
            c = copy_of(a, bed, "db1", "b")
            seen.append(c)
            gens.add(c["generated"])
            time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    assert len(gens) >= 3, f"mail did not roll generations: {sorted(gens)}"
    # Behind by less than one generation's bytes: the closed generations all copied, or (for
    # the moment a generation closes) the one just closed held in part already.
    def behind(c):
        held = c["streamed_bytes"] if c["streamed_gen"] == c["copied"] + 1 else 0
        return c["copy_queue"] * MIB - held
    late = [(c["generated"], c["copied"], c["streamed_gen"], c["streamed_bytes"]) for c in seen
            if behind(c) >= MIB]
    assert not late, late
    assert all(c["mode"] == "block" for c in seen)
    # The open generation's bytes sit in the copy's folder, never among its logs: only
    # closed, checked generations are replayed.
    cur = a.db_show("db1")["gen_current"]
    c = streaming(a, bed, "db1", "b")
    folder = copy_folder(bed, b, "db1")
    assert (folder / "E00.stream").stat().st_size >= c["streamed_bytes"]
    assert not (folder / "logs" / f"E00{cur:08X}.log").exists()
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    assert passive_digest(bed, b, "db1") == want


def sync_copies(a, bed, db, n, check=True):
    return a.ombra("db", "set", db, "--sync-copies", str(n), "--etcd", bed.etcd_url, check=check)


def test_sync_copies_more_than_the_copies_is_refused(dag2):
    bed = dag2
    a = bed.a
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    r = sync_copies(a, bed, "db1", 3, check=False)
    assert r.rc == 1 and r.err.count("\n") == 1, r.err
    assert "1 passive copy" in r.err and "--sync-copies 3" in r.err and "HINT" in r.err
    # A suspended copy acknowledges nothing: it does not count.
    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    r = sync_copies(a, bed, "db1", 1, check=False)
    assert r.rc == 1 and "0 passive copies not suspended" in r.err, r.err
    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    # Nothing was set: deliveries go on at once, as before.
    a.deliver("db1", "box", b"still asynchronous")
    r = sync_copies(a, bed, "db2", 1, check=False)
    assert r.rc == 1 and "db2" in r.err
    # With --sync-copies 1, the only copy cannot be removed (commits would wait for nothing);
    # once the setting is lowered it can.
    sync_copies(a, bed, "db1", 1)
    r = a.ombra("db", "copy", "remove", "db1", "--server", "b", "--etcd", bed.etcd_url,
                check=False)
    assert r.rc == 1 and r.err.count("\n") == 1, r.err
    assert "--sync-copies 0 first" in r.err, r.err
    assert "b" in a.ombra("db", "copy", "status", "db1", "--etcd", bed.etcd_url).out
    sync_copies(a, bed, "db1", 0)
    a.ombra("db", "copy", "remove", "db1", "--server", "b", "--etcd", bed.etcd_url)


def passive_with_stream(bed, s, db, scratch):
    """What a failover would mount from the passive copy on s: its .edb and closed generations,
    and the streamed part of the open generation as the current log (padded to a log file's
    size, as it will be on the active), laid into scratch."""
    import shutil
    folder = copy_folder(bed, s, db)
    scratch.mkdir()
    shutil.copy(folder / f"{db}.edb", scratch / f"{db}.edb")
    shutil.copytree(folder / "logs", scratch / "logs")
    (scratch / "logs" / "E00.chk").unlink(missing_ok=True)
    cur = scratch / "logs" / "E00.log"
    shutil.copy(folder / "E00.stream", cur)
    with open(cur, "r+b") as f:
        f.truncate(MIB)
    return scratch


@pytest.mark.dag_long  # the short nemesis covers it end to end in make test
def test_sync_copies_1_every_acknowledged_delivery_is_on_the_passive_when_the_active_dies(
        dag2, tmp_path):
    bed = dag2
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    a.deliver("db1", "box", b"before")
    streaming(a, bed, "db1", "b")
    sync_copies(a, bed, "db1", 1)
    time.sleep(3)  # the active's store hears of it with the copy's next stream request
    acked = [a.deliver("db1", f"box{i % 3}", f"synchronous {i}".encode() * 40)
             for i in range(30)]
    a.kill9("store")  # right after the last acknowledgement: nothing more is written
    # The copier stops where it was when the active died, before the active's recovery can
    # close the generation and ship it whole (then there would be no stream left to test).
    b.stop()
    try:
        scratch = passive_with_stream(bed, b, "db1", tmp_path / "failover")
    finally:
        b.cont()
    a.restart("store")  # recovery: the active's own log holds what it acknowledged
    want = a.digest("db1")
    for i, mid in enumerate(acked):
        assert a.get("db1", f"box{i % 3}", str(mid)) == f"synchronous {i}".encode() * 40
    d = b.ombra("dbutil", "digest", str(scratch / "db1.edb"), "--logs", str(scratch / "logs"))
    assert d.out.strip() == want, "an acknowledged delivery is missing from the passive"


@pytest.mark.dag_long  # the short nemesis covers it end to end in make test
def test_sync_copies_1_fails_retryably_while_the_only_copy_is_stopped(dag2):
    bed = dag2
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    sync_copies(a, bed, "db1", 1)
    time.sleep(3)  # the active's store hears of it with the copy's next stream request
    a.deliver("db1", "box", b"acknowledged by the copy")
    b.stop()
    try:
        t0 = time.monotonic()
        r = a.ombra("mail", "deliver", "db1", "box", input=b"no copy to hold it", check=False)
        took = time.monotonic() - t0
    finally:
        b.cont()
    assert r.rc == 75, r.describe()
    assert r.err.count("\n") == 1 and "HINT" in r.err and "synchronous copies" in r.err
    assert took < 10, f"the delivery waited {took:.1f} s"
    # The copy is back: deliveries are acknowledged again.
    end = time.time() + 30
    while True:
        r = a.ombra("mail", "deliver", "db1", "box", input=b"the copy is back", check=False)
        if r.rc == 0 or time.time() > end:
            break
        time.sleep(0.5)
    assert r.rc == 0, r.describe()
    # Asynchronous again with --sync-copies 0: a stopped copy delays nothing.
    sync_copies(a, bed, "db1", 0)
    time.sleep(3)
    b.stop()
    try:
        t0 = time.monotonic()
        a.deliver("db1", "box", b"asynchronous")
        assert time.monotonic() - t0 < 3
    finally:
        b.cont()


@pytest.mark.dag_long
def test_streamed_bytes_damaged_in_transit_are_never_replayed_the_generation_is_fetched_whole(
        dag_bed):
    from dag.conftest import copies_match, roll
    from dag.test_replication import repld_log
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    a.env["OMBRA_REPL_TEST_DAMAGE"] = "4"  # the first bytes of generation 4 a's source sends
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    a.deliver("db1", "box", b"the first message after the seed")
    streaming(a, bed, "db1", "b")
    assert a.db_show("db1")["gen_current"] < 4, "generation 4 began before the copy streamed"
    roll(a, "db1", 4)
    copies_match(bed, a, "db1", [b])
    assert "damaging generation 4 of db1 in transit (streamed bytes" in repld_log(a)
    assert "streamed from a differ from the closed generation" in repld_log(b), repld_log(b)
