"""The active manager (issue 19; spec §8): switchover (`ombra db move`), failover when the active's
server or store is lost, fencing of a deposed active, and a server that restarts mounting nothing
the directory does not name it active for. Three joined servers in namespaces, a real etcd, a
lease of 2 s. Every test shows the user's outcome: the acknowledged mail is on the new active,
every copy ends with the same digest, the old active never acknowledges after it is deposed."""
import json
import threading
import time

import pytest

from dag.conftest import copy_of, copy_status, wait_copy
from dag.dagbed import REPLD_PORT

LEASE = 3  # seconds: short, yet no lapse for a busy machine's stall (make test runs beds side by side)
DB = "db1"


def join_all(bed, servers):
    """dag init on the first (the CA's), every server added and joined (its store's directory
    in etcd), its ombra-repld started with a short lease."""
    a = servers[0]
    a.ombra("dag", "init", "dag1", "--etcd", bed.etcd_url)
    for s in servers:
        addr = ["--address", f"{s.addr}:{REPLD_PORT}", "--etcd", bed.etcd_url]
        if s is not a:
            a.ombra("dag", "add-server", s.server, *addr, "--out", str(s.home / "dag"))
        s.ombra("dag", "add-server", s.server, *addr)
    for s in servers:
        s.start_repld(args=("--lease-seconds", str(LEASE)))


def dag_db(bed, s, db=DB):
    st = json.loads(s.ombra("dag", "status", "--json", "--etcd", bed.etcd_url).out)
    return next(d for d in st["databases"] if d["name"] == db)


def active_of(bed, s, db=DB):
    d = dag_db(bed, s, db)
    return d["active"], d["epoch"], d["taking_commits"]


def wait_active(bed, s, pred, seconds, what):
    end = time.monotonic() + seconds
    got = None
    while time.monotonic() < end:
        try:
            got = active_of(bed, s)
        except Exception as e:  # etcd or a server being killed: ask again
            got = repr(e)
        if isinstance(got, tuple) and pred(got):
            return got
        time.sleep(0.1)
    pytest.fail(f"{what}: the active of {DB} is {got} after {seconds} s")


class Mail:
    """A client that delivers to whichever server is active, retrying what is refused
    retryably, and records each acknowledged message: (server, id, mailbox, body)."""

    def __init__(self, bed, servers, box="box"):
        self.bed, self.servers, self.box = bed, {s.server: s for s in servers}, box
        self.acked, self.refused, self.stop = [], 0, threading.Event()
        self.t = threading.Thread(target=self.run)
        self.i = 0

    def one(self, seconds=60):
        body = f"Subject: m{self.i}\n\nmessage {self.i} of {self.box}\n".encode()
        self.i += 1
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                server = active_of(self.bed, next(iter(self.servers.values())))[0]
            except Exception:
                time.sleep(0.1)
                continue
            s = self.servers[server]
            r = s.ombra("mail", "deliver", DB, self.box, input=body, check=False, timeout=60)
            if r.rc == 0:
                self.acked.append((server, int(r.out.split()[-1]), body))
                return
            self.refused += 1
            time.sleep(0.05)
        raise AssertionError(f"no delivery acknowledged in {seconds} s")

    def run(self):
        while not self.stop.is_set():
            self.one()

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(120)


def row_digest(bed, s, db=DB):
    """The digest of s's passive copy, at the files its copy row names (its copy folder, or a
    deposed active's store files): suspended, digested offline, resumed."""
    a = bed.a
    a.ombra("db", "copy", "suspend", db, "--server", s.server, "--etcd", bed.etcd_url)
    row = wait_copy(a, bed, db, s.server, lambda c: c["state"] == "Suspended", what="suspending")
    rec = json.loads(bed.etcd_get(f"/ombra/dag/dag1/copies/{row['database']['id']}/{s.server}"))
    d = s.ombra("dbutil", "digest", rec["edb"], "--logs", rec["logs"])
    a.ombra("db", "copy", "resume", db, "--server", s.server, "--etcd", bed.etcd_url)
    return d.out.strip()


def check_all_there(active, mail):
    """Every acknowledged message is on the active, with its body."""
    ids = {m["id"] for m in active.messages(DB, mail.box)}
    lost = [(srv, i) for srv, i, _ in mail.acked if i not in ids]
    assert not lost, f"acknowledged and lost: {lost[:10]} (of {len(mail.acked)})"
    for srv, i, body in mail.acked[-5:]:
        assert active.get(DB, mail.box, i) == body


def all_healthy(bed, s, seconds=90):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rows = copy_status(s, bed, DB)
        if all(r["state"] in ("Mounted", "Healthy") and r["copy_queue"] == 0 and
               r["replay_queue"] == 0 for r in rows):
            return rows
        time.sleep(0.3)
    pytest.fail(f"copies not all healthy and caught up: {copy_status(s, bed, DB)}")


@pytest.fixture
def three(dag_bed):
    bed = dag_bed(3)
    a, b, c = bed.a, bed.b, bed.c
    join_all(bed, [a, b, c])
    a.ombra("db", "new", DB)
    for s in (b, c):
        a.ombra("db", "copy", "add", DB, "--server", s.server, "--etcd", bed.etcd_url)
    for s in (b, c):
        wait_copy(a, bed, DB, s.server, lambda r: r["state"] == "Healthy", what="seeding")
    wait_active(bed, a, lambda g: g[0] == "a" and g[2], 20, "the first active taking mail")
    return bed


def digests_equal(bed, servers, expect=None):
    """The active's open generation closed (an administrative dismount, never failed over, and
    a mount), every copy caught up: each passive's digest is the active's. expect: the server
    that must be the active one."""
    by = {s.server: s for s in servers}
    name = active_of(bed, servers[0])[0]
    if expect:
        assert name == expect.server, f"the active is {name}, not {expect.server}"
    active = by[name]
    active.ombra("db", "dismount", DB)
    active.ombra("db", "mount", DB)
    wait_active(bed, active, lambda g: g[0] == name and g[2], 20, "the mount again")
    closed = active.db_show(DB)["gen_current"] - 1  # the mount started the next generation
    for s in servers:  # (the active's own row may be a round behind: count from its store)
        if s is not active:
            wait_copy(active, bed, DB, s.server,
                      lambda r: r["state"] == "Healthy" and r["replayed"] >= closed,
                      seconds=90, what=f"replaying generation {closed}")
    want = active.digest(DB)
    for s in servers:
        if s is not active:
            assert row_digest(bed, s) == want, f"the copy on {s.server} differs from the active"
    assert active_of(bed, servers[0])[0] == name, "a move during the comparison"


def test_switchover_loses_nothing_and_back_again(three):
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    with Mail(bed, [a, b, c]) as mail:
        time.sleep(2)
        r = a.ombra("db", "move", DB, "--to", "b", "--json")
        mv = json.loads(r.out)
        assert mv["kind"] == "switchover" and mv["from"] == "a" and mv["to"] == "b", mv
        time.sleep(2)
    got = wait_active(bed, a, lambda g: g[0] == "b" and g[2], 10, "after the move")
    assert got[1] == 2
    print(f"\nswitchover a->b: {mv['took_ms']} ms, mail refused {mv.get('refused_ms')} ms, "
          f"{len(mail.acked)} acknowledged, {mail.refused} refusals retried")
    assert any(srv == "b" for srv, _, _ in mail.acked), "no mail acknowledged by the new active"
    check_all_there(b, mail)
    # the old active is a passive copy now, replayed in place, and follows b
    all_healthy(bed, a)
    digests_equal(bed, [a, b, c], expect=b)
    out = a.ombra("db", "copy", "status", DB, "--etcd", bed.etcd_url).out
    assert "last switchover" in out and "a -> b" in out, out

    # and back: a's copy (the store's own files) becomes active again
    with Mail(bed, [a, b, c], box="back") as mail2:
        time.sleep(1)
        a.ombra("db", "move", DB, "--to", "a")
        time.sleep(1)
    wait_active(bed, a, lambda g: g[0] == "a" and g[1] == 3 and g[2], 10, "after the move back")
    check_all_there(a, mail)
    check_all_there(a, mail2)
    all_healthy(bed, a)
    digests_equal(bed, [a, b, c], expect=a)


@pytest.mark.dag_long
def test_move_refusals_are_one_clear_line(three):
    bed = three
    a = bed.a
    r = a.ombra("db", "move", DB, "--to", "a", check=False)
    assert r.rc != 0 and "active on a already" in r.err and r.err.count("\n") == 1, r.err
    r = a.ombra("db", "move", DB, "--to", "zz", check=False)
    assert r.rc != 0 and "no copy on server zz" in r.err, r.err
    r = a.ombra("db", "move", "nosuch", "--to", "b", check=False)
    assert r.rc != 0 and "nosuch" in r.err, r.err
    a.ombra("db", "copy", "suspend", DB, "--server", "c", "--etcd", bed.etcd_url)
    r = a.ombra("db", "move", DB, "--to", "c", check=False)
    assert r.rc != 0 and "not moved" in r.err and "Healthy" in r.err, r.err
    assert active_of(bed, a)[:2] == ("a", 1)  # nothing changed
    r = a.ombra("db", "set", DB, "--mount-dial", "sometimes", check=False)
    assert r.rc == 2 and "lossless, good or best" in r.err


@pytest.mark.dag_long
def test_failover_when_the_active_server_dies_and_it_comes_back_as_a_passive_copy(three):
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    # a switchover first: the failover right after one is not held back by it
    a.ombra("db", "move", DB, "--to", "b")
    wait_active(bed, a, lambda g: g == ("b", 2, True), 10, "after the move")
    with Mail(bed, [a, b, c]) as mail:
        time.sleep(2)
        t0 = time.monotonic()
        b.kill9_all()
        got = wait_active(bed, a, lambda g: g[0] in ("a", "c") and g[1] == 3 and g[2], 30,
                          "failover")
        took = time.monotonic() - t0
        time.sleep(1)
    new = {"a": a, "c": c}[got[0]]
    lm = dag_db(bed, a)["last_move"]
    print(f"\nfailover b->{got[0]}: taking mail {took:.1f} s after the kill (lease {LEASE} s); "
          f"lost {lm['lost_gens']} generations; {len(mail.acked)} acknowledged")
    assert lm["kind"] == "failover" and lm["from"] == "b" and lm["to"] == got[0], lm
    assert took < 4 * LEASE + 6
    # what was acknowledged before the kill and lies in the lost generations is gone (async):
    # everything acknowledged by the new active is there
    ids = {m["id"] for m in new.messages(DB, mail.box)}
    assert all(i in ids for srv, i, _ in mail.acked if srv == got[0])
    # b comes back: it mounts nothing (the directory names another), and its copy resyncs
    b.start_all()
    b.start_repld(args=("--lease-seconds", str(LEASE)))
    time.sleep(LEASE * 2)
    assert active_of(bed, a)[0] == got[0]
    dbs = json.loads(b.ombra("db", "list", "--json").out)["databases"]
    assert not any(d.get("mounted") for d in dbs if d["name"] == DB), dbs
    all_healthy(bed, a, 120)
    digests_equal(bed, [a, b, c], expect=new)


@pytest.mark.dag_long
def test_a_paused_active_stops_acknowledging_and_is_deposed(three):
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    a.deliver(DB, "box", b"before")
    with a.paused("repld"):
        time.sleep(LEASE + 0.5)
        t0 = time.monotonic()
        r = a.ombra("mail", "deliver", DB, "box", input=b"after the lease", check=False,
                    timeout=60)
        assert r.rc == 75, r.describe()
        assert r.err.count("\n") == 1
        wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2 and g[2], 30, "failover")
    time.sleep(LEASE)
    r = a.ombra("mail", "deliver", DB, "box", input=b"deposed", check=False, timeout=60)
    assert r.rc != 0, "the deposed active acknowledged a delivery"
    all_healthy(bed, b, 120)
