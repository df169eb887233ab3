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
