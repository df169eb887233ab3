"""--json of the DAG's commands (issue 20, docs/cli.md): dag init, dag add-server and db copy
add|suspend|resume|reseed|remove each print exactly one JSON object with json_version, naming
the database {"id", "name"}; a refusal with --json is one {"error"} document."""
import json

from dag.conftest import copy_of
from dag.dagbed import REPLD_PORT

DAG = "dj"


def one_doc(r, keys):
    d = json.loads(r.out)  # one document, nothing else on stdout
    assert isinstance(d, dict) and d.get("json_version") == 1, r.describe()
    assert set(d) >= set(keys) | {"json_version"}, (sorted(d), keys, r.describe())
    return d


def one_error(r, name=None):
    assert r.rc != 0, r.describe()
    d = one_doc(r, {"error"})
    assert set(d) == {"error", "json_version"} and d["error"]["exit"] == r.rc, r.describe()
    assert name is None or d["error"]["name"] == name, r.describe()
    return d["error"]


def test_dag_and_copy_commands_print_one_json_document(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    etcd = ("--etcd", bed.etcd_url)
    db = a.ombra("db", "new", "db1", "--json")
    ref = {"id": json.loads(db.out)["id"], "name": "db1"}

    d = one_doc(a.ombra("dag", "init", DAG, *etcd, "--json"), {"dag", "ca_dir", "ca_fingerprint"})
    assert d["dag"] == DAG and d["ca_dir"] == str(a.home / "dag"), d
    assert len(d["ca_fingerprint"]) == 64, d
    one_error(a.ombra("dag", "init", DAG, *etcd, "--json", check=False), "DatabaseDuplicate")
    # a itself: its certificate next to the authority, its directory (db1) into the DAG
    d = one_doc(a.ombra("dag", "add-server", "a", "--address", f"{a.addr}:{REPLD_PORT}", *etcd,
                        "--json"),
                {"server", "dag", "address", "cert_dir", "fingerprint", "issued", "joined"})
    assert (d["server"], d["dag"], d["issued"]) == ("a", DAG, True), d
    assert d["joined"] == {"already": False, "databases": [ref]}, d
    # b: its certificate issued here into b's folder; b's store is not asked
    d = one_doc(a.ombra("dag", "add-server", "b", "--address", f"{b.addr}:{REPLD_PORT}", *etcd,
                        "--out", b.home / "dag", "--json"),
                {"server", "cert_dir", "fingerprint", "issued", "joined"})
    assert (d["server"], d["cert_dir"], d["joined"]) == ("b", str(b.home / "dag"), None), d
    a.start_repld()
    b.start_repld()

    keys = {"database", "server", "action", "source", "state"}
    d = one_doc(a.ombra("db", "copy", "add", "db1", "--server", "b", *etcd, "--json"),
                keys | {"seeding_postponed"})
    assert (d["database"], d["server"], d["action"], d["state"]) == (ref, "b", "added", "Healthy")
    assert copy_of(a, bed, "db1", "b")["state"] == "Healthy"
    for action, done in (("suspend", "suspended"), ("resume", "resumed")):
        d = one_doc(a.ombra("db", "copy", action, "db1", "--server", "b", *etcd, "--json"), keys)
        assert (d["database"], d["action"], d["source"], d["state"]) == (ref, done, None, None), d
    d = one_doc(a.ombra("db", "copy", "reseed", "db1", "--server", "b", *etcd, "--json"), keys)
    assert (d["database"], d["action"], d["state"]) == (ref, "reseeded", "Healthy"), d
    one_error(a.ombra("db", "copy", "suspend", "db1", "--server", "a", *etcd, "--json",
                      check=False), "InvalidParameter")  # a holds the active copy
    one_error(a.ombra("db", "copy", "remove", "nosuch", "--server", "b", *etcd, "--json",
                      check=False), "DatabaseNotFound")
    d = one_doc(a.ombra("db", "copy", "remove", "db1", "--server", "b", *etcd, "--json"), keys)
    assert (d["database"], d["server"], d["action"]) == (ref, "b", "removed"), d
    one_error(a.ombra("db", "copy", "remove", "db1", "--server", "b", *etcd, "--json",
                      check=False))
    # the text is as it was
    r = a.ombra("db", "copy", "add", "db1", "--server", "b", "--wait-seconds", "0", *etcd)
    assert r.out == "copy of db1 added on b\n", r.describe()
