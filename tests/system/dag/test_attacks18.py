"""Attacks on issue 18's backups from passive copies (the replica writer, the active's "backup"
requests, backup.run, ombra backup --from): each test is what a hostile DAG member or a
careless administrator tried, and the outcome a user must see."""
import json
import subprocess
import time

import pytest

from dag.conftest import drained, roll, wait_copy  # noqa: F401
from dag.dagbed import REPLD_PORT
from dag.test_passive_backup import active_info, backup, dag3b, listed  # noqa: F401 (a fixture)
from dag.test_passive_backup import copy_gens, setup3  # noqa: F401

PROBE = r"""
import json, socket, ssl, struct, sys
home, addr, port, reqs = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname = False
c.verify_mode = ssl.CERT_NONE
c.load_cert_chain(home + '/dag/server.crt', home + '/dag/server.key')
s = c.wrap_socket(socket.create_connection((addr, port), timeout=30))
def readn(n):
    b = b''
    while len(b) < n:
        x = s.recv(n - len(b))
        if not x: raise EOFError
        b += x
    return b
out = []
for r in reqs:
    h = json.dumps(r).encode()
    s.sendall(struct.pack('<I', len(h)) + h + struct.pack('<I', 0))
    try:
        hl = struct.unpack('<I', readn(4))[0]; rep = json.loads(readn(hl))
        bl = struct.unpack('<I', readn(4))[0]; readn(bl)
    except EOFError:
        rep = None
    out.append(rep)
    if rep is None: break
print(json.dumps(out))
"""


def wire(src, dst, reqs):
    """The replies of dst's ombra-repld to reqs, sent in order on one mutual-TLS connection made
    with src's DAG certificate (a raw client: what a hostile member of the DAG can send)."""
    p = subprocess.run(["ip", "netns", "exec", src.ns, "python3", "-c", PROBE, str(src.home),
                        dst.addr, str(REPLD_PORT), json.dumps(reqs)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def bk(db_id, action, **kw):
    return dict(op="backup", db=db_id, name="db1", action=action, **kw)



def header(a):
    return active_info(a)["backups"]


def refused(rep, *words):
    """One reply that says no, naming what it refused."""
    assert rep and rep.get("ok") is not True and rep.get("error"), rep
    for w in words:
        assert w in rep.get("message", ""), rep


@pytest.mark.dag_long
def test_a_member_without_a_copy_can_neither_prepare_record_nor_truncate(dag_bed):
    """c is a server of the DAG (its certificate is good) but holds no copy of db1: every backup
    request it sends to the active is refused, the header records nothing, no log goes."""
    bed = dag_bed(3)
    from dag.test_replication import setup_dag
    a, b, c = bed.a, bed.b, bed.c
    setup_dag(bed, [a, b, c])
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    roll(a, "db1", 3)
    db_id = a.db_show("db1")["id"]
    before = active_info(a)
    cur = before["gen_current"]
    reps = wire(c, a, [bk(db_id, "prepare", type="full"),
                       bk(db_id, "record", type="full", first_gen=1, last_gen=cur - 1,
                          mark_gen=cur, mark_off=0, mark_time_ns=time.time_ns()),
                       bk(db_id, "truncate", below=cur - 1)])
    for rep in reps:
        refused(rep, "server c holds no copy")
    after = active_info(a)
    assert after["backups"] == before["backups"] and after["gen_oldest"] == before["gen_oldest"]
    assert after["gen_current"] == cur, "a refused prepare closed a generation"


@pytest.mark.dag_long
def test_a_copy_holder_cannot_record_a_backup_it_never_prepared_nor_truncate_past_it(dag3b):
    """b holds a copy, so the active answers its backup requests; but a record must be the one of
    a backup b prepared (same type, the active's own mark time, up to the generation closed
    then) and a truncate must follow b's recorded full or incremental, below its end. Before:
    b recorded a full it never took, marked in the year 2116, and truncated the logs after it."""
    bed = dag3b
    a, b = bed.a, bed.b
    roll(a, "db1", 3)
    db_id = a.db_show("db1")["id"]
    before = active_info(a)
    cur = before["gen_current"]
    # a record out of thin air, a future mark time, then the truncate it would allow
    reps = wire(b, a, [bk(db_id, "record", type="full", first_gen=1, last_gen=cur - 1,
                          mark_gen=cur, mark_off=0, mark_time_ns=2**62),
                       bk(db_id, "record", type="full", first_gen=1, last_gen=cur - 1,
                          mark_gen=cur, mark_off=0, mark_time_ns=time.time_ns()),
                       bk(db_id, "truncate", below=cur - 1)])
    for rep in reps:
        refused(rep)
    assert header(a) == before["backups"]
    # prepared, then recorded with another time, another type, or short of what was closed
    (prep,) = wire(b, a, [bk(db_id, "prepare", type="full")])
    assert prep["ok"] and prep["closed"] >= cur, prep
    closed, t = prep["closed"], prep["time_ns"]
    reps = wire(b, a, [bk(db_id, "record", type="full", first_gen=1, last_gen=closed,
                          mark_gen=closed + 1, mark_off=0, mark_time_ns=t + 1),
                       bk(db_id, "record", type="copy", first_gen=1, last_gen=closed,
                          mark_gen=closed + 1, mark_off=0, mark_time_ns=t),
                       bk(db_id, "record", type="full", first_gen=1, last_gen=closed - 1,
                          mark_gen=closed, mark_off=0, mark_time_ns=t)])
    for rep in reps:
        refused(rep)
    assert header(a) == before["backups"]
    assert active_info(a)["gen_oldest"] == before["gen_oldest"]
    # a real backup from b works, and is recorded once
    full = backup(b, bed, "full", "--from", "b")["sets"][0]
    h = header(a)["previous_full"]
    assert h and [h["first_gen"], h["last_gen"]] == full["log_range"], (h, full)
    oldest = active_info(a)["gen_oldest"]
    # its truncate cannot be replayed past its end, nor at all a second time by a raw client
    reps = wire(b, a, [bk(db_id, "truncate", below=full["log_range"][1] + 1)])
    refused(reps[0])
    assert active_info(a)["gen_oldest"] == oldest


@pytest.mark.dag_long
def test_a_database_named_after_64_others_is_backed_up_not_dropped(dag3b):
    """`ombra backup db1 db1 ... db2` (db1 named 64 times): in a DAG the command kept the first
    64 names and dropped the rest, exit 0, db2 never backed up. Names are counted once each."""
    bed = dag3b
    a = bed.a
    a.ombra("db", "new", "db2")  # a's own database, no copies
    a.deliver("db2", "box", b"db2's mail")
    r = a.ombra("backup", "--repo", str(bed.repo), "--type", "full", "--json",
                *(["db1"] * 64), "db2", check=False)
    assert r.rc == 0, r.describe()
    got = sorted(s["database"]["name"] for s in json.loads(r.out)["sets"])
    assert got == ["db1", "db2"], r.out


@pytest.mark.dag_long
def test_from_a_server_for_a_database_not_in_the_dag_is_refused_not_taken_here(dag3b):
    """`--from b` for a's own database (not in the DAG, so no copy on b): it was backed up here,
    silently, as if b had been asked. Refused in one line naming b."""
    bed = dag3b
    a = bed.a
    a.ombra("db", "new", "mine")
    r = a.ombra("backup", "--repo", str(bed.repo), "--type", "full", "--from", "b", "mine",
                check=False)
    assert r.rc != 0 and r.err.count("\n") == 1 and "--from b" in r.err, r.describe()
    assert not listed(a, bed)


@pytest.mark.dag_long
def test_backup_run_requests_with_odd_fields_fail_in_one_message_and_the_service_lives(dag3b):
    """A DAG member asks b's ombra-repld to run backups with a relative or missing repository,
    too many or odd names, an unknown type: each gets one error, no set is made, nothing is
    recorded, and b's service and copy stay up."""
    bed = dag3b
    a, b, c = bed.a, bed.b, bed.c
    base = dict(op="backup.run", dbs=["db1"], type="full", repo=str(bed.repo))
    odd = [dict(base, repo="repo"), dict(base, repo=""), dict(base, repo=str(bed.tmp / "none")),
           dict(base, dbs=[f"d{i}" for i in range(65)]), dict(base, dbs=[]), dict(base, dbs=[7]),
           dict(base, dbs=["../../etc/passwd"]), dict(base, dbs=["db1\n\x01"]),
           dict(base, dbs=["x" * 5000]), dict(base, type="fulll"), dict(base, provider="zz"),
           dict(base, passphrase="not this repository's")]
    # b's own database outside the DAG: not for a DAG member to back up
    b.ombra("db", "new", "local1")
    odd.append(dict(base, dbs=["local1"]))
    for req in odd:
        (rep,) = wire(c, b, [req])
        assert rep is not None, req
        bad = rep.get("ok") is not True or rep.get("error")
        assert bad, (req, rep)
        assert rep.get("message") and "\n" not in rep["message"].strip(), (req, rep)
    assert "holds no copy of a database 'local1'" in rep["message"], rep
    assert not listed(a, bed)
    assert active_info(a)["backups"]["previous_full"] is None
    wait_copy(a, bed, "db1", "b", lambda x: x["state"] == "Healthy", what="b's copy")
    (rep,) = wire(c, b, [base])  # and a good one works
    assert rep["op"] == "backup.done" and rep["error"] == 0, rep
    assert listed(a, bed)


@pytest.mark.dag_long
def test_the_same_copy_backed_up_by_two_requesters_at_once_one_waits_or_fails_in_one_line(
        dag3b):
    """Two backups of b's copy at once (one from b, one asked from a with --from b): the second
    must not share the first's freeze or record; it fails in one line (or succeeds once the
    first ended), and what was recorded is exactly what each set holds."""
    from dag.test_passive_backup import paused_backup
    bed = dag3b
    a, b = bed.a, bed.b
    roll(a, "db1", 2)
    p = paused_backup(b, bed, "full", "snapshot")
    assert p.reached, p.first
    try:
        r = a.ombra("backup", "--repo", str(bed.repo), "--type", "full", "--json", "--from", "b",
                    "db1", check=False, timeout=120)
    finally:
        first = p.resume()
    assert first.rc == 0, first.describe()
    if r.rc != 0:
        assert r.err.count("\n") == 1 and "BackupInProgress" in r.err, r.describe()
    sets = sorted(listed(a, bed), key=lambda s: s.get("mark_time_ns", 0) or s.get("time", ""))
    assert len(sets) == (1 if r.rc else 2), sets
    h = header(a)["previous_full"]
    assert [h["first_gen"], h["last_gen"]] in [s["log_range"] for s in sets], (h, sets)


@pytest.mark.dag_long
def test_a_full_overtaken_by_a_newer_full_is_not_recorded_over_it(dag_bed, tmp_path):
    """b's full backup is prepared, then c's full is taken and stored (the active truncates after
    it), then b's completes. b's older full used to be recorded over c's newer one: the header's
    previous full went back in time, the next incremental began after b's full, at generations
    c's truncation had deleted, and every incremental failed until the next full. The older
    full is refused in one line, the header keeps c's, the next incremental works and the chain
    restores."""
    from dag.test_passive_backup import paused_backup
    bed = setup3(dag_bed(3), tmp_path, shallow=True)
    a, b, c = bed.a, bed.b, bed.c
    roll(a, "db1", 3)
    drained(a, bed, "db1", "b")
    p = paused_backup(b, bed, "full", "snapshot")
    assert p.reached, p.first
    try:
        roll(a, "db1", 4)
        drained(a, bed, "db1", "c")
        newer = backup(c, bed, "full", "--from", "c")["sets"][0]
        roll(a, "db1", 2)
    finally:
        older = p.resume()
    h = header(a)["previous_full"]
    assert [h["first_gen"], h["last_gen"]] == newer["log_range"], (h, newer, older.describe())
    if older.rc != 0:
        lines = [x for x in older.err.splitlines() if not x.startswith("paused")]
        assert len(lines) == 1 and "newer" in lines[0], older.err
        assert [x["id"] for x in listed(a, bed)] == [newer["id"]], "the refused set is listed"
    roll(a, "db1", 1)
    inc = backup(a, bed, "incremental", "--from", "active", check=False)
    assert not hasattr(inc, "rc"), inc.describe()
    assert inc["sets"][0]["log_range"][0] == newer["log_range"][1] + 1, (inc, newer)


@pytest.mark.dag_long
def test_an_encrypted_chain_of_passive_sets_from_two_servers_restores_on_the_third(dag3b):
    """An encrypted repository, the backups asked on the active's server a: a full from b and an
    incremental from c, each run there (the passphrase travels in the request), a wrong
    passphrase refused in one line before anything is recorded; then the chain restored into a
    recovery database on a gives back exactly the mail at the incremental."""
    bed = dag3b
    a, b, c = bed.a, bed.b, bed.c
    enc = bed.tmp / "enc"
    pw = bed.tmp / "pw"
    pw.write_text("correct horse battery staple\n")
    pw.chmod(0o600)
    a.ombra("repo", "init", str(enc), "--encrypt", "--passphrase-file", str(pw))
    env = {"OMBRA_REPO_PASSPHRASE": "correct horse battery staple"}
    for i in range(30):
        a.deliver("db1", f"box{i % 4}", f"before the full {i}".encode())
    r = a.ombra("backup", "--repo", str(enc), "--type", "full", "--from", "b", "--json", "db1",
                env={"OMBRA_REPO_PASSPHRASE": "wrong"}, check=False)
    assert r.rc != 0 and "passphrase" in r.err.lower() and r.err.count("\n") == 1, r.describe()
    assert header(a)["previous_full"] is None
    r = a.ombra("backup", "--repo", str(enc), "--type", "full", "--from", "b", "--json", "db1",
                env=env)
    assert json.loads(r.out)["copies"][0]["server"] == "b"
    for i in range(30):
        a.deliver("db1", f"box{i % 4}", f"before the incremental {i}".encode())
    want = a.digest("db1")
    r = a.ombra("backup", "--repo", str(enc), "--type", "incremental", "--from", "c", "--json",
                "db1", env=env)
    assert json.loads(r.out)["copies"][0]["server"] == "c"
    for i in range(10):
        a.deliver("db1", "box0", f"after the incremental {i}".encode())
    rdb = a.dir / "rdb"
    a.ombra("db", "new-recovery", "rdb", "--edb", str(rdb / "rdb.edb"), "--logs",
            str(rdb / "logs"))
    r = a.ombra("restore", "--repo", str(enc), "db1", "--recovery", "rdb", "--mount", "--json",
                env=env)
    assert a.digest("rdb") == want, r.describe()


@pytest.mark.dag_long
def test_the_actives_service_restarted_between_prepare_and_record_fails_the_backup_cleanly(
        dag3b):
    """The active's ombra-repld restarts while b's full backup runs (it forgets the prepare): the
    record is refused, the backup fails in one line, no set is listed, nothing is recorded or
    truncated; the next backup works."""
    from dag.test_passive_backup import gens_everywhere, paused_backup
    bed = dag3b
    a, b = bed.a, bed.b
    roll(a, "db1", 3)
    before = gens_everywhere(bed)
    p = paused_backup(b, bed, "full", "copied")
    assert p.reached, p.first
    try:
        a.restart("repld")
    finally:
        r = p.resume()
    assert r.rc != 0, r.describe()
    lines = [x for x in r.err.splitlines() if not x.startswith("paused")]
    assert len(lines) == 1 and "prepared no full backup" in lines[0], r.err
    assert not listed(a, bed)
    assert header(a)["previous_full"] is None
    drained(a, bed, "db1", "b")
    assert gens_everywhere(bed) == before
    assert backup(b, bed, "full", "--from", "b")["sets"]
    assert header(a)["previous_full"]
