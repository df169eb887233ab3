"""Fixtures of the DAG tests: `dag_bed(n)` builds a test bed of n servers (1 to 4) in network
namespaces with a real etcd (dagbed.py says how); `dag` is a bed of three servers. Root only:
without root, iproute2 or etcd the tests skip and say why. Everything a bed made is removed at
teardown, however the test ended; a failing test shows the tail of every daemon's log and keeps
the bed's temp directory (so does OMBRA_KEEP_TMP=1)."""
import json
import os
import time

import pytest

from dag import dagbed


def pytest_configure(config):
    config.addinivalue_line("markers", "nemesis: the nemesis's end-to-end run (test_nemesis.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for bed in getattr(item, "_ombra_dag_beds", ()):
            rep.sections.append((f"DAG test bed {bed.rand} logs", bed.logs()))


@pytest.fixture
def dag_bed(build_dir, request):
    """dag_bed(n=3, etcd_members=1) -> a started dagbed.Bed: bed.a .. bed.d (dagbed.Server),
    bed.etcd_url. Beds a test did not close are closed at its teardown."""
    reason = dagbed.skip_reason()
    if reason:
        pytest.skip(reason)
    beds = []
    request.node._ombra_dag_beds = beds

    def make(n=3, etcd_members=1):
        bed = dagbed.Bed(build_dir, n, etcd_members)
        beds.append(bed)
        return bed.start()

    yield make
    keep = getattr(request.node, "_ombra_failed", False)
    failures = []
    for bed in beds:
        try:
            bed.close(keep=keep)
        except BaseException as e:  # every bed is closed even when one fails
            failures.append(str(e))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def dag(dag_bed):
    """A bed of three servers a, b, c (store and vssd running in each) and one etcd member."""
    return dag_bed(3)


# ---- copies: what the replication tests read and wait for

def copy_status(s, bed, db=None):
    args = ["db", "copy", "status", "--json", "--etcd", bed.etcd_url] + ([db] if db else [])
    return json.loads(s.ombra(*args).out)["copies"]


def copy_of(s, bed, db, server):
    for c in copy_status(s, bed, db):
        if c["server"] == server:
            return c
    return None


def wait_copy(s, bed, db, server, pred, seconds=60, what="the copy"):
    end = time.time() + seconds
    last = None
    while time.time() < end:
        last = copy_of(s, bed, db, server)
        if last and pred(last):
            return last
        time.sleep(0.3)
    pytest.fail(f"{what} of {db} on {server} never got there: {last}")


def roll(s, db, n=1, size=300000):
    """Deliveries big enough to close n generations (a generation is 1 MiB of log)."""
    ids = []
    for i in range(n * 4):
        ids.append(s.deliver(db, f"roll{i % 5}", os.urandom(size // 2).hex().encode()))
    return ids


def drained(s, bed, db, server):
    """Waits until the passive has replayed every generation the active s closed so far."""
    closed = s.db_show(db)["gen_current"] - 1

    def ok(c):
        return (c["state"] == "Healthy" and c["copy_queue"] == 0 and c["replay_queue"] == 0
                and c["replayed"] >= closed)
    return wait_copy(s, bed, db, server, ok, what=f"replaying through generation {closed}")


def copy_folder(bed, s, db):
    """Where server s keeps its passive copy of db: $OMBRA_HOME/copies/<db id>."""
    return s.home / "copies" / copy_of(bed.a, bed, db, s.server)["database"]["id"]


def passive_digest(bed, s, db):
    """The digest of the passive copy on server s: suspended, mounted offline on a scratch
    copy (dbutil digest: as a failover would mount it), resumed."""
    a = bed.a
    a.ombra("db", "copy", "suspend", db, "--server", s.server, "--etcd", bed.etcd_url)
    wait_copy(a, bed, db, s.server, lambda c: c["state"] == "Suspended", what="suspending")
    home = copy_folder(bed, s, db)
    d = s.ombra("dbutil", "digest", str(home / f"{db}.edb"), "--logs", str(home / "logs"))
    a.ombra("db", "copy", "resume", db, "--server", s.server, "--etcd", bed.etcd_url)
    return d.out.strip()


def close_generation(a, db):
    """The active's current generation closed (dismount, mount: the next mount starts the next
    one), so the passives can copy all that was acknowledged."""
    a.ombra("db", "dismount", db)
    a.ombra("db", "mount", db)


def copies_match(bed, active, db, passives):
    """The end of most replication tests: the active's digest of db taken, its current generation
    closed (so the passives can copy all that was acknowledged), every passive copy drained, and
    each one's digest (passive_digest) equal to the active's; an assertion naming the copy that
    differs. Returns the digest."""
    want = active.digest(db)
    close_generation(active, db)
    for s in passives:
        drained(active, bed, db, s.server)
    for s in passives:
        assert passive_digest(bed, s, db) == want, f"the copy of {db} on {s.server} differs"
    return want
