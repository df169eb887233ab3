"""The DAG test bed proves itself (issue 17, "The test bed"): the tests of replication are only
as good as the servers, network and faults under them, so each fault the DAG tests will use is
shown here to do what it says before any of them relies on it.

How to write a DAG test on the bed (tests/system/dag/conftest.py, dagbed.py):

    def test_something(dag_bed):
        bed = dag_bed(3)                       # servers a, b, c and one etcd member (or
                                               # dag_bed(n, etcd_members=3)); the `dag` fixture
                                               # is dag_bed(3)
        a, b = bed.a, bed.b
        a.ombra("db", "new", "db1")            # the CLI inside a's namespace: a Result
        a.deliver("db1", "alice", b"...")      # the system tests' Store helpers all work:
        a.digest("db1"); a.json("db", "list")  #   deliver, get, digest, json, db_show ...
        a.start_repld()                        # ombra-repld --server a --listen ADDR:7100
                                               #   --etcd bed.etcd_url (skips until it is built)
        b.link_down(); b.link_up()             # partition b from everything, etcd included
        b.stop(); b.cont()                     # SIGSTOP / SIGCONT on all of b's daemons
        b.kill9("store"); b.restart("store")   # also "vssd", "repld"; b.kill9_all()
        b.small_log_disk(16)                   # a 16 MiB ext4 mounted for a log folder
        bed.etcd_kill9(); bed.etcd_restart()   # bed.etcd_get(key, prefix=True), etcd_put
        a.tcp(b.addr, 7100)                    # a TCP connect from a's namespace (None: failed)
        a.wait_tcp(b.addr, 7100)               # the same, retried (a healed link takes ~1 s)
        a.reaches_etcd(); a.wait_reaches_etcd()
        bed.etcd_use_tls(ca, crt, key, ccrt, ckey)  # etcd with client certificates

Everything runs as root; without root each test skips saying why. A failing test prints the
tail of every daemon's and etcd's log and keeps the bed's directory (/tmp/omd-*)."""
import errno
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import one_line_refusal, process_stopped
from dag import dagbed

pytestmark = pytest.mark.dag_long  # the bed proves itself in make test-dag; the DAG tests use it in make test



def message(server, i, size=300):
    return (f"From: test@{server}\nSubject: message {i} on {server}\n\n"
            + f"body {i} of {server} " * (size // 20)).encode()


def test_each_server_runs_its_own_store_and_vssd_inside_its_own_namespace(dag_bed):
    bed = dag_bed(4)
    digests = {}
    for s in bed.servers:
        others = [o for o in bed.servers if o is not s]
        for p in (s.proc, s.vssd):
            assert s.owns(p.pid) and not any(o.owns(p.pid) for o in others), \
                f"a daemon of {s.server} is not in namespace {s.ns}"
        r = s.ombra("db", "new", "mbx")
        assert str(s.home) in r.out, f"{s.server}'s database is not under its OMBRA_HOME:\n{r.out}"
        ids = [s.deliver("mbx", "alice", message(s.server, i)) for i in range(3)]
        assert s.get("mbx", "alice", ids[1]) == message(s.server, 1)
        digests[s.server] = s.digest("mbx")
    assert len(set(digests.values())) == 4, f"servers share a database: {digests}"
    # each server's CLI talks to its own store only
    for s in bed.servers:
        assert s.digest("mbx") == digests[s.server]
    assert len({s.addr for s in bed.servers}) == 4


def test_servers_reach_each_other_and_etcd_through_the_bridge(dag):
    a, b, c = dag.a, dag.b, dag.c
    b.listen(9000)
    c.listen(9000)
    assert a.tcp(b.addr, 9000, timeout=3) == "hello from b"
    assert a.tcp(c.addr, 9000, timeout=3) == "hello from c"
    for s in (a, b, c):
        assert s.reaches_etcd(timeout=3), f"{s.server} does not reach etcd at {dag.etcd_url}"
    # what one server writes in etcd, every other reads: one etcd for the bed
    dag.etcd_put("/ombra/testbed/k", "from the root namespace")
    body = b.http_get(dag.etcd_urls[0] + "/version", timeout=3)
    assert body and "etcdserver" in json.loads(body)
    assert dag.etcd_get("/ombra/testbed/k") == b"from the root namespace"


def test_a_link_set_down_cuts_a_server_off_from_servers_and_etcd_until_it_is_up(dag):
    a, b, c = dag.a, dag.b, dag.c
    a.listen(9000)
    b.listen(9000)
    c.listen(9000)
    a.ombra("db", "new", "db1")
    a.deliver("db1", "alice", message("a", 1))
    a.link_down()
    assert a.tcp(b.addr, 9000) is None, "a reaches b over a link that is down"
    assert not a.reaches_etcd(), "a reaches etcd over a link that is down"
    assert b.tcp(a.addr, 9000) is None, "b reaches a over a's link that is down"
    # the others keep each other and etcd; a keeps its own store
    assert b.reaches_etcd(timeout=3) and c.reaches_etcd(timeout=3)
    assert b.tcp(c.addr, 9000, timeout=3) == "hello from c"
    a.deliver("db1", "alice", message("a", 2))
    a.link_up()
    assert a.wait_tcp(b.addr, 9000) == "hello from b", "a does not reach b after link_up"
    assert b.wait_tcp(a.addr, 9000) == "hello from a"
    assert a.wait_reaches_etcd(), "a does not reach etcd after link_up"


def test_sigstop_holds_a_stores_answers_and_sigcont_releases_them(dag_bed):
    a = dag_bed(1).a
    a.ombra("db", "new", "db1")
    a.deliver("db1", "alice", message("a", 1))
    before = a.digest("db1")
    a.stop()
    assert all(process_stopped(p.pid) for p in (a.proc, a.vssd))
    with pytest.raises(subprocess.TimeoutExpired):
        a.ombra("mail", "digest", "db1", timeout=2)
    a.cont()
    assert a.digest("db1") == before
    a.deliver("db1", "alice", message("a", 2))
    assert a.digest("db1") != before


def test_kill9_and_restart_of_a_store_keep_every_acknowledged_message(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    for s in (a, b):
        s.ombra("db", "new", "db1")
    ids = [a.deliver("db1", "alice", message("a", i, 2000)) for i in range(20)]
    b.deliver("db1", "bob", message("b", 0))
    digest_a, digest_b = a.digest("db1"), b.digest("db1")
    assert a.kill9("store") == -9
    r = a.ombra("mail", "digest", "db1", check=False)
    assert one_line_refusal(r), f"a store killed must give one error line:\n{r.describe()}"
    assert b.digest("db1") == digest_b, "killing a's store touched b"
    a.restart("store")
    assert a.owns(a.proc.pid)
    assert a.digest("db1") == digest_a
    assert all(a.get("db1", "alice", i) == message("a", n, 2000) for n, i in enumerate(ids))
    # and the whole server at once, then store and vssd again
    a.kill9_all()
    a.restart("store")
    a.restart("vssd")
    assert a.writer_registered()
    assert a.digest("db1") == digest_a


def fill(path):
    """Writes path until the filesystem says ENOSPC; returns the bytes written."""
    n = 0
    chunk = b"\xa5" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    return n


def test_a_full_log_disk_refuses_deliveries_with_one_line_and_the_store_keeps_serving(dag_bed):
    a = dag_bed(1).a
    disk = a.small_log_disk(16)
    logs = disk / "logs"
    a.ombra("db", "new", "small", "--logs", logs)
    # the store (already running when the disk was mounted) wrote on the small disk itself
    assert any(f.name.endswith(".log") for f in logs.iterdir()), list(logs.iterdir())
    kept = [a.deliver("small", "alice", message("a", i)) for i in range(3)]
    digest = a.digest("small")
    written = fill(disk / "filler")
    assert written < 16 << 20
    refused = None
    for i in range(200):  # 64 KiB messages: the open generation fills within 20 of them
        r = a.ombra("mail", "deliver", "small", "alice", input=message("a", 100 + i, 64 << 10),
                    check=False)
        if r.rc != 0:
            refused = r
            break
    assert refused is not None, "200 deliveries of 64 KiB fitted on a full 16 MiB disk"
    assert one_line_refusal(refused), refused.describe()
    assert "disk" in refused.err.lower() and "HINT" in refused.err, refused.describe()
    assert a.proc.poll() is None, "the store died of a full log disk:\n" + a.stderr()
    assert all(a.get("small", "alice", k) == message("a", n) for n, k in enumerate(kept))
    # room again: deliveries resume by themselves
    (disk / "filler").unlink()
    a.deliver("small", "alice", message("a", 999))
    assert a.digest("small") != digest


def test_etcd_killed_and_restarted_keeps_its_keys(dag_bed):
    bed = dag_bed(2)
    bed.etcd_put("/ombra/testbed/x", "kept")
    bed.etcd_kill9()
    assert not bed.a.reaches_etcd() and not bed.b.reaches_etcd()
    bed.etcd_restart()
    assert bed.etcd_get("/ombra/testbed/x") == b"kept"
    assert bed.a.wait_reaches_etcd()


def test_three_etcd_members_serve_with_one_killed_and_it_catches_up(dag_bed):
    bed = dag_bed(1, etcd_members=3)
    assert len(set(bed.etcd_urls)) == 3
    bed.etcd_put("/ombra/testbed/one", "1")
    bed.etcd_kill9(0)
    bed.etcd_put("/ombra/testbed/two", "2", member=1)
    assert bed.etcd_get("/ombra/testbed/", prefix=True, member=2) == {
        "/ombra/testbed/one": b"1", "/ombra/testbed/two": b"2"}
    bed.etcd_restart(0)
    deadline = time.monotonic() + 10
    while bed.etcd_get("/ombra/testbed/two", member=0) != b"2":
        assert time.monotonic() < deadline, "the restarted member did not catch up"
        time.sleep(0.1)


def test_repld_runs_and_listens_inside_each_namespace(dag_bed):
    from dag.test_replication import setup_dag
    bed = dag_bed(2)
    setup_dag(bed, [bed.a, bed.b])  # dag init, add-server (certificates), ombra-repld on each
    for s in (bed.a, bed.b):
        assert s.owns(s.repld.pid)
    assert bed.b.tcp(bed.a.addr, dagbed.REPLD_PORT, timeout=3) is not None
    bed.a.kill9("repld")
    bed.a.restart("repld")
    assert bed.b.wait_tcp(bed.a.addr, dagbed.REPLD_PORT) is not None


def openssl(*args):
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def test_etcd_with_client_certificates_refuses_a_client_without_one(dag_bed, tmp_path):
    """The hook for the DAG's CA: etcd restarted with --client-cert-auth."""
    bed = dag_bed(1)
    bed.etcd_put("/ombra/testbed/before", "tls")
    ca_key, ca = tmp_path / "ca.key", tmp_path / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca, "-subj", "/CN=testbed CA", "-days", "2")
    certs = {}
    for name, ext in (("etcd", f"subjectAltName=IP:{bed.etcd[0].ip}"),
                      ("client", "extendedKeyUsage=clientAuth")):
        key, csr, crt = (tmp_path / f"{name}.{x}" for x in ("key", "csr", "crt"))
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        (tmp_path / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                "-out", crt, "-days", "2", "-extfile", tmp_path / f"{name}.ext")
        certs[name] = (crt, key)
    bed.etcd_use_tls(ca, *certs["etcd"], *certs["client"])
    assert bed.etcd_url.startswith("https://")
    assert bed.etcd_get("/ombra/testbed/before") == b"tls"  # the bed's client presents its cert
    no_cert = ssl.create_default_context(cafile=str(ca))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(bed.etcd_urls[0] + "/health", timeout=5, context=no_cert).read()
    with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
        urllib.request.urlopen(bed.etcd_urls[0].replace("https:", "http:") + "/health",
                               timeout=5).read()


def links_and_namespaces(rand):
    ns = subprocess.run([dagbed.IP, "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run([dagbed.IP, "-o", "link"], capture_output=True, text=True).stdout
    return [l for l in (ns + links).splitlines() if rand in l]


def test_teardown_leaves_no_namespace_link_mount_or_process_however_the_bed_was_left(dag_bed):
    for round_ in range(2):
        bed = dag_bed(2)
        a, b = bed.a, bed.b
        disk = a.small_log_disk(8)
        a.ombra("db", "new", "ondisk", "--logs", disk / "logs")
        b.listen(9000)
        # the worst state to tear down: a stopped server with a CLI call hanging on it, its
        # logs open on the loop disk, the other server cut off
        a.stop()
        hanging = subprocess.Popen(a.in_ns(a.real_cli, "mail", "digest", "ondisk"), env=a.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        b.link_down()
        pids = [p.pid for p in (a.proc, a.vssd, b.proc, b.vssd, hanging)]
        pids += [m.proc.pid for m in bed.etcd] + [p.pid for p in b.helpers]
        assert links_and_namespaces(bed.rand)
        bed.close()
        hanging.wait(10)
        assert links_and_namespaces(bed.rand) == []
        with open("/proc/self/mountinfo") as f:
            assert str(bed.tmp) not in f.read()
        assert not bed.tmp.exists()
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", \
                f"process {pid} survived the teardown"
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        assert str(bed.tmp) not in loops
        assert bed.leftovers() == []


def test_without_root_the_bed_skips_and_says_why(tmp_path):
    code = "from dag import dagbed; print(dagbed.skip_reason())"
    p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(dagbed.__file__))))
    assert p.returncode == 0, p.stderr
    assert "needs root" in p.stdout, p.stdout
