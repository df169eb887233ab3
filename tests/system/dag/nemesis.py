"""The nemesis (issue 19, "How to prove it"): a Jepsen-style run on the DAG test bed. Clients
deliver mail to every database without pause, each recording every attempt and every
acknowledgement; a seeded nemesis kills stores and replication services (kill -9, then
restarts them), pauses them (SIGSTOP/SIGCONT), cuts a server's link, kills an etcd member, and
asks switchovers (`ombra db move DB --to S`); at the end, everything healed and the queues
drained, the checker reads the history and the databases.

Three parts, usable apart:

- check(): the checker, a pure function of a history (no root, no bed; test_nemesis.py proves
  it fails when it should, on synthetic histories). What it asks of every database:
    * every copy's digest equal;
    * acknowledged messages lost: none with --sync-copies >= 1; in asynchronous mode only acks
      of an epoch that a failover ended, no more bytes of them than the generations that
      failover reported lost (lastmove's lost_gens x 1 MiB), and only a tail of that epoch (a
      message sent after a lost one was acknowledged is lost too: the log is a sequence);
    * two actives never: the acks (each carries server, epoch, acked_ns) show one server per
      epoch, never an ack at an older epoch after an ack at a newer one, the server that
      active/<id> named for that epoch, and no two stores logged taking commits at one epoch;
    * messages present never acknowledged: allowed, counted (a retried delivery committed
      before its refusal); a message no client ever sent: a failure;
    * no delivery refused with an error a client may not retry (exit 75 and a store that cannot
      be reached are retried; anything else would bounce the mail).
- Run: the bed set up as a DAG (every server joined, databases spread over the servers, a
  passive copy of each on every other server), the clients, the nemesis, the heal, the final
  reading (listings, digests, the etcd history of active/ and lastmove/, the stores' logs).
- figures() and write_report(): the times and losses the closing note and
  bench/results/failover.md show, beside what Exchange and Patroni promise.

What the harness expects of the product (design19.md): `ombra mail deliver DB MBOX --subject T
--json` printing {"id", "server", "epoch", "acked_ns"} and exiting 75 on a retryable refusal;
`ombra db move DB --to S --etcd URL`; /ombra/dag/<dag>/active/<id> = {"server", "epoch", ...}
and lastmove/<id> = {"kind", "from", "to", "epoch", "lost_gens", "when_ns", "took_ms",
"refused_ms", "error"}; the stores' log line "database DB: taking commits at epoch N on server
S"; `ombra db copy status --json` rows (state, copy_queue, replay_queue, replayed; "edb"/"logs"
when the copy lives at the paths of a deposed active's store)."""
import base64
import json
import os
import random
import re
import statistics
import threading
import time

from dag.conftest import wait_copy
from dag.dagbed import REPLD_PORT, alive

DAG = "nem"
GEN_BYTES = 1 << 20  # one log generation
EX_TEMPFAIL = 75
CLI_TIMEOUT = 30  # one delivery; longer than any pause the nemesis makes
TAKING_RE = re.compile(r"database (\S+): taking commits at epoch (\d+) on server (\S+)")
# What a CLI prints when the store's socket is not there or refuses (a store killed or
# restarting): retried like exit 75.
UNREACHABLE_RE = re.compile(r"nothing listens|connect|refused|no such file|not running|"
                            r"cannot reach|unreachable|timed out", re.I)


def now_ns():
    return time.time_ns()


# =============================================================================================
# The checker
# =============================================================================================

class Verdict:
    """What check() found: ok, the violations (one line each, naming the database), and the
    counts per database (stats[db])."""

    def __init__(self):
        self.violations = []
        self.stats = {}

    @property
    def ok(self):
        return not self.violations

    def fail(self, db, msg):
        self.violations.append(f"{db}: {msg}")

    def __str__(self):
        head = "clean" if self.ok else f"{len(self.violations)} violations"
        lines = [head] + [f"  {v}" for v in self.violations[:40]]
        if len(self.violations) > 40:
            lines.append(f"  ... and {len(self.violations) - 40} more")
        for db, s in sorted(self.stats.items()):
            lines.append(f"  {db}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
        return "\n".join(lines)


def _ack_ok(a):
    ack = a.get("ack") or {}
    return (isinstance(a.get("id"), int) and isinstance(ack.get("server"), str)
            and isinstance(ack.get("epoch"), int) and isinstance(ack.get("acked_ns"), int))


def check(history, final, sync_copies, moves=None, actives=None, store_epochs=None,
          gen_bytes=GEN_BYTES, open_gen_slack=0):
    """The verdict on one run.

    history: every delivery attempt, a dict: db, token (the subject; unique per message a client
      sends; retries of one message share it), mailbox, size (bytes of the body), server (whose
      store it was sent to), t0_ns / t1_ns (CLOCK_REALTIME when sent / answered), outcome ("ok",
      "retry", "timeout", "error"), and for "ok": id and ack = {"server", "epoch", "acked_ns"}.
    final: db -> {"messages": [{"mailbox", "id", "subject"}], "digests": {server: digest}}.
    sync_copies: db -> the --sync-copies of the run (>= 1: no acknowledged message may be lost).
    moves: db -> the lastmove records of the run ({"kind", "epoch", "lost_gens", "error", ...}).
    actives: db -> the active/<id> records of the run ({"server", "epoch", ...}).
    store_epochs: (db, epoch, server) of every "taking commits at epoch" line of the stores.
    open_gen_slack: generations allowed beyond what a failover reported lost (0: the report is
      taken at its word)."""
    v = Verdict()
    moves = moves or {}
    actives = actives or {}
    dbs = sorted(set(final) | {h["db"] for h in history})
    announced = {}
    for db, epoch, server in store_epochs or ():
        announced.setdefault((db, epoch), set()).add(server)
    for (db, epoch), servers in sorted(announced.items()):
        if len(servers) > 1:
            v.fail(db, f"two stores logged taking commits at epoch {epoch}: "
                       f"{', '.join(sorted(servers))}")
    for db in dbs:
        _check_db(v, db, [h for h in history if h["db"] == db], final.get(db),
                  sync_copies.get(db, 0), moves.get(db, []), actives.get(db, []), gen_bytes,
                  open_gen_slack)
    return v


def _check_db(v, db, hist, fin, sync, moves, actives, gen_bytes, slack):
    st = v.stats[db] = dict(attempts=len(hist), acked=0, errors=0, lost=0, lost_allowed=0,
                            unacked_present=0, duplicates=0, two_actives=0, epochs=0)
    acks = [h for h in hist if h["outcome"] == "ok"]
    st["acked"] = len(acks)
    # "never an error that loses mail": a refusal a client may not retry would bounce the mail.
    errors = [h for h in hist if h["outcome"] == "error"]
    st["errors"] = len(errors)
    if errors:
        v.fail(db, f"{len(errors)} deliveries refused with an error that is not retryable, e.g. "
                   f"exit {errors[0].get('rc')} from {errors[0]['server']}: "
                   f"{errors[0].get('err', '')[:200]}")
    if fin is None:
        v.fail(db, "no final reading of the database (its listing and digests)")
        return

    # -- every copy the same
    digests = fin.get("digests") or {}
    if len(digests) < 2:
        v.fail(db, f"digests of {len(digests)} copies only: {digests}")
    if len(set(digests.values())) > 1 or None in digests.values():
        v.fail(db, "copies differ: " + ", ".join(f"{s} {d}" for s, d in sorted(digests.items())))

    # -- two actives
    bad = [h for h in acks if not _ack_ok(h)]
    if bad:
        v.fail(db, f"{len(bad)} acknowledgements without id, server, epoch and acked_ns (mail "
                   f"deliver --json), e.g. {bad[0].get('id')} {bad[0].get('ack')}")
    good = sorted((h for h in acks if _ack_ok(h)), key=lambda h: h["ack"]["acked_ns"])
    by_epoch = {}
    for h in good:
        by_epoch.setdefault(h["ack"]["epoch"], set()).add(h["ack"]["server"])
        if h["ack"]["server"] != h["server"]:
            v.fail(db, f"message {h['token']} sent to {h['server']}'s store was acknowledged "
                       f"by {h['ack']['server']}")
    st["epochs"] = len(by_epoch)
    for e, servers in sorted(by_epoch.items()):
        if len(servers) > 1:
            st["two_actives"] += 1
            v.fail(db, f"epoch {e} acknowledged by {', '.join(sorted(servers))}: two actives")
    named = {}
    for r in actives:
        if isinstance(r.get("epoch"), int):
            named.setdefault(r["epoch"], set()).add(r.get("server"))
    for e, servers in sorted(named.items()):
        if len(servers) > 1:
            v.fail(db, f"active/<id> named {', '.join(sorted(map(str, servers)))} at epoch {e}")
    for e, servers in sorted(by_epoch.items()):
        if named and e not in named:
            v.fail(db, f"acks at epoch {e}, which active/<id> never held")
        elif named and servers - named[e]:
            st["two_actives"] += 1
            v.fail(db, f"acks at epoch {e} from {', '.join(sorted(servers - named[e]))}, but "
                       f"active/<id> named {', '.join(sorted(map(str, named[e])))}")
    newest = None
    for h in good:
        e = h["ack"]["epoch"]
        if newest is not None and e < newest["ack"]["epoch"]:
            st["two_actives"] += 1
            if st["two_actives"] <= 5:
                v.fail(db, f"ack of {h['token']} by {h['ack']['server']} at epoch {e} "
                           f"(acked_ns {h['ack']['acked_ns']}) after an ack by "
                           f"{newest['ack']['server']} at epoch {newest['ack']['epoch']} "
                           f"(acked_ns {newest['ack']['acked_ns']}): two actives")
        else:
            newest = h

    # -- what is there
    present = {}
    for m in fin.get("messages", ()):
        present.setdefault((m["mailbox"], m["id"]), m.get("subject"))
    sent = {h["token"] for h in hist}
    acked_keys = {(h["mailbox"], h["id"]) for h in acks if isinstance(h.get("id"), int)}
    seen = {}
    for (mbox, mid), subj in present.items():
        seen[subj] = seen.get(subj, 0) + 1
        if subj not in sent:
            v.fail(db, f"message {mid} in {mbox} ({subj!r}) was never sent by a client")
        elif (mbox, mid) not in acked_keys:
            st["unacked_present"] += 1
    st["duplicates"] = sum(n - 1 for s, n in seen.items() if n > 1)

    # -- acknowledged and lost
    lost = [h for h in acks if isinstance(h.get("id"), int)
            and present.get((h["mailbox"], h["id"])) != h["token"]]
    st["lost"] = len(lost)
    if not lost:
        return
    if sync >= 1:
        v.fail(db, f"{len(lost)} acknowledged messages lost with --sync-copies {sync}, e.g. "
                   + ", ".join(f"{h['token']} (id {h['id']}, epoch "
                               f"{(h.get('ack') or {}).get('epoch')})" for h in lost[:5]))
        return
    ends = sorted((m for m in moves if isinstance(m.get("epoch"), int) and not m.get("error")),
                  key=lambda m: m["epoch"])
    by_lost_epoch = {}
    for h in lost:
        by_lost_epoch.setdefault((h.get("ack") or {}).get("epoch"), []).append(h)
    for e, hs in sorted(by_lost_epoch.items(), key=lambda x: (x[0] is None, x[0])):
        end = next((m for m in ends if e is not None and m["epoch"] > e), None)
        if end is None or end.get("kind") != "failover":
            what = (f"a {end.get('kind')} to epoch {end['epoch']}" if end else
                    "no move (it is still the active's epoch)")
            v.fail(db, f"{len(hs)} acknowledged messages of epoch {e} lost, and that epoch "
                       f"ended by {what}, e.g. {hs[0]['token']} (id {hs[0]['id']})")
            continue
        gens = end.get("lost_gens")
        gens = gens if isinstance(gens, int) else 0
        size = sum(h.get("size", 0) for h in hs)
        if size > (gens + slack) * gen_bytes:
            v.fail(db, f"{len(hs)} acknowledged messages of epoch {e} lost ({size} bytes), more "
                       f"than the {gens} generations the failover to epoch {end['epoch']} "
                       f"reported lost")
            continue
        # Only a tail: a message sent after a lost one was acknowledged came later in the log.
        first = min(h["ack"]["acked_ns"] for h in hs if _ack_ok(h)) if any(
            _ack_ok(h) for h in hs) else None
        lost_keys = {(h["mailbox"], h["id"]) for h in hs}
        holes = [h for h in good if first is not None and h["ack"]["epoch"] == e
                 and h["t0_ns"] > first and (h["mailbox"], h["id"]) not in lost_keys]
        if holes:
            v.fail(db, f"epoch {e}: {holes[0]['token']} is there but was sent after "
                       f"{len(hs)} lost messages were acknowledged: a hole in the log")
            continue
        st["lost_allowed"] += len(hs)


# =============================================================================================
# Reading the DAG
# =============================================================================================

def _b64(s):
    return base64.b64encode(s.encode()).decode()


def etcd_value(bed, key, timeout=1.0):
    """The JSON value of key, or None (absent, or etcd not answering within timeout)."""
    try:
        kvs = bed.etcd_request("/v3/kv/range", {"key": _b64(key)}, timeout).get("kvs", [])
    except (OSError, ValueError):
        return None
    if not kvs:
        return None
    try:
        return json.loads(base64.b64decode(kvs[0].get("value", "")))
    except ValueError:
        return None


def key_history(bed, key):
    """Every value key held (JSON, oldest first), read back through etcd's revisions (the bed's
    etcd never compacts): the value now, then the one before its mod revision, and so on."""
    out = []
    rev = None
    while True:
        req = {"key": _b64(key)}
        if rev is not None:
            req["revision"] = rev
        kvs = bed.etcd_request("/v3/kv/range", req).get("kvs", [])
        if not kvs:
            break
        kv = kvs[0]
        try:
            out.append(json.loads(base64.b64decode(kv.get("value", ""))))
        except ValueError:
            out.append({"unparsable": kv.get("value")})
        mod = int(kv["mod_revision"])
        if mod <= 1:
            break
        rev = mod - 1
    return out[::-1]


def store_epochs(bed, names):
    """(db, epoch, server) of every "taking commits at epoch" line in the stores' logs."""
    out = []
    for s in bed.servers:
        for log in s.logs:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                continue
            for m in TAKING_RE.finditer(text):
                if m.group(1) in names:
                    out.append((m.group(1), int(m.group(2)), m.group(3)))
    return out


# =============================================================================================
# The run
# =============================================================================================

class Config:
    """One run's parameters. seed: the nemesis's choices (printed on failure; OMBRA_NEMESIS_SEED
    repeats them)."""

    def __init__(self, seconds=60, seed=None, servers=3, etcd_members=1, dbs=3,
                 clients_per_db=1, lease_s=2, calm_s=10, fault_s=(2.0, 7.0), quiet_s=(3.0, 6.0),
                 recover_s=120, sync=None, msg_size=(1024, 12288), weights=None, min_events=0):
        self.seconds = seconds
        # The faults go on past `seconds` until this many have begun (at most 4 x seconds): on
        # a slow machine a short run's steps (restarts, moves) take longer than planned.
        self.min_events = min_events
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.servers = servers
        self.etcd_members = etcd_members
        self.dbs = [f"db{i + 1}" for i in range(dbs)]
        self.clients_per_db = clients_per_db
        self.lease_s = lease_s
        self.calm_s = calm_s
        self.fault_s = fault_s
        self.quiet_s = quiet_s
        self.recover_s = recover_s
        # --sync-copies per database: synchronous and asynchronous side by side (db1 sync).
        self.sync = sync or {db: (1 if i % 2 == 0 else 0) for i, db in enumerate(self.dbs)}
        self.msg_size = msg_size
        self.weights = weights or dict(kill_store=3, kill_repld=2, pause=2, partition=2,
                                       kill_etcd=1, switchover=3)

    def as_dict(self):
        return {k: v for k, v in vars(self).items()}


def product_gaps(s):
    """What the harness needs from the CLI that this build lacks (one line each)."""
    gaps = []
    h = s.ombra("mail", "deliver", "--help", check=False)
    text = h.out + h.err
    for opt in ("--json", "--retry"):
        if opt not in text:
            gaps.append(f"ombra mail deliver has no {opt}")
    r = s.ombra("db", "move", "--help", check=False)
    if r.rc != 0 or "--to" not in r.out + r.err:
        gaps.append("ombra db move DB --to S does not exist")
    return gaps


def join(bed, s, ca):
    """s joins the DAG (its store on the etcd directory); its certificate issued by ca first."""
    addr = ["--address", f"{s.addr}:{REPLD_PORT}", "--etcd", bed.etcd_url]
    if s is not ca:
        ca.ombra("dag", "add-server", s.server, *addr, "--out", str(s.home / "dag"))
    s.ombra("dag", "add-server", s.server, *addr)


class Run:
    """One nemesis run on a started bed: run.go() sets up, delivers, breaks, heals, reads and
    checks; run.verdict, run.figures after."""

    def __init__(self, bed, cfg, log=print):
        self.bed = bed
        self.cfg = cfg
        self.log = log
        self.url = bed.etcd_url
        self.servers = list(bed.servers)
        self.by_name = {s.server: s for s in self.servers}
        self.ids = {}  # db name -> id
        self.history = []
        self.hlock = threading.Lock()
        self.events = []  # what the nemesis did
        self.switchovers = []  # each db move asked: db, to, rc, seconds, err
        self.errors = []  # exceptions of the threads
        self.stop_clients = threading.Event()
        self.stop_nemesis = threading.Event()
        self.phase = "setup"
        self.cut = set()  # servers whose link is down now
        self.paused = set()
        self.final = {}
        self.moves = {}
        self.actives = {}
        self.verdict = None
        self.figures = None
        self.t_start_ns = None
        self.t_heal_ns = None
        # Without --json (a build before issue 19), deliveries go on and print the id alone:
        # the checker then fails every acknowledgement for want of an epoch.
        self.json_flag = ["--json"] if not any("--json" in g for g in product_gaps(
            self.servers[0])) else []

    # -- setting up
    def setup(self):
        bed, cfg, a = self.bed, self.cfg, self.servers[0]
        for i, db in enumerate(cfg.dbs):
            self.servers[i % len(self.servers)].ombra("db", "new", db)
        a.ombra("dag", "init", DAG, "--etcd", self.url)
        for s in self.servers:
            join(bed, s, a)
        for s in self.servers:
            s.start_repld(args=("--lease-seconds", str(cfg.lease_s)))
        st = json.loads(a.ombra("dag", "status", "--json", "--etcd", self.url).out)
        self.ids = {d["name"]: d["id"] for d in st["databases"]}
        missing = set(cfg.dbs) - set(self.ids)
        assert not missing, f"databases not in the DAG after the joins: {missing}"
        for i, db in enumerate(cfg.dbs):
            home = self.servers[i % len(self.servers)]
            for s in self.servers:
                if s is not home:
                    home.ombra("db", "copy", "add", db, "--server", s.server, "--etcd", self.url)
            if cfg.sync[db]:
                home.ombra("db", "set", db, "--sync-copies", str(cfg.sync[db]), "--etcd",
                           self.url)
        time.sleep(3)  # the actives' stores hear of --sync-copies with the copies' next request

    # -- the clients
    def active_of(self, db):
        rec = etcd_value(self.bed, f"/ombra/dag/{DAG}/active/{self.ids[db]}")
        return rec.get("server") if isinstance(rec, dict) else None

    def actives_now(self):
        return {db: etcd_value(self.bed, f"/ombra/dag/{DAG}/active/{self.ids[db]}")
                for db in self.cfg.dbs}

    def deliver(self, s, db, mailbox, token, body):
        """One attempt: the history entry."""
        h = dict(db=db, token=token, mailbox=mailbox, size=len(body), server=s.server,
                 phase=self.phase, t0_ns=now_ns())
        try:
            r = s.ombra("mail", "deliver", db, mailbox, "--subject", token, *self.json_flag,
                        input=body, check=False, timeout=CLI_TIMEOUT)
        except Exception as e:  # subprocess.TimeoutExpired: a paused store
            h.update(t1_ns=now_ns(), outcome="timeout", err=f"{type(e).__name__}: {e}"[:300])
            return h
        h["t1_ns"] = now_ns()
        h["rc"] = r.rc
        if r.rc == 0:
            h["outcome"] = "ok"
            try:
                o = json.loads(r.out)
            except ValueError:
                o = None
            if isinstance(o, dict):
                h["id"] = o.get("id")
                h["ack"] = {k: o.get(k) for k in ("server", "epoch", "acked_ns")}
            else:  # a CLI without --json's output: the id alone
                m = re.search(r"(\d+)\s*$", r.out)
                h["id"] = int(m.group(1)) if m else None
                h["ack"] = None
        elif r.rc == EX_TEMPFAIL or UNREACHABLE_RE.search(r.err):
            h.update(outcome="retry", err=r.err.strip()[:300])
        else:
            h.update(outcome="error", err=r.err.strip()[:300])
        return h

    def client(self, db, k):
        rng = random.Random(f"{self.cfg.seed}/{db}/{k}")
        server = None
        seq = 0
        try:
            while not self.stop_clients.is_set():
                seq += 1
                token = f"{db}.c{k}.{seq}"
                mailbox = f"c{k}m{seq % 4}"
                size = rng.randint(*self.cfg.msg_size)
                body = (f"Subject: {token}\n\n".encode()
                        + rng.randbytes(size // 2).hex().encode())[:size]
                backoff = 0.05
                while not self.stop_clients.is_set():
                    if server is None:
                        server = self.active_of(db)
                        if server is None:  # etcd away: any server; it redirects by refusing
                            server = rng.choice(self.servers).server
                    h = self.deliver(self.by_name[server], db, mailbox, token, body)
                    with self.hlock:
                        self.history.append(h)
                    if h["outcome"] == "ok":
                        break
                    server = None  # ask etcd again: the active may have moved
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
        except BaseException as e:  # pytest.fail included: reported by the main thread
            self.errors.append(f"client {db}/{k}: {type(e).__name__}: {e}")

    # -- the nemesis
    def note(self, kind, **kw):
        ev = dict(kind=kind, t0_ns=now_ns(), actives={
            db: (r or {}).get("epoch") and (r["server"], r["epoch"])
            for db, r in self.actives_now().items()}, **kw)
        self.events.append(ev)
        self.log(f"nemesis {time.monotonic() - self.t0:6.1f} s: {kind} "
                 + " ".join(f"{k}={v}" for k, v in kw.items()))
        return ev

    def nemesis(self):
        rng = random.Random(self.cfg.seed)
        kinds = sorted(self.cfg.weights)
        try:
            while not self.stop_nemesis.is_set():
                # Every step draws the same numbers whatever it does: the seed repeats the choices.
                kind = rng.choices(kinds, [self.cfg.weights[k] for k in kinds])[0]
                db = rng.choice(self.cfg.dbs)
                at_active = rng.random() < 0.7
                other = rng.choice(self.servers)
                dur = rng.uniform(*self.cfg.fault_s)
                quiet = rng.uniform(*self.cfg.quiet_s)
                what = rng.choice(("store", "repld", "server"))
                member = rng.randrange(len(self.bed.etcd))
                to_pick = rng.random()
                act = self.active_of(db)
                target = self.by_name.get(act) if at_active and act else other
                self.step(kind, db, target, dur, what, member, to_pick)
                self.stop_nemesis.wait(quiet)
        except BaseException as e:
            self.errors.append(f"nemesis: {type(e).__name__}: {e}")
        finally:
            try:
                self.heal()
            except BaseException as e:
                self.errors.append(f"healing: {type(e).__name__}: {e}")

    def step(self, kind, db, s, dur, what, member, to_pick):
        if kind == "switchover":
            act = self.active_of(db)
            others = [x for x in self.servers if x.server != act]
            to = others[int(to_pick * len(others))]
            ev = self.note("switchover", db=db, src=act, to=to.server)
            asker = next(x for x in self.servers if x.server not in self.cut)
            t = time.monotonic()
            r = asker.ombra("db", "move", db, "--to", to.server, "--etcd", self.url,
                            "--timeout", "60", check=False, timeout=180)
            ev.update(t1_ns=now_ns(), rc=r.rc, seconds=time.monotonic() - t,
                      out=r.out.strip()[-300:], err=r.err.strip()[-300:])
            self.switchovers.append(ev)
            return
        if kind == "kill_store":
            ev = self.note(kind, server=s.server)
            s.kill9("store")
            self.stop_nemesis.wait(dur)
            s.restart("store")
        elif kind == "kill_repld":
            ev = self.note(kind, server=s.server)
            s.kill9("repld")
            self.stop_nemesis.wait(dur)
            s.restart("repld")
        elif kind == "pause":
            ev = self.note(kind, server=s.server, what=what)
            procs = s.daemons() if what == "server" else [s.process(what)]
            procs = [p for p in procs if alive(p)]
            self.paused.add(s.server)
            for p in procs:
                p.send_signal(19)  # SIGSTOP
            self.stop_nemesis.wait(dur)
            for p in procs:
                p.send_signal(18)  # SIGCONT
            self.paused.discard(s.server)
        elif kind == "partition":
            ev = self.note(kind, server=s.server)
            self.cut.add(s.server)
            s.link_down()
            self.stop_nemesis.wait(dur)
            s.link_up()
            self.cut.discard(s.server)
        elif kind == "kill_etcd":
            ev = self.note(kind, member=member)
            self.bed.etcd_kill9(member)
            self.stop_nemesis.wait(dur)
            self.bed.etcd_restart(member)
        else:
            raise ValueError(kind)
        ev["t1_ns"] = now_ns()

    def heal(self):
        """Everything back: links up, every daemon running and resumed, every etcd member up."""
        for s in self.servers:
            s.link_up()
            s.cont()
        self.cut.clear()
        self.paused.clear()
        for m in range(len(self.bed.etcd)):
            if not alive(self.bed.etcd[m].proc):
                self.bed.etcd_restart(m)
        for s in self.servers:
            for proc in ("store", "vssd", "repld"):
                if not alive(s.process(proc)):
                    s.restart(proc)

    # -- the end
    def wait_recovered(self, since_ns, seconds, what):
        """Every database acknowledges mail sent after since_ns within seconds."""
        deadline = time.monotonic() + seconds
        while True:
            with self.hlock:
                fresh = {h["db"] for h in self.history
                         if h["outcome"] == "ok" and h["t0_ns"] > since_ns}
            missing = set(self.cfg.dbs) - fresh
            if not missing:
                return
            if self.errors or time.monotonic() > deadline:
                raise AssertionError(
                    f"no delivery acknowledged for {', '.join(sorted(missing))} "
                    f"{time.monotonic() - deadline + seconds:.0f} s after {what}"
                    + "".join(f"\n  {e}" for e in self.errors) + self.last_attempts(missing))
            time.sleep(0.5)

    def last_attempts(self, dbs):
        with self.hlock:
            last = {h["db"]: h for h in self.history if h["db"] in dbs}
        return "".join(f"\n  {db}: last attempt {h}" if (h := last.get(db)) else
                       f"\n  {db}: no attempt" for db in sorted(dbs))

    def copy_rows(self, db):
        s = self.servers[0]
        return json.loads(s.ombra("db", "copy", "status", db, "--json", "--etcd", self.url).out)["copies"]

    def wait_drained(self, db, active, seconds=120):
        closed = active.db_show(db)["gen_current"] - 1
        deadline = time.monotonic() + seconds
        while True:
            rows = self.copy_rows(db)
            late = [r for r in rows if not r.get("active") and not (
                r["state"] == "Healthy" and r["copy_queue"] == 0 and r["replay_queue"] == 0
                and r["replayed"] >= closed)]
            if not late:
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"{db}: copies not drained through generation {closed} "
                                     f"{seconds} s after the end: {late}")
            time.sleep(0.5)

    def copy_paths(self, db, s, row):
        """Where the passive copy of db on s lives: the paths its status row or the database's
        record names (a deposed active's store files, replayed in place), else the copy folder."""
        if row.get("edb") and row.get("logs"):
            return row["edb"], row["logs"]
        rec = etcd_value(self.bed, f"/ombra/dag/{DAG}/databases/{self.ids[db]}", 5) or {}
        c = (rec.get("copies") or {}).get(s.server) or {}
        if c.get("edb") and c.get("logs"):
            return c["edb"], c["logs"]
        folder = s.home / "copies" / self.ids[db]
        return str(folder / f"{db}.edb"), str(folder / "logs")

    def read_final(self):
        a0 = self.servers[0]
        for db in self.cfg.dbs:
            act = self.by_name[self.active_of(db)]
            digests = {act.server: act.digest(db)}
            act.ombra("db", "dismount", db)  # its generation closed: the copies get it all
            act.ombra("db", "mount", db)
            rows = self.wait_drained(db, act)
            for row in rows:
                if row.get("active"):
                    continue
                s = self.by_name[row["server"]]
                a0.ombra("db", "copy", "suspend", db, "--server", s.server, "--etcd", self.url)
                try:
                    wait_copy(a0, self.bed, db, s.server, lambda c: c["state"] == "Suspended",
                              what="suspending")
                    edb, logs = self.copy_paths(db, s, row)
                    d = s.ombra("dbutil", "digest", edb, "--logs", logs, check=False)
                    digests[s.server] = d.out.strip() if d.rc == 0 else None
                    if d.rc != 0:
                        self.log(f"{db} on {s.server}: {d.describe()}")
                finally:
                    a0.ombra("db", "copy", "resume", db, "--server", s.server, "--etcd",
                             self.url)
            mailboxes = sorted({h["mailbox"] for h in self.history if h["db"] == db})
            msgs = []
            for mb in mailboxes:
                r = act.ombra("mail", "list", db, mb, "--json", check=False)
                if r.rc != 0:
                    continue  # a mailbox whose every message was lost is not there
                for m in json.loads(r.out)["messages"]:
                    msgs.append(dict(mailbox=mb, id=m["id"], subject=m.get("subject")))
            self.final[db] = dict(messages=msgs, digests=digests, active=act.server)
            base = f"/ombra/dag/{DAG}"
            self.actives[db] = key_history(self.bed, f"{base}/active/{self.ids[db]}")
            self.moves[db] = key_history(self.bed, f"{base}/lastmove/{self.ids[db]}")

    def go(self):
        """The run; whatever its end, the whole record of it in nemesis-run.json in the bed's
        folder (kept when the test fails): what the nemesis did, every attempt, the verdict."""
        try:
            return self._go()
        finally:
            self.dump(self.bed.tmp / "nemesis-run.json")

    def dump(self, path):
        rec = dict(config=self.cfg.as_dict(), events=self.events, switchovers=self.switchovers,
                   errors=self.errors, moves=self.moves, actives=self.actives, ids=self.ids,
                   verdict=str(self.verdict) if self.verdict else None, final=self.final,
                   history=self.history)
        try:
            with open(path, "w") as f:
                json.dump(rec, f, indent=0, default=str)
        except OSError as e:
            self.log(f"nemesis: could not write {path}: {e}")

    def _go(self):
        cfg = self.cfg
        self.t0 = time.monotonic()
        self.log(f"nemesis seed {cfg.seed}: {cfg.seconds} s, {cfg.servers} servers, "
                 f"{cfg.etcd_members} etcd members, databases {cfg.sync} (--sync-copies)")
        self.setup()
        threads = [threading.Thread(target=self.client, args=(db, k), daemon=True)
                   for db in cfg.dbs for k in range(cfg.clients_per_db)]
        self.t_start_ns = now_ns()
        self.phase = "calm"
        nem = threading.Thread(target=self.nemesis, daemon=True)
        try:
            for t in threads:
                t.start()
            time.sleep(cfg.calm_s)
            self.wait_recovered(self.t_start_ns, 60, "the clients started (before any fault)")
            self.phase = "nemesis"
            nem.start()
            self.stop_nemesis.wait(cfg.seconds)
            cap = time.monotonic() + 3 * cfg.seconds
            while (sum(1 for e in self.events if e["kind"] in cfg.weights) < cfg.min_events
                   and nem.is_alive() and time.monotonic() < cap):
                time.sleep(0.1)
            self.stop_nemesis.set()
            nem.join(300)
            assert not nem.is_alive(), "the nemesis did not stop within 300 s"
            self.phase = "healed"
            self.t_heal_ns = now_ns()
            self.wait_recovered(self.t_heal_ns, cfg.recover_s, "everything was healed")
        finally:
            self.stop_nemesis.set()
            self.stop_clients.set()
            for t in threads:
                t.join(CLI_TIMEOUT + 10)
            if nem.is_alive():
                nem.join(300)
        assert not self.errors, "\n".join(self.errors)
        self.read_final()
        self.verdict = check(self.history, self.final, cfg.sync, self.moves, self.actives,
                             store_epochs(self.bed, set(cfg.dbs)))
        self.figures = figures(self)
        return self.verdict


# =============================================================================================
# Figures
# =============================================================================================

def pct(v, p):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    import math
    return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]


def _summary(v):
    v = [x for x in v if x is not None]
    return dict(n=len(v), median=statistics.median(v) if v else None, max=max(v) if v else None)


def figures(run):
    """The closing note's figures from a finished run."""
    cfg = run.cfg
    acks = [h for h in run.history if h["outcome"] == "ok" and _ack_ok(h)]
    failover_s, reported_ms, lost_gens, switch_s, refused_ms = [], [], [], [], []
    failovers, switchovers, refused_moves = [], [], []
    for db in cfg.dbs:
        dacks = sorted((h for h in acks if h["db"] == db), key=lambda h: h["ack"]["acked_ns"])
        for m in run.moves.get(db, []):
            if m.get("error"):
                refused_moves.append({**m, "db": db})
                continue
            e = m.get("epoch")
            first = next((h["ack"]["acked_ns"] for h in dacks if h["ack"]["epoch"] >= e), None)
            if m.get("kind") == "failover":
                faults = [ev for ev in run.events if ev["kind"] != "switchover"
                          and ev["t0_ns"] <= (m.get("when_ns") or 0)]
                fault = faults[-1] if faults else None
                t = (first - fault["t0_ns"]) / 1e9 if fault and first else None
                failover_s.append(t)
                reported_ms.append(m.get("took_ms"))
                if not cfg.sync.get(db):
                    lost_gens.append(m.get("lost_gens"))
                failovers.append({**m, "db": db, "fault": fault and fault["kind"],
                                  "seconds": t, "sync": cfg.sync.get(db)})
            elif m.get("kind") == "switchover":
                before = [h["ack"]["acked_ns"] for h in dacks if h["ack"]["epoch"] < e]
                gap = (first - before[-1]) / 1e9 if before and first else None
                switch_s.append(gap)
                refused_ms.append(m.get("refused_ms"))
                switchovers.append({**m, "db": db, "client_gap_s": gap})

    def lat(sync, phase=None):
        v = [(h["t1_ns"] - h["t0_ns"]) / 1e6 for h in run.history if h["outcome"] == "ok"
             if bool(cfg.sync.get(h["db"])) == sync and (phase is None or h["phase"] == phase)]
        return dict(n=len(v), p50_ms=pct(v, 50), p99_ms=pct(v, 99))

    v = run.verdict
    outcomes, refusals = {}, {}
    for h in run.history:
        outcomes[h["outcome"]] = outcomes.get(h["outcome"], 0) + 1
        if h["outcome"] != "ok":
            # the refusal's text without the numbers that differ each time
            k = f"{h['outcome']} {h.get('rc')}: " + re.sub(r"\d+", "N", h.get("err", ""))[:160]
            refusals[k] = refusals.get(k, 0) + 1
    return dict(
        seed=cfg.seed, config=cfg.as_dict(),
        nemesis_events={k: sum(1 for e in run.events if e["kind"] == k) for k in cfg.weights},
        attempts=outcomes,
        refusals=dict(sorted(refusals.items(), key=lambda x: -x[1])),
        failover_to_accepting_s=_summary(failover_s),
        failover_reported_ms=_summary(reported_ms),
        switchover_mail_refused_client_s=_summary(switch_s),
        switchover_refused_ms=_summary(refused_ms),
        lost_gens_per_async_failover=lost_gens,
        acked_lost_sync=sum(v.stats[db]["lost"] for db in cfg.dbs if cfg.sync.get(db)),
        acked_lost_async=sum(v.stats[db]["lost"] for db in cfg.dbs if not cfg.sync.get(db)),
        unacked_present=sum(s["unacked_present"] for s in v.stats.values()),
        two_actives=sum(s["two_actives"] for s in v.stats.values()),
        latency_calm=dict(sync=lat(True, "calm"), async_=lat(False, "calm")),
        latency_all=dict(sync=lat(True), async_=lat(False)),
        failovers=failovers, switchovers=switchovers, refused_moves=refused_moves,
        switchover_requests=[{k: e.get(k) for k in ("db", "to", "rc", "seconds", "err")}
                             for e in run.switchovers],
        verdict=dict(ok=v.ok, violations=v.violations, stats=v.stats))


def _f(x, nd=1, unit=""):
    return "-" if x is None else f"{x:,.{nd}f}{unit}"


def write_report(fig, md_path, command):
    """bench/results/failover.md and .json: the figures beside what Exchange and Patroni
    promise."""
    json_path = os.path.splitext(md_path)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(fig, f, indent=1, default=str)
    c = fig["config"]
    fo, sw = fig["failover_to_accepting_s"], fig["switchover_mail_refused_client_s"]
    swr = fig["switchover_refused_ms"]
    lc, la = fig["latency_calm"], fig["latency_all"]
    gens = fig["lost_gens_per_async_failover"]
    rows = [
        ("time from the fault to the new active accepting mail, median / max",
         f"{_f(fo['median'])} / {_f(fo['max'])} s ({fo['n']} failovers)",
         "about 30 s", "ttl 30 s + loop_wait 10 s (defaults): up to about 40 s"),
        ("switchover, mail refused (clients' gap), median / max",
         f"{_f(sw['median'])} / {_f(sw['max'])} s ({sw['n']}); the primary's refused_ms "
         f"{_f(swr['median'], 0)} / {_f(swr['max'], 0)} ms", "-", "-"),
        ("generations lost per asynchronous failover",
         ", ".join(map(str, gens)) if gens else "- (none)",
         "within the mount dial: Lossless 0, Good 6, Best 12", "maximum_lag_on_failover 1 MB"),
        ("acknowledged commits lost, --sync-copies 1", str(fig["acked_lost_sync"]),
         "- (no synchronous mode)", "0 with synchronous_mode"),
        ("acknowledged messages lost, asynchronous (allowed by the failovers' reports)",
         str(fig["acked_lost_async"]), "-", "-"),
        ("moments with two actives", str(fig["two_actives"]), "-", "-"),
        ("delivery latency p50 / p99, no faults: --sync-copies 1 vs 0",
         f"{_f(lc['sync']['p50_ms'])} / {_f(lc['sync']['p99_ms'])} ms vs "
         f"{_f(lc['async_']['p50_ms'])} / {_f(lc['async_']['p99_ms'])} ms", "-", "-"),
        ("the same over the whole run (faults included)",
         f"{_f(la['sync']['p50_ms'])} / {_f(la['sync']['p99_ms'])} ms vs "
         f"{_f(la['async_']['p50_ms'])} / {_f(la['async_']['p99_ms'])} ms", "-", "-"),
    ]
    v = fig["verdict"]
    dbs = ", ".join(f"{d} (--sync-copies {n})" for d, n in c["sync"].items())
    lines = [
        "# Failover: the nemesis run (tests/system/dag/nemesis.py, `make nemesis`)",
        "",
        f"`{command}`: seed {fig['seed']}, {c['seconds']} s of faults after {c['calm_s']} s "
        f"without, {c['servers']} servers in network namespaces, {c['etcd_members']} etcd "
        f"member(s), databases {dbs}"
        f", each with a copy on every server, {c['clients_per_db']} client(s) per database "
        f"delivering {c['msg_size'][0]}-{c['msg_size'][1]} byte messages through the CLI, "
        f"ombra-repld --lease-seconds {c['lease_s']}. Faults: "
        + ", ".join(f"{k} {n}" for k, n in fig["nemesis_events"].items())
        + f". Delivery attempts: {fig['attempts']}. Verdict: "
        + ("clean." if v["ok"] else f"{len(v['violations'])} violations (below)."),
        "",
        "| figure | Ombra (this run) | Exchange (promise) | Patroni + etcd (defaults) |",
        "|---|---|---|---|",
    ] + [f"| {a} | {b} | {x} | {p} |" for a, b, x, p in rows] + [
        "",
        "Times are measured by the clients (CLOCK_REALTIME of the fault, and the acked_ns of the "
        "first acknowledgement at the new epoch), so they include a delivery's process start "
        "(the CLI runs once per message) and the clients' back-off (at most 0.5 s).",
    ]
    if not v["ok"]:
        lines += ["", "Violations:", ""] + [f"- {x}" for x in v["violations"][:40]]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return md_path, json_path


def env_config(**defaults):
    """A Config from OMBRA_NEMESIS_* (SECONDS, SEED, SERVERS, ETCD_MEMBERS, DBS, CLIENTS)."""
    e = os.environ
    kw = dict(defaults)
    for var, key in (("SECONDS", "seconds"), ("SEED", "seed"), ("SERVERS", "servers"),
                     ("ETCD_MEMBERS", "etcd_members"), ("DBS", "dbs"),
                     ("CLIENTS", "clients_per_db")):
        if e.get(f"OMBRA_NEMESIS_{var}"):
            kw[key] = int(e[f"OMBRA_NEMESIS_{var}"])
    return Config(**kw)
