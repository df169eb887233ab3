"""Joining a DAG (issue 17): a server's file directory goes into etcd once (`ombra dag
add-server NAME` run on NAME), its databases active there, and its store runs on the etcd
directory from then on. A passive copy is never mounted in a store; a name the DAG has already
refuses the whole import."""
import json
import time

from dag.dagbed import REPLD_PORT
from dag.test_replication import wait_copy

DAG = "dj"


def add_server(bed, s, ca, **kw):
    """`dag add-server S` on S itself (it joins); on the CA's machine first when S is not it
    (its certificate issued into S's dag folder)."""
    addr = ["--address", f"{s.addr}:{REPLD_PORT}", "--etcd", bed.etcd_url]
    if s is not ca:
        ca.ombra("dag", "add-server", s.server, *addr, "--out", str(s.home / "dag"))
    return s.ombra("dag", "add-server", s.server, *addr, **kw)


def dag_status(s, bed):
    return json.loads(s.ombra("dag", "status", "--json", "--etcd", bed.etcd_url).out)


def test_a_server_joins_with_its_databases_and_a_passive_copy_is_never_mounted(dag_bed):
    bed = dag_bed(3)
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "new", "mail1")
    a.ombra("db", "new", "mail2")
    before = a.deliver("mail1", "alice", b"delivered before the join")
    ids = {d["name"]: d["id"] for d in a.db_list()}
    c.ombra("db", "new", "mail2")  # c's own mail2: another database of that name

    a.ombra("dag", "init", DAG, "--etcd", bed.etcd_url)
    r = add_server(bed, a, a)
    assert "mail1, mail2" in r.out and "active on this server" in r.out, r.describe()
    st = dag_status(a, bed)
    dbs = {d["name"]: d for d in st["databases"]}
    assert set(dbs) == {"mail1", "mail2"}
    for name in dbs:
        assert (dbs[name]["id"], dbs[name]["active"], dbs[name]["epoch"]) == (ids[name], "a", 1)
    conf = json.loads((a.home / "directory.json").read_text())
    assert (conf["etcd"], conf["dag"], conf["server"]) == (bed.etcd_url, DAG, "a")
    # Joining again changes nothing.
    assert "already" in add_server(bed, a, a).out

    # Mail goes on, and after a restart the store reads its databases from etcd.
    after = a.deliver("mail1", "alice", b"delivered after the join")
    a.restart("store")
    assert "in etcd at" in a.stderr(run=a.starts)
    assert a.get("mail1", "alice", before) == b"delivered before the join"
    assert a.get("mail1", "alice", after) == b"delivered after the join"
    assert {d["name"]: d["mounted"] for d in a.db_list()} == {"mail1": True, "mail2": True}
    a.deliver("mail2", "bob", b"on etcd")

    # c has a mail2 of its own: refused in one line, nothing of c imported, c still on its file.
    r = add_server(bed, c, a, check=False)
    assert r.rc != 0 and r.err.count("\n") == 1 and "mail2" in r.err, r.describe()
    assert "etcd" not in json.loads((c.home / "directory.json").read_text())
    assert {d["name"] for d in dag_status(a, bed)["databases"]} == {"mail1", "mail2"}
    assert not [k for k in bed.etcd_get(f"/ombra/dag/{DAG}/databases/", prefix=True)
                if k.endswith(c.db_show("mail2")["id"])]
    c.deliver("mail2", "carol", b"still served from the file directory")

    # b joins (no databases) and gets a passive copy of mail1: its store never mounts it, not
    # even when the record names paths for it and marks it mounted.
    add_server(bed, b, a)
    a.start_repld()
    b.start_repld()
    a.ombra("db", "copy", "add", "mail1", "--server", "b", "--etcd", bed.etcd_url)
    key = f"/ombra/dag/{DAG}/databases/{ids['mail1']}"
    rec = json.loads(bed.etcd_get(key))
    assert set(rec["copies"]) == {"a", "b"} and rec["copies"]["a"]["edb"].startswith(str(a.home))
    folder = b.home / "copies" / ids["mail1"]
    rec["copies"]["b"].update(edb=str(folder / "mail1.edb"), logs=str(folder / "logs"),
                              mounted=True)
    bed.etcd_put(key, json.dumps(rec))
    b.restart("store")
    shown = b.db_show("mail1")
    assert shown["mounted"] is False, shown
    r = b.ombra("db", "mount", "mail1", check=False)
    assert r.rc != 0 and "not active on this server" in r.err and "names a active" in r.err
    r = b.ombra("mail", "list", "mail1", "alice", check=False)
    assert r.rc != 0
    assert "mounted mail1" not in b.stderr(run=b.starts)
    # The passive copy goes on: what a delivers reaches it.
    a.deliver("mail1", "alice", b"after the passive's store restarted")
    a.ombra("db", "dismount", "mail1")
    a.ombra("db", "mount", "mail1")
    closed = a.db_show("mail1")["gen_current"] - 1
    wait_copy(a, bed, "mail1", "b", lambda cp: cp["state"] == "Healthy" and cp["replayed"] >= closed)


def test_a_store_on_etcd_that_cannot_reach_it_says_so_and_retries(dag_bed):
    bed = dag_bed(1)
    a = bed.a
    a.ombra("db", "new", "mail1")
    a.ombra("dag", "init", DAG, "--etcd", bed.etcd_url)
    add_server(bed, a, a)
    m = a.deliver("mail1", "alice", b"before etcd went away")
    a.term("store")
    bed.etcd_kill9()
    a.start()  # the socket is up: it answers status, and says why nothing else
    r = a.ombra("db", "list", check=False)
    assert r.rc != 0 and r.err.count("\n") == 1 and "not reached yet" in r.err, r.describe()
    deadline = time.monotonic() + 10  # the connector's first attempt may still be under way
    while "etcd not reached" not in a.stderr(run=a.starts):
        assert time.monotonic() < deadline, a.stderr(run=a.starts)
        time.sleep(0.1)
    bed.etcd_restart()
    deadline = time.monotonic() + 40
    while a.ombra("db", "list", check=False).rc != 0:
        assert time.monotonic() < deadline, a.stderr()
        time.sleep(0.5)
    assert a.get("mail1", "alice", m) == b"before etcd went away"
