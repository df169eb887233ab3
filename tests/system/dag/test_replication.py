"""Continuous replication in a DAG (issue 17): real servers in network namespaces, a real etcd,
ombra-repld on each. Every test checks a user's outcome: what was acknowledged on the active is
readable from each passive copy (digest equality after the queues drain), a copy that was cut
off catches up, a bad generation or a foreign peer gets nowhere."""
import json
import os
import subprocess
import threading
import time

import pytest

from dag.conftest import (close_generation, copies_match, copy_folder, copy_of,  # noqa: F401
                          copy_status, drained, passive_digest, roll, wait_copy)
from dag.dagbed import REPLD_PORT

DAG = "d1"


def setup_dag(bed, servers, lease_s=None):
    """dag init on the first server (which keeps the CA), every server added with its
    certificate in its own $OMBRA_HOME/dag, and its ombra-repld started."""
    a = servers[0]
    a.ombra("dag", "init", DAG, "--etcd", bed.etcd_url)
    if os.environ.get("OMBRA_DAG_DEBUG"):
        for s in servers:
            s.env["OMBRA_DEBUG"] = "1"
    for s in servers:
        args = ["dag", "add-server", s.server, "--address", f"{s.addr}:{REPLD_PORT}",
                "--etcd", bed.etcd_url]
        if s is not a:
            args += ["--out", str(s.home / "dag")]
        a.ombra(*args)
    for s in servers:
        s.start_repld(args=("--lease-seconds", str(lease_s)) if lease_s else ())


def repld_log(s):
    return "\n".join(open(p, errors="replace").read() for label, p in s.daemon_logs
                     if label == "ombra-repld")


@pytest.fixture
def dag3(dag_bed):
    bed = dag_bed(3)
    setup_dag(bed, [bed.a, bed.b, bed.c])
    return bed


@pytest.mark.dag_long
def test_dag_init_refuses_a_second_dag_of_the_same_name_and_a_bad_name(dag_bed):
    bed = dag_bed(1)
    a = bed.a
    a.ombra("dag", "init", DAG, "--etcd", bed.etcd_url)
    r = a.ombra("dag", "init", DAG, "--etcd", bed.etcd_url, check=False)
    assert r.rc == 1 and "already exists" in r.err and r.err.count("\n") == 1
    r = a.ombra("dag", "init", "../x", "--etcd", bed.etcd_url, check=False)
    assert r.rc == 2 and "DAG name" in r.err
    assert (os.stat(a.home / "dag" / "ca.key").st_mode & 0o777) == 0o600


@pytest.mark.dag_long  # the short nemesis covers it end to end in make test
def test_seed_while_mail_arrives_then_every_acknowledged_message_on_each_passive(dag3):
    bed = dag3
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "new", "db1")
    for i in range(50):
        a.deliver("db1", f"box{i % 7}", f"before the seed {i}".encode())
    stop = threading.Event()
    acked = []

    def mail():
        i = 0
        while not stop.is_set():
            acked.append(a.deliver("db1", f"box{i % 7}", f"during the seed {i}".encode() * 50))
            i += 1

    t = threading.Thread(target=mail)
    t.start()
    try:
        a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
        a.ombra("db", "copy", "add", "db1", "--server", "c", "--etcd", bed.etcd_url)
        roll(a, "db1", 2)
    finally:
        stop.set()
        t.join()
    assert len(acked) > 5, "mail did not go on during the seed"
    want = copies_match(bed, a, "db1", [b, c])
    assert a.digest("db1") == want
    st = copy_status(a, bed, "db1")
    assert {x["server"]: x["state"] for x in st} == {"a": "Mounted", "b": "Healthy",
                                                     "c": "Healthy"}


@pytest.mark.dag_long
def test_a_passive_killed_then_restarted_catches_up(dag3):
    bed = dag3
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    roll(a, "db1", 1)
    b.kill9("repld")
    roll(a, "db1", 3)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "ServiceDown", what="the lapsed lease")
    b.restart("repld")
    copies_match(bed, a, "db1", [b])


@pytest.mark.dag_long
def test_a_passive_partitioned_away_then_healed_catches_up(dag3):
    bed = dag3
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    b.link_down()
    try:
        roll(a, "db1", 3)
        time.sleep(1)
    finally:
        b.link_up()
    copies_match(bed, a, "db1", [b])


def test_a_generation_damaged_in_transit_is_refused_and_copied_again(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    a.env["OMBRA_REPL_TEST_DAMAGE"] = "3"  # a's source damages generation 3 once
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    roll(a, "db1", 4)
    copies_match(bed, a, "db1", [b])
    assert "damaging generation 3" in repld_log(a)
    assert "damaged in transit" in repld_log(b)


@pytest.mark.dag_long
def test_suspend_stops_copying_and_resume_catches_up(dag3):
    bed = dag3
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    before = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Suspended")
    roll(a, "db1", 3)
    # the suspended copy's queue grows with what the active writes (its own row of status)
    c = wait_copy(a, bed, "db1", "b", lambda c: c["copy_queue"] >= 2, seconds=15,
                  what="the copy queue")
    assert c["copied"] == before["copied"] and c["state"] == "Suspended"
    assert copy_of(a, bed, "db1", "a")["generated"] == a.db_show("db1")["gen_current"]
    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    copies_match(bed, a, "db1", [b])


def test_reseed_replaces_a_diverged_copy(dag3):
    bed = dag3
    a, b = bed.a, bed.b
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    roll(a, "db1", 1)
    drained(a, bed, "db1", "b")
    # the copy diverges: its .edb is replaced by garbage of the same size while suspended
    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Suspended")
    edb = copy_folder(bed, b, "db1") / "db1.edb"
    size = edb.stat().st_size
    edb.write_bytes(os.urandom(size))
    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Failed" and c["last_error"],
              what="the damaged copy failing")
    a.ombra("db", "copy", "reseed", "db1", "--server", "b", "--etcd", bed.etcd_url)
    copies_match(bed, a, "db1", [b])


def test_a_peer_with_a_certificate_of_another_dag_is_refused_and_gets_nothing(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a])
    a.ombra("db", "new", "db1")
    # b holds a certificate of another DAG (its own authority)
    b.ombra("dag", "init", "other", "--etcd", bed.etcd_url)
    b.ombra("dag", "add-server", "b", "--address", f"{b.addr}:{REPLD_PORT}", "--etcd",
            bed.etcd_url, "--dag", "other")
    probe = (
        "import ssl,socket\n"
        "c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT);c.check_hostname=False\n"
        "c.verify_mode=ssl.CERT_NONE\n"
        f"c.load_cert_chain('{b.home}/dag/server.crt','{b.home}/dag/server.key')\n"
        "try:\n"
        f"  s=c.wrap_socket(socket.create_connection(('{a.addr}',{REPLD_PORT}),timeout=5))\n"
        "  s.sendall(b'\\x10\\x00\\x00\\x00{\"op\":\"hello\"}  \\x00\\x00\\x00\\x00')\n"
        "  print('read', len(s.recv(100)))\n"
        "except Exception as e:\n"
        "  print('refused', type(e).__name__)\n")
    out = subprocess.run(["ip", "netns", "exec", b.ns, "python3", "-c", probe],
                         capture_output=True, text=True, timeout=30)
    assert "refused" in out.stdout or "read 0" in out.stdout, out
    log = repld_log(a)
    assert "refused" in log and b.addr in log, log
    st = json.loads(a.ombra("dag", "status", "--json", "--etcd", bed.etcd_url, "--dag",
                            DAG).out)
    assert [s["name"] for s in st["servers"]] == ["a"]


@pytest.mark.dag_long
def test_a_passive_whose_disk_fills_up_fails_loudly_and_catches_up_once_there_is_room(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    small = b.small_log_disk(64)
    # the copy's folder on the small disk (a link there is refused)
    disk = b.home / "copies" / a.db_show("db1")["id"]
    disk.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(small), str(disk)], check=True)
    try:
        full_disk_round(bed, a, b, disk)
    finally:
        b.term("repld")  # it holds the copy's files open
        subprocess.run(["umount", str(disk)], check=True)


def full_disk_round(bed, a, b, disk):
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:  # leave about 3 MiB: two or three generations
        f.write(b"\0" * (st.f_bavail * st.f_frsize - (3 << 20)))
    roll(a, "db1", 6)
    c = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Failed", what="the full disk")
    assert "space" in c["last_error"] or "full" in c["last_error"], c
    filler.unlink()
    copies_match(bed, a, "db1", [b])


@pytest.mark.dag_long
def test_a_lost_etcd_is_retried_and_said_in_dag_status_and_replication_goes_on(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    bed.etcd_kill9()
    deadline = time.time() + 20
    while True:
        r = b.ombra("dag", "status", "--etcd", bed.etcd_url, "--dag", DAG, check=False)
        if "etcd unreachable (retrying)" in r.out:
            break
        assert time.time() < deadline, f"dag status never said etcd was lost: {r.out} {r.err}"
        time.sleep(0.5)
    assert r.rc == 75 and r.err.count("\n") == 1  # the CLI's own failure, one line: retryable
    roll(a, "db1", 2)  # mail goes on without etcd, and so does copying
    bed.etcd_restart()
    deadline = time.time() + 30
    while True:
        r = b.ombra("dag", "status", "--etcd", bed.etcd_url, "--dag", DAG, check=False)
        if r.rc == 0 and "etcd reachable" in r.out:
            break
        assert time.time() < deadline, f"dag status never saw etcd back: {r.out} {r.err}"
        time.sleep(0.5)
    copies_match(bed, a, "db1", [b])


@pytest.mark.dag_long
def test_what_a_killed_copier_left_half_written_is_swept_and_the_copy_goes_on(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    folder = copy_folder(bed, b, "db1")
    b.kill9("repld")  # as if killed mid-seed or mid-generation: its temporary files stay
    left = [folder / ".db1.edb.0123456789abcdef.tmp", folder / "logs" / ".E0000000009.log.0123456789abcdef.tmp"]
    for f in left:
        f.write_bytes(b"half written" * 1000)
    roll(a, "db1", 2)
    b.restart("repld")
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    assert not any(f.exists() for f in left)
    assert copy_of(a, bed, "db1", "b")["last_error"] == ""
    assert passive_digest(bed, b, "db1") == want
