"""Attacks on issue 17's replication (ombra-repld, db copy, dag, dbutil digest): each test shows
what an attacker or a careless administrator tried and what must hold (each failed before its
fix: a copy folder keyed by name, a wipe that followed links, two databases of one name)."""
import os
import time

import pytest

from dag.test_replication import (close_generation, dag3, drained,  # noqa: F401 (dag3: fixture)
                                 passive_digest, setup_dag)


def files_of(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


@pytest.mark.dag_long
def test_copy_add_on_a_server_with_its_own_database_of_that_name_leaves_it_alone(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    b.ombra("db", "new", "db1")  # b's own database, not in the DAG
    for i in range(20):
        b.deliver("db1", "mine", f"b's own message {i}".encode())
    want_b = b.digest("db1")
    a.ombra("db", "new", "db1")
    for i in range(20):
        a.deliver("db1", "theirs", f"a's message {i}".encode())
    r = a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url,
                "--wait-seconds", "30", check=False)
    # b's db1 is dismounted a while (maintenance, a store restart): b's repld must keep off it
    b.ombra("db", "dismount", "db1")
    time.sleep(12)
    m = b.ombra("db", "mount", "db1", check=False)
    assert m.rc == 0, f"b's own db1 no longer mounts: {m.describe()}"
    assert b.digest("db1") == want_b, f"b's own db1 changed under it (copy add: {r.describe()})"
    # the copy went elsewhere (its folder is keyed by the database's id) and holds a's mail
    assert r.rc == 0, r.describe()
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    assert passive_digest(bed, b, "db1") == want


def test_a_link_at_the_passive_copy_folder_is_refused_and_nothing_behind_it_deleted(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    a.deliver("db1", "box", b"hello")
    # behind the link: a folder of somebody else's files, laid out as a copy folder
    victim = bed.tmp / "elsewhere"
    (victim / "logs").mkdir(parents=True)
    (victim / "db1.edb").write_bytes(b"not yours" * 1000)
    (victim / "logs" / "E00.chk").write_bytes(b"checkpoint" * 10)
    (victim / "logs" / "E00.log").write_bytes(b"current log" * 100)
    before = files_of(victim)
    (b.home / "copies").mkdir(parents=True, exist_ok=True)
    os.symlink(victim, b.home / "copies" / a.db_show("db1")["id"])
    r = a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url,
                "--wait-seconds", "20", check=False)
    assert files_of(victim) == before, f"files behind the link changed ({r.describe()})"
    # the copy Failed (the .edb behind the link is no database); the administrator reseeds it
    r = a.ombra("db", "copy", "reseed", "db1", "--server", "b", "--etcd", bed.etcd_url,
                "--wait-seconds", "20", check=False)
    time.sleep(2)
    assert files_of(victim) == before, f"files behind the link changed ({r.describe()})"
    assert r.rc != 0 and "link" in r.err.splitlines()[-1], r.describe()


@pytest.mark.dag_long
def test_two_databases_of_one_name_copied_to_one_server_are_refused_or_kept_apart(dag3):
    bed = dag3
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "new", "db1")
    b.ombra("db", "new", "db1")
    for i in range(10):
        a.deliver("db1", "box", f"a's {i}".encode())
        b.deliver("db1", "box", f"b's {i}".encode())
    a.ombra("db", "copy", "add", "db1", "--server", "c", "--etcd", bed.etcd_url)
    r = b.ombra("db", "copy", "add", "db1", "--server", "c", "--etcd", bed.etcd_url,
                "--wait-seconds", "20", check=False)
    if r.rc != 0:  # refused: then with one clear line that says why, and nothing registered
        assert "already" in r.err.splitlines()[-1], r.describe()
    else:  # or kept apart: b's copy on c is Healthy and holds b's db1
        want_b = b.digest("db1")
        close_generation(b, "db1")
        drained(b, bed, "db1", "c")
        assert passive_digest(bed, c, "db1") == want_b
    # a's copy on c is whole
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "c")
    assert passive_digest(bed, c, "db1") == want
