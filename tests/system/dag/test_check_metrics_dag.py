"""ombra check and ombra metrics in a DAG (issue 20): ombra-repld is one of the daemons checked,
each copy's state is a check line, and the copy and replay queues are metrics equal to what
`db copy status` says."""
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dag.conftest import roll, wait_copy
from dag.test_replication import setup_dag


def samples(text):
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(m, name, **labels):
    hits = [v for (n, ls), v in m.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) == 1, f"{name}{labels}: {hits}"
    return hits[0]


def has_line(r, status, text):
    return any(l.startswith(status + " ") and text in l for l in r.out.splitlines()[1:])


def test_check_and_metrics_see_the_copies_and_the_replication_service(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Healthy")
    repo = a.dir / "repo"
    a.ombra("repo", "init", repo)
    a.ombra("backup", "--repo", repo, "--type", "full", "--from", "active", "db1")
    # The backup closed a generation. The copy queue counts from the generation the active's
    # row in etcd names, which its ombra-repld renews a moment later: so the metrics are read
    # once b has copied it, as both the status and the metrics say.
    end = time.monotonic() + 60
    while True:
        c = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Healthy" and c["copy_queue"] == 0)
        m = samples(a.ombra("metrics").out)
        if value(m, "ombra_copy_queue_length", database="db1", server="b") == 0:
            break
        assert time.monotonic() < end, f"the metrics' copy queue stayed above 0: {c}"
        time.sleep(0.3)
    r = a.ombra("check", "--repo", repo, check=False)
    assert r.rc == 0, r.describe()
    assert has_line(r, "OK", "ombra-repld: ombra-repld answers"), r.describe()
    assert has_line(r, "OK", "copy db1 on b: the copy of db1 on b is Healthy"), r.describe()
    assert has_line(r, "OK", "copy db1 on a: the copy of db1 on a is Mounted"), r.describe()
    assert value(m, "ombra_up", daemon="ombra-repld") == 1
    assert value(m, "ombra_copy_state", database="db1", server="b", state="Healthy") == 1

    # A suspended copy: a WARNING, and its copy queue grows in the metrics as in copy status.
    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    roll(a, "db1", 2)
    c = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Suspended" and c["copy_queue"] >= 2,
                  seconds=20, what="the copy queue")
    r = a.ombra("check", "--repo", repo, check=False)
    assert r.rc == 1, r.describe()
    assert has_line(r, "WARNING", "copy db1 on b: the copy of db1 on b is Suspended"), r.describe()
    m = samples(a.ombra("metrics").out)
    assert value(m, "ombra_copy_queue_length", database="db1", server="b") == c["copy_queue"]
    assert value(m, "ombra_copy_state", database="db1", server="b", state="Suspended") == 1

    # The replication service stopped: CRITICAL, and ombra_up says which daemon.
    a.term("repld")
    r = a.ombra("check", check=False)
    assert r.rc == 2 and has_line(r, "CRITICAL", "ombra-repld: ombra-repld does not answer"), \
        r.describe()
    m = samples(a.ombra("metrics").out)
    assert value(m, "ombra_up", daemon="ombra-repld") == 0
