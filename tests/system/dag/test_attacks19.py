"""Attacks on issue 19's active manager (switchover, failover, fencing): each test is what a
careless administrator, a paused process or a hostile member of the DAG did, and the outcome a
user must see: nothing acknowledged lost, never two actives, no failover of a healthy active,
no database left unmounted without a word."""
import base64
import json
import threading
import time

import pytest

from dag.test_failover import DB, LEASE, active_of, dag_db, three, wait_active  # noqa: F401


def db_id(bed, s):
    return dag_db(bed, s)["id"]


def late_acks(s, seconds, pause=0.0, strict=True):
    """Deliveries to s for seconds: the acknowledgements it gave ({id, server, epoch, acked_ns});
    with strict, every refusal must be one retryable line (exit 75)."""
    acks, i = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = s.ombra("mail", "deliver", DB, "box", "--json", input=f"late {i}".encode(),
                    check=False, timeout=60)
        i += 1
        if r.rc == 0:
            acks.append(json.loads(r.out))
        elif strict:
            assert r.rc == 75 and r.err.count("\n") == 1, r.describe()
        time.sleep(pause)
    return acks


def activelease(bed, s):
    v = bed.etcd_get(f"/ombra/dag/dag1/activelease/{db_id(bed, s)}")
    return json.loads(v) if v else None


@pytest.mark.dag_long
def test_a_paused_store_coming_back_leaves_the_new_actives_lease_alone(three):
    """a's store is paused (SIGSTOP) past the lease: its ombra-repld waits on it, the server's
    lease lapses and the database fails over. When the store goes on, a's ombra-repld learns
    that its store no longer takes the database's commits: it must not delete the activelease
    key the new active wrote meanwhile, or the primary fails the healthy new active over too
    (mail refused again, and generations lost in asynchronous mode)."""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    with a.paused("store"):
        got = wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2 and g[2], 40,
                          "failover")
        time.sleep(1)
    new = got[0]
    # past the primary's quiet time after a move (30 s) and a few lease rounds
    end = time.monotonic() + 40
    while time.monotonic() < end:
        act = active_of(bed, b)
        assert act[:2] == (new, 2), f"the healthy new active {new} was failed over: {act}, " \
            f"last move {dag_db(bed, b).get('last_move')}"
        time.sleep(0.5)
    al = activelease(bed, b)
    assert al and al["server"] == new and al["epoch"] == 2, al
    r = a.ombra("mail", "deliver", DB, "box", input=b"deposed", check=False, timeout=60)
    assert r.rc != 0, "the deposed active acknowledged a delivery"


@pytest.mark.dag_long
def test_a_deposed_store_behind_on_the_directory_never_acknowledges(three):
    """a's store is paused past the lease and the database fails over; etcd goes away while it
    is still paused and comes back a few seconds after the store went on. Its ombra-repld gets
    etcd back first (its backoff is shorter than the store's watch's), takes a new lease and
    renews the store's commit deadline; the store has not yet seen that the DAG names another
    server. A delivery to a then must not be acknowledged at the old epoch: the new active took
    commits meanwhile (two actives, and an acknowledged message that is not on the active)."""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    with a.paused("store"):
        got = wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2 and g[2], 40,
                          "failover")
        bed.etcd_kill9()
    time.sleep(9)  # the store's watch backs off towards 5 s; ombra-repld's towards 2 s
    bed.etcd_restart()
    acks = late_acks(a, 12, pause=0.1, strict=False)  # its store may be restarting
    assert not acks, f"the deposed store acknowledged {len(acks)} deliveries after {got[0]} " \
        f"became active at epoch 2: {acks[:3]}"


@pytest.mark.dag_long
def test_a_move_to_a_server_whose_store_is_down_is_refused_before_anything_moves(three):
    """b's ombra-repld runs and its copy is Healthy, but b's store is down (an administrator
    stopped it for maintenance). `db move --to b` must be refused up front with one line
    saying so, a still active at epoch 1 and taking mail, not handed to a server that cannot
    mount it (the database down until a failover, and the CLI saying the move failed while
    the DAG names b)."""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    b.kill9("store")
    t0 = time.monotonic()
    r = a.ombra("db", "move", DB, "--to", "b", check=False, timeout=200)
    took = time.monotonic() - t0
    assert r.rc != 0 and r.err.count("\n") == 1 and "store" in r.err, r.describe()
    assert took < 15, f"the refusal took {took:.1f} s"
    act = active_of(bed, a)
    assert act == ("a", 1, True), act
    a.deliver(DB, "box", b"after")


@pytest.mark.dag_long
def test_a_failover_passes_over_a_copy_whose_store_is_down(three):
    """b's store is down (its ombra-repld runs, its copy is Healthy and first by name), then the
    active server a dies: the failover must pick c, whose store can mount, not name b active
    and leave the database down until the next try."""
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    a.deliver(DB, "box", b"before")
    b.kill9("store")
    time.sleep(1)
    a.kill9_all()
    got = wait_active(bed, c, lambda g: g[1] >= 2 and g[2], 30, "failover")
    assert got[:2] == ("c", 2), got
    ids = [m["id"] for m in c.messages(DB, "box")]
    assert ids, "the message acknowledged before the loss is not on the new active"


def repld_lines(servers, words):
    n = 0
    for s in servers:
        for label, log in s.daemon_logs:
            if label == "ombra-repld" and log.exists():
                n += sum(words in line for line in log.read_text(errors="replace").splitlines())
    return n


@pytest.mark.dag_long
def test_no_copy_to_fail_over_to_is_said_once_not_every_ten_seconds(three):
    """Both passive copies are suspended (an administrator's maintenance) when the active server
    dies: no failover can be made, and the primary tries again every 10 s. It says so once
    (and lastmove says why), not two warnings every 10 s for as long as it lasts; once a copy
    is resumed, the failover is made."""
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    a.deliver(DB, "box", b"before")
    for s in (b, c):
        a.ombra("db", "copy", "suspend", DB, "--server", s.server, "--etcd", bed.etcd_url)
    a.kill9_all()
    time.sleep(38)
    assert active_of(bed, b)[:2] == ("a", 1)
    lm = dag_db(bed, b).get("last_move") or {}
    assert lm.get("ok") is False and "no copy" in lm.get("error", ""), lm
    said = repld_lines([b, c], "no failover")
    assert said == 1, f"'no failover' said {said} times in 38 s"
    assert repld_lines([b, c], "is lost") == 1
    b.ombra("db", "copy", "resume", DB, "--server", "b", "--etcd", bed.etcd_url)
    got = wait_active(bed, b, lambda g: g[1] == 2 and g[2], 40, "failover once b is resumed")
    assert got[0] == "b", got


def test_only_the_primary_may_ask_a_handoff_or_an_activation(three):
    """A member of the DAG that is not the primary active manager (a confused script with a
    server's certificate, or a hostile member) sends the active's ombra-repld am.handoff, and
    a passive's am.activate: both refused, naming the primary; the database stays mounted on
    a at epoch 1, taking mail, and no failover follows."""
    from dag.test_attacks18 import wire
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    a.deliver(DB, "box", b"before")
    pam = json.loads(bed.etcd_get("/ombra/dag/dag1/pam"))["server"]
    src = next(s for s in (b, c) if s.server != pam)
    dst = next(s for s in (b, c) if s is not src)
    ident = db_id(bed, a)
    rep = wire(src, a, [{"op": "am.handoff", "db": ident, "epoch": 1, "timeout_ms": 5000}])[0]
    assert rep and rep.get("ok") is not True and "primary" in rep.get("message", ""), rep
    rep = wire(src, dst, [{"op": "am.activate", "db": ident, "through_gen": 0,
                           "use_stream": False, "timeout_ms": 3000}])[0]
    assert rep and rep.get("ok") is not True and "primary" in rep.get("message", ""), rep
    time.sleep(2 * LEASE)
    assert active_of(bed, a) == ("a", 1, True)
    a.deliver(DB, "box", b"after")


@pytest.mark.dag_long
def test_sync_copies_a_failover_never_picks_the_copy_lacking_acknowledged_mail(three):
    """--sync-copies 1: while b's ombra-repld is paused, c alone acknowledges a's commits. Then
    c's store goes down (its ombra-repld and its copy, holding every acknowledged message, stay)
    and a dies; b comes back. b's store can mount, but b lacks what c acknowledged: the failover
    must not mount b saying no acknowledged mail was lost. Whatever becomes active holds every
    acknowledged message (c may be named while its store is down: it comes back with it)."""
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "set", DB, "--sync-copies", "1", "--etcd", bed.etcd_url)
    a.deliver(DB, "box", b"first")
    acked = []
    with b.paused("repld"):
        time.sleep(LEASE + 1)
        for i in range(20):
            acked.append(a.deliver(DB, "box", f"acked {i}".encode()))
        c.kill9("store")
        a.kill9_all()
    end = time.monotonic() + 90
    got = None
    while time.monotonic() < end:
        got = active_of(bed, b)
        if got[1] >= 2 and got[2]:
            break
        time.sleep(0.5)
    lm = dag_db(bed, b).get("last_move") or {}
    if got[1] >= 2 and not got[2] and got[0] == "c":
        # c named (it holds every acknowledged commit) while its store is down: the database
        # comes back with it
        c.restart("store")
        got = wait_active(bed, b, lambda g: g[0] == "c" and g[2], 60, "c's store back")
    if got[1] >= 2 and got[2]:
        new = {"b": b, "c": c}[got[0]]
        ids = {m["id"] for m in new.messages(DB, "box")}
        missing = [i for i in acked if i not in ids]
        assert not missing, f"{got[0]} became active without {len(missing)} acknowledged " \
            f"messages; last move {lm}"
    else:  # no failover yet: it must say why, and must not have claimed b
        assert got[0] == "a" and lm.get("ok") is False, (got, lm)


@pytest.mark.dag_long
def test_an_active_whose_copy_left_the_record_is_failed_over_not_left_down(three):
    """The record of db1 loses the active's copy (`db copy remove` racing a move: the remove
    checked the active before the move, or a hand-edited record). a's store dismounts the
    database (it left its directory); the primary must fail it over to a passive copy, not
    take it for an administrative dismount and leave it down without a word."""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    key = f"/ombra/dag/dag1/databases/{db_id(bed, a)}"
    rec = json.loads(bed.etcd_get(key))
    del rec["copies"]["a"]
    bed.etcd_put(key, json.dumps(rec))
    got = wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2 and g[2], 60,
                      "failover of an active without a copy")
    new = {"b": b, "c": bed.c}[got[0]]
    assert [m for m in new.messages(DB, "box")], "the message delivered before is not there"


@pytest.mark.dag_long
def test_two_moves_at_once_one_is_made_the_other_refused_in_one_line(three):
    """Two administrators move db1 at the same moment, to b and to c: one move is made, the
    other is refused at once with one line (exit non-zero); the database ends active where the
    made move says, taking mail."""
    import threading
    bed = three
    a = bed.a
    out = {}

    def move(to):
        out[to] = a.ombra("db", "move", DB, "--to", to, check=False, timeout=200)

    ts = [threading.Thread(target=move, args=(t,)) for t in ("b", "c")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(200)
    ok = [t for t, r in out.items() if r.rc == 0]
    bad = [t for t, r in out.items() if r.rc != 0]
    assert len(ok) == 1 and len(bad) == 1, {t: r.describe() for t, r in out.items()}
    r = out[bad[0]]
    assert r.err.count("\n") == 1 and "asked already" in r.err, r.describe()
    got = wait_active(bed, a, lambda g: g[2], 30, "after the moves")
    assert got[:2] == (ok[0], 2), got
    {"b": bed.b, "c": bed.c}[ok[0]].deliver(DB, "box", b"after")


@pytest.mark.dag_long
def test_a_move_to_a_paused_replication_service_hands_nothing_off(three):
    """b's ombra-repld is paused (SIGSTOP) just before `db move --to b`: its lease still holds
    and its copy row says Healthy. The move must be refused without handing a's database off
    (no half-minute of refused mail waiting for an activation that cannot answer): one line,
    a still active at epoch 1, taking mail."""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    with b.paused("repld"):
        t0 = time.monotonic()
        r = a.ombra("db", "move", DB, "--to", "b", check=False, timeout=200)
        took = time.monotonic() - t0
    assert r.rc != 0 and r.err.count("\n") == 1, r.describe()
    assert took < 20, f"the refusal took {took:.1f} s"
    assert active_of(bed, a) == ("a", 1, True)
    a.deliver(DB, "box", b"after")


@pytest.mark.dag_long
def test_a_deposed_active_still_mounted_has_no_file_moved_under_its_store(three):
    """a's store is paused (SIGSTOP) with db1 mounted, and db1 fails over. a's ombra-repld, which
    runs, starts a copier over a's own files (a deposed active is a passive copy in place) while
    the paused store still has them open: the copier must not set a single file of that log
    folder aside (the nemesis found the store's E00.log moved away under it: a FatalIO on the
    next write, and a copy that differed). Once the store goes on and dismounts, the copy
    follows the new active. (Whether the copier reaches its set-aside before the store goes on
    depends on timing; tests/unit/test_resync.c shows the refusal itself.)"""
    bed = three
    a, b = bed.a, bed.b
    a.deliver(DB, "box", b"before")
    logs = a.home / "dbs" / DB / "logs"
    before = sorted(p.name for p in logs.iterdir())
    with a.paused("store"):
        wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2, 40, "failover")
        time.sleep(LEASE * 3)  # a's reconciliation started its copier meanwhile
        after = sorted(p.name for p in logs.iterdir())
        assert "E00.log" in after and set(before) <= set(after), (before, after)
        aside = list((a.home / "copies").glob("*/divergent/*/*"))
        assert not aside, f"files set aside while the store had them open: {aside}"
    new = active_of(bed, b)[0]
    end = time.monotonic() + 90
    while time.monotonic() < end:
        rows = json.loads(b.ombra("db", "copy", "status", DB, "--json", "--etcd",
                                  bed.etcd_url).out)["copies"]
        if next(r for r in rows if r["server"] == "a")["state"] == "Healthy":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"a's copy never followed the new active {new}: {rows}")


@pytest.mark.dag_long
def test_a_move_overtaken_by_a_failover_answers_at_once(three):
    """`db move --to b` is asked while a failover is about to happen; the failover names the new
    active first (its transaction drops the pending move) and writes lastmove with no answer to
    the move's request. The CLI must not wait out its timeout (the nemesis's switchover hung two
    minutes): it answers as soon as the intent is gone, exit 0 when the database is where it was
    to go (saying a failover put it there), one line and non-zero when it is elsewhere. The
    failover is written here as the primary writes it (the replication services paused so that
    none takes the move up first): which of the two comes first is a race otherwise."""
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    dbid = db_id(bed, b)
    root = "/ombra/dag/dag1"

    def overtaken_by(to, server, epoch):
        out = {}

        def ask():
            out["r"] = a.ombra("db", "move", DB, "--to", to, "--timeout", "60", "--etcd",
                               bed.etcd_url, check=False, timeout=120)
        t = threading.Thread(target=ask)
        t.start()
        end = time.monotonic() + 20
        while bed.etcd_get(f"{root}/moves/{dbid}") is None:
            assert time.monotonic() < end and t.is_alive(), out.get("r")
            time.sleep(0.05)
        act = json.loads(bed.etcd_get(f"{root}/active/{dbid}"))
        lm = {"kind": "failover", "from": act["server"], "to": server, "epoch": epoch,
              "why": "its server's lease lapsed", "ok": True, "took_ms": 2900, "lost_gens": 1}
        bed.etcd_put(f"{root}/lastmove/{dbid}", json.dumps(lm))
        bed.etcd_put(f"{root}/active/{dbid}", json.dumps(dict(act, server=server, epoch=epoch)))
        t0 = time.monotonic()
        bed.etcd_request("/v3/kv/deleterange", {"key": base64.b64encode(
            f"{root}/moves/{dbid}".encode()).decode()})
        t.join(90)
        return out["r"], time.monotonic() - t0

    with a.paused("repld"), b.paused("repld"), c.paused("repld"):
        r, took = overtaken_by("b", "b", 2)
        assert r.rc == 0 and "by a failover" in r.out and "a to b" in r.out, r.describe()
        assert took < 5, f"the answer took {took:.1f} s"
        r, took = overtaken_by("a", "c", 3)
        assert r.rc != 0 and r.err.count("\n") == 1, r.describe()
        assert "a failover came first" in r.err and "active on c now" in r.err, r.err
        assert took < 5, f"the answer took {took:.1f} s"


@pytest.mark.dag_long
def test_an_active_coming_back_during_its_failover_acknowledges_nothing(three):
    """--sync-copies 1. a's store is paused past the lease: the primary starts a failover. Its
    first step deposes a (active/<id> marked deposing, same epoch) and waits a lease before it
    reads the copies' positions. a's store goes on right then and its ombra-repld renews its
    deadline again: a must acknowledge nothing more of db1 (the long nemesis lost two
    acknowledged messages so: the old active, back before the primary's transaction, acked
    commits the chosen copy lacked). Then every message acknowledged is on the new active."""
    bed = three
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "set", DB, "--sync-copies", "1", "--etcd", bed.etcd_url)
    acked = [a.deliver(DB, "box", f"before {i}".encode()) for i in range(5)]
    key = f"/ombra/dag/dag1/active/{db_id(bed, b)}"
    with a.paused("store"):
        end = time.monotonic() + 30
        while b"deposing" not in (bed.etcd_get(key) or b""):
            assert time.monotonic() < end, f"no failover began: {bed.etcd_get(key)}"
            time.sleep(0.05)
    late = late_acks(a, LEASE / 2)
    assert not late, f"the deposed active acknowledged {len(late)} deliveries: {late[:3]}"
    got = wait_active(bed, b, lambda g: g[0] in ("b", "c") and g[1] == 2 and g[2], 60,
                      "the failover")
    new = {"b": b, "c": c}[got[0]]
    ids = {m["id"] for m in new.messages(DB, "box")}
    assert set(acked) <= ids, (acked, sorted(ids))
    assert "deposed" in "\n".join(open(p).read() for s in (a, b, c)
                                  for label, p in s.daemon_logs if label == "ombra-repld")
