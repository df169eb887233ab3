"""The primary active manager (issue 19, its first piece; spec §8): one ombra-repld of the DAG
holds the pam key in etcd, bound to its server's lease; when that service dies or pauses, the
lease lapses and another server's takes it; the one that comes back does not take it back, and
every server's service agrees on who it is. Real servers in namespaces, a real etcd."""
import json
import signal
import time

import pytest

from dag.test_replication import setup_dag

LEASE = 2


def status(s):
    return json.loads(s.ombra("dag", "status", "--json", "--etcd", s.bed.etcd_url).out)


def primary(s):
    p = status(s)["primary"]
    return (p["server"], p["term"]) if p else (None, 0)


def wait_primary(s, pred, seconds, what):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = primary(s)
        if pred(got):
            return got
        time.sleep(0.1)
    pytest.fail(f"{what}: the primary is {primary(s)} after {seconds} s")


def local_views(bed):
    """Each server's ombra-repld's own idea of the primary (its admin socket)."""
    return {s.server: status(s)["local"].get("primary") for s in (bed.a, bed.b, bed.c)}


@pytest.mark.dag_long
def test_one_primary_another_takes_over_when_it_dies_or_pauses_and_the_old_one_does_not_return(
        dag_bed):
    bed = dag_bed(3)
    servers = {s.server: s for s in (bed.a, bed.b, bed.c)}
    setup_dag(bed, list(servers.values()), lease_s=LEASE)
    first, term = wait_primary(bed.a, lambda p: p[0], 10, "no primary elected")
    end = time.monotonic() + 10  # every service learns it within a round (a third of a lease)
    while set(local_views(bed).values()) != {first}:
        assert time.monotonic() < end, local_views(bed)
        time.sleep(0.2)
    out = bed.a.ombra("dag", "status", "--etcd", bed.etcd_url).out
    assert f"primary active manager: {first} (term {term}" in out, out

    # the primary's service killed: another server's takes over once its lease lapses
    t0 = time.monotonic()
    servers[first].kill9("repld")
    second, term2 = wait_primary(bed.a, lambda p: p[0] not in (None, first), LEASE * 3 + 3,
                                 "no new primary after the old one's service died")
    took = time.monotonic() - t0
    print(f"\nnew primary {second} {took:.1f} s after the primary's service died (lease {LEASE} s)")
    assert term2 > term and took <= LEASE * 3 + 3
    # it comes back: it does not take the primary back
    servers[first].start_repld(args=("--lease-seconds", str(LEASE)))
    time.sleep(LEASE * 2)
    assert primary(bed.a) == (second, term2)

    # the primary's service paused (SIGSTOP): its lease lapses, another takes over; resumed, it
    # learns that it is no longer the primary
    p = servers[second].process("repld")
    p.send_signal(signal.SIGSTOP)
    try:
        third, term3 = wait_primary(bed.a, lambda q: q[0] not in (None, second), LEASE * 3 + 3,
                                    "no new primary after the primary's service paused")
    finally:
        p.send_signal(signal.SIGCONT)
    assert term3 > term2
    end = time.monotonic() + 10
    while set(local_views(bed).values()) != {third}:
        assert time.monotonic() < end, local_views(bed)
        time.sleep(0.2)
