#!/usr/bin/env python3
"""Continuous replication under a steady delivery load, beside PostgreSQL 15 streaming
replication on the same machine. Ombra: a DAG of three servers on 127.0.0.1 (etcd, and each
server's ombra-store, ombra-vssd, ombra-repld), three databases on the first server with 0, 1
and 2 passive copies; --threads clients deliver --size-byte messages, each acknowledged once
durable, for --seconds per database per round (the databases take turns, --rounds rounds).
While they run, every 0.2 s: `ombra db copy status DB --json`, the generations closed in the
active's log folder and those copied into each passive's. Then a catch-up: a copy suspended,
--backlog-mb of mail loaded, the copy resumed and timed until it has replayed all of it. Every
passive copy is checked afterwards: its digest (`ombra dbutil digest`, suspended) must equal the
active's, or the benchmark fails.

PostgreSQL (root, Debian's postgresql 15): a primary alone, then with one streaming standby
(pg_basebackup -R, a replication slot), pgbench -c THREADS inserting a --size-byte bytea
(storage external: not compressed) per transaction, with synchronous_commit on and off, and
with the standby synchronous (synchronous_standby_names '*') (Ombra's beside it: a fourth
database, sync1, with one copy and --sync-copies 1, its turn after the others in each round);
the standby's receive and replay
LSNs sampled every 0.2 s; the same catch-up (standby stopped, --backlog-mb of WAL, started).
Prints a table and writes bench/results/replication.json.

    bench/replication.py [--build DIR] [--seconds 15] [--rounds 2] [--threads 4] [--size 8192]
                         [--backlog-mb 64] [--no-pg] [--json FILE]
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from benchlib import PG_BIN, ROOT, fmt, fstype, parser, ratio, utc_stamp
from dagutil import (GEN_MB, SAMPLE_S, Dag, Deliverer, Failed, PgBase, copy_of, cpu_now, drain, etcd_counters,
                     need_dag, on_term, pct, pg_tmp, pgbench_lines, verify, wait_until)


def load_phase(dag, db, copies, a):
    """--seconds of deliveries to db on mbx1 from --threads clients, sampling every 0.2 s.
    Returns the phase's deliveries, latencies, seconds and samples."""
    act = dag.servers[0]
    passives = dag.servers[1:1 + copies]
    stop = threading.Event()
    bodies = [os.urandom(a.size) for _ in range(64)]
    ds = [Deliverer(f"{act.dir}/run/store.sock", db, bodies, k, stop) for k in range(a.threads)]
    samples = []
    cpu0 = cpu_now(dag)
    etcd0 = etcd_counters(dag)
    t0 = time.monotonic()
    for d in ds:
        d.start()
    while time.monotonic() - t0 < a.seconds:
        t = time.monotonic()
        # every database's copies (a database without copies is not in the DAG): the same work
        # on the machine whatever the phase
        st = [x for x in act.json("db", "copy", "status")["copies"] if x["database"]["name"] == db]
        smp = {"t": t - t0, "active_closed": act.closed(db), "copies": {}}
        for s in passives:
            c = next((x for x in st if x["server"] == s.name), None)
            if c is None:
                raise Failed(f"`ombra db copy status {db}` lists no copy on {s.name}")
            smp["copies"][s.name] = {"state": c["state"], "copied": c["copied"], "replayed": c["replayed"],
                                     "copy_queue": c["copy_queue"], "replay_queue": c["replay_queue"],
                                     "on_disk": s.closed(db)}
        samples.append(smp)
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t)))
    stop.set()
    for d in ds:
        d.join(60)
    secs = time.monotonic() - t0
    cpu = {k: v - cpu0[k] for k, v in cpu_now(dag).items()}
    etcd = {k: v - etcd0[k] for k, v in etcd_counters(dag).items() if k in etcd0}
    for d in ds:
        if d.error:
            raise Failed(f"delivering to {db}: {d.error}")
    lat = [x for d in ds for x in d.lat]
    return {"deliveries": len(lat), "seconds": secs, "lat": lat, "samples": samples, "cpu": cpu, "etcd": etcd}


def catch_up(dag, db, server, mb):
    """The copy on server suspended, mb MB of mail loaded (lazy commits: the log as fast as the
    store writes it), the generation closed, the copy resumed: the seconds until it has replayed
    every generation; the start-up (resume to the first generation on the passive's disk) and the
    rate after it."""
    act = dag.servers[0]
    s = next(x for x in dag.servers if x.name == server)
    base = copy_of(act, db, server)["replayed"]
    act.ombra("db", "copy", "suspend", db, "--server", server)
    wait_until("the copy suspended", lambda: copy_of(act, db, server)["state"] == "Suspended", 30)
    act.ombra("mail", "load", db, "--mailboxes", 200, "--messages", max(1, mb * 1000 * 1000 // 16384),
              "--size", 16384, "--seed", 99)
    act.ombra("db", "dismount", db)
    act.ombra("db", "mount", db)
    info = act.json("db", "show", db)
    closed = info.get("db", info)["gen_current"] - 1
    t0 = time.monotonic()
    act.ombra("db", "copy", "resume", db, "--server", server)
    first_copy = None  # (seconds, generation) when the first generation landed on the passive
    while True:
        c = copy_of(act, db, server)
        if first_copy is None and s.closed(db) > base:
            first_copy = (time.monotonic() - t0, s.closed(db))
        if c["state"] == "Healthy" and c["replayed"] >= closed:
            break
        if c["state"] in ("Failed", "Disconnected") or time.monotonic() - t0 > 600:
            raise Failed(f"catching up: the copy of {db} on {server} is {c['state']}: {c['last_error']}")
        time.sleep(0.02)
    secs = time.monotonic() - t0
    f_s, f_gen = first_copy or (secs, closed)
    return {"generations": closed - base, "seconds": secs, "mb": (closed - base) * GEN_MB,
            "mb_per_s": (closed - base) * GEN_MB / secs, "startup_seconds": f_s,
            "mb_per_s_after_startup": (closed - f_gen) * GEN_MB / (secs - f_s) if secs > f_s else None}


def summarize_copies(phases, copies, servers):
    """Per passive, over every round of one database: generations/s copied and replayed, the
    queues (median, p99): as `copy status` reports them and as measured from outside."""
    out = {}
    for name in servers[1:1 + copies]:
        copied = replayed = secs = 0
        rep_cq, rep_rq, cq, rq, behind = [], [], [], [], []
        for ph in phases:
            smp = ph["samples"]
            first, last = smp[0]["copies"][name], smp[-1]["copies"][name]
            copied += last["copied"] - first["copied"]
            replayed += last["replayed"] - first["replayed"]
            secs += smp[-1]["t"] - smp[0]["t"]
            for x in smp:
                c = x["copies"][name]
                rep_cq.append(c["copy_queue"])
                rep_rq.append(c["replay_queue"])
                # from outside: closed in the active's folder but not yet in the passive's; on the
                # passive's disk but not yet replayed (as its status last said)
                cq.append(max(0, x["active_closed"] - c["on_disk"]))
                rq.append(max(0, c["on_disk"] - c["replayed"]))
                behind.append(max(0, x["active_closed"] - c["replayed"]))
        out[name] = {
            "copied_gens_per_s": copied / secs if secs else None,
            "replayed_gens_per_s": replayed / secs if secs else None,
            "reported_copy_queue_p50": pct(rep_cq, 50), "reported_copy_queue_p99": pct(rep_cq, 99),
            "reported_replay_queue_p50": pct(rep_rq, 50), "reported_replay_queue_p99": pct(rep_rq, 99),
            "copy_queue_p50": pct(cq, 50), "copy_queue_p99": pct(cq, 99), "copy_queue_max": max(cq),
            "replay_queue_p50": pct(rq, 50), "replay_queue_p99": pct(rq, 99), "replay_queue_max": max(rq),
            "not_replayed_p50": pct(behind, 50), "not_replayed_p99": pct(behind, 99),
            "samples": len(cq),
            # the first round over time, for bench/plots.py: [seconds, generations not replayed]
            "lag_series": [[round(x["t"], 2), max(0, x["active_closed"] - x["copies"][name]["replayed"])]
                           for x in phases[0]["samples"]] if phases else [],
        }
    return out


def ombra_run(a, tmp):
    dag = Dag(a.build, tmp)
    r = {}
    try:
        dag.start()
        act = dag.servers[0]
        dbs = {n: f"copies{n}" for n in (0, 1, 2)}
        for n, db in dbs.items():
            dag.new_db(db)
            for s in dag.servers[1:1 + n]:
                act.ombra("db", "copy", "add", db, "--server", s.name)
        # --sync-copies 1 (block mode): a delivery is acknowledged once the copy holds its log
        dag.new_db("sync1")
        act.ombra("db", "copy", "add", "sync1", "--server", dag.servers[1].name)
        act.ombra("db", "set", "sync1", "--sync-copies", "1")
        time.sleep(3)  # the store hears of it with the copy's next stream request
        sync_phases = []
        phases = {n: [] for n in dbs}
        for rnd in range(a.rounds):
            order = [0, 1, 2] if rnd % 2 == 0 else [2, 1, 0]  # both ends meet the same weather
            for n in order:
                gen0 = act.closed(dbs[n])
                ph = load_phase(dag, dbs[n], n, a)
                ph["generations"] = act.closed(dbs[n]) - gen0
                phases[n].append(ph)
                print(f"  round {rnd + 1}, {n} copies: {ph['deliveries'] / ph['seconds']:,.0f} deliveries/s",
                      flush=True)
            ph = load_phase(dag, "sync1", 1, a)
            sync_phases.append(ph)
            print(f"  round {rnd + 1}, 1 synchronous copy: {ph['deliveries'] / ph['seconds']:,.0f} deliveries/s",
                  flush=True)
        lat = [x for ph in sync_phases for x in ph["lat"]]
        dl = sum(ph["deliveries"] for ph in sync_phases)
        secs = sum(ph["seconds"] for ph in sync_phases)
        r["sync1"] = {"deliveries": dl, "seconds": secs, "deliveries_per_s": dl / secs,
                      "per_round": [ph["deliveries"] / ph["seconds"] for ph in sync_phases],
                      "latency_ms_p50": pct(lat, 50) * 1e3, "latency_ms_p99": pct(lat, 99) * 1e3}
        for n in dbs:
            lat = [x for ph in phases[n] for x in ph["lat"]]
            dl = sum(ph["deliveries"] for ph in phases[n])
            secs = sum(ph["seconds"] for ph in phases[n])
            gens = sum(ph["generations"] for ph in phases[n])
            cpu = {k: sum(ph["cpu"][k] for ph in phases[n]) / secs for k in phases[n][0]["cpu"]}
            r[f"copies{n}"] = {
                "deliveries": dl, "seconds": secs, "deliveries_per_s": dl / secs,
                "per_round": [ph["deliveries"] / ph["seconds"] for ph in phases[n]],
                "latency_ms_p50": pct(lat, 50) * 1e3, "latency_ms_p99": pct(lat, 99) * 1e3,
                "log_mb_per_s": gens * GEN_MB / secs, "log_kb_per_delivery": gens * GEN_MB * 1e3 / dl,
                "passives": summarize_copies(phases[n], n, [s.name for s in dag.servers]),
                "cpu_cores": {k: v for k, v in cpu.items() if v >= 0.005},
                "etcd_per_s": {k: sum(ph["etcd"].get(k, 0) for ph in phases[n]) / secs for k in ("puts", "wal_fsyncs")},
                "cpu_ms_per_delivery": {k: v * secs * 1e3 / dl for k, v in cpu.items() if v >= 0.005},
            }
        for n in (1, 2):
            r[f"copies{n}"]["drained_through"] = drain(dag, dbs[n], n)
        print("  checking every passive copy against its active (digests)", flush=True)
        for n in (1, 2):
            want, got = verify(dag, dbs[n], n)
            r[f"copies{n}"]["digest"] = want
            r[f"copies{n}"]["passive_digests"] = got
        print(f"  catch-up: {a.backlog_mb} MB behind", flush=True)
        r["catch_up"] = catch_up(dag, dbs[1], "mbx2", a.backlog_mb)
        drain(dag, dbs[1], 1)
        verify(dag, dbs[1], 1)
    except Exception:
        print("replication.py: the daemons' last words:\n" + dag.tails())
        raise
    finally:
        dag.stop()
    return r


# ---- the PostgreSQL side ----------------------------------------------------------------------


class Pg(PgBase):
    """A primary and (later) a streaming standby in a temp directory, run as the postgres user,
    on Unix sockets only."""

    def __init__(self, tmp, a):
        super().__init__(tmp, a)
        self.standby = False

    def setup(self):
        self.run(f"{PG_BIN}/initdb", "-D", f"{self.tmp}/primary")
        with open(f"{self.tmp}/primary/postgresql.conf", "a") as f:
            f.write(f"listen_addresses = ''\nwal_level = replica\nmax_wal_size = 4GB\n"
                    f"synchronous_commit = on\n")
        self.ctl("primary", "start", self.pport)
        self.sql("CREATE TABLE mail (id bigserial PRIMARY KEY, mailbox int, body bytea); "
                 "ALTER TABLE mail ALTER COLUMN body SET STORAGE EXTERNAL")
        with open(f"{self.tmp}/deliver.sql", "w") as f:
            # a body of --size random-looking bytes (md5s of random numbers), stored uncompressed
            n = max(1, self.a.size // 16)
            f.write("\\set mb random(0, 199)\n"
                    f"INSERT INTO mail (mailbox, body) SELECT :mb, string_agg(decode(md5(random()::text), 'hex'), '') "
                    f"FROM generate_series(1, {n});\n")
        os.chmod(f"{self.tmp}/deliver.sql", 0o644)

    def add_standby(self):
        self.run(f"{PG_BIN}/pg_basebackup", "-h", self.tmp, "-p", self.pport, "-D", f"{self.tmp}/standby", "-R",
                 "-X", "stream", "-c", "fast", "-C", "-S", "standby1")
        self.ctl("standby", "start", self.sport)
        self.standby = True
        wait_until("the standby streaming",
                   lambda: self.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1", 60)

    def set(self, **kv):
        for k, v in kv.items():
            self.sql(f"ALTER SYSTEM SET {k} = '{v}'")
        self.sql("SELECT pg_reload_conf()")

    def lsn(self, q, port=None):
        return int(self.sql(f"SELECT pg_wal_lsn_diff({q}, '0/0')::bigint", port) or 0)

    def phase(self, label):
        """--seconds of pgbench -c THREADS with the delivery script; the standby's LSNs sampled."""
        a = self.a
        p, logs = self.pgbench(f"{label}-", "-T", str(a.seconds), "-f", f"{self.tmp}/deliver.sql")
        samples = []
        t0 = time.monotonic()
        while p.poll() is None:
            t = time.monotonic()
            smp = {"t": t - t0, "primary": self.lsn("pg_current_wal_lsn()")}
            if self.standby:
                row = self.sql("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint, "
                               "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint", self.sport)
                smp["received"], smp["replayed"] = map(int, row.split("|"))
            samples.append(smp)
            time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t)))
        out, err = p.communicate()
        if p.returncode:
            raise Failed(f"pgbench ({label}): exit {p.returncode}: {err.strip()[-500:]}")
        lat = [int(w[2]) / 1e6 for w in pgbench_lines(logs) if len(w) >= 3 and w[2].isdigit()]
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        secs = samples[-1]["t"] if samples else a.seconds
        return {"transactions": len(lat), "tps": float(m.group(1)) if m else len(lat) / a.seconds, "lat": lat,
                "samples": samples, "seconds": secs,
                "wal_bytes": samples[-1]["primary"] - samples[0]["primary"] if len(samples) > 1 else None}

    def catch_up(self, mb):
        """The standby stopped, mb MB of WAL written (rows of --size bytes), the standby started:
        seconds until it has replayed up to the primary's LSN."""
        self.ctl("standby", "stop", self.sport)
        start = self.lsn("pg_current_wal_lsn()")
        n = max(1, mb * 1000 * 1000 // (self.a.size + 600))
        k = max(1, self.a.size // 16)
        self.sql(f"INSERT INTO mail (mailbox, body) SELECT g % 200, (SELECT string_agg(decode(md5(random()::text "
                 f"|| g || i), 'hex'), '') FROM generate_series(1, {k}) i) FROM generate_series(1, {n}) g")
        target = self.lsn("pg_current_wal_lsn()")
        t0 = time.monotonic()
        self.ctl("standby", "start", self.sport)  # returns once it accepts connections
        t_ready = time.monotonic() - t0
        at_ready = self.lsn("pg_last_wal_replay_lsn()", self.sport)
        while self.lsn("pg_last_wal_replay_lsn()", self.sport) < target:
            if time.monotonic() - t0 > 600:
                raise Failed("the standby did not catch up within 600 s")
            time.sleep(0.02)
        secs = time.monotonic() - t0
        return {"mb": (target - start) / 1e6, "seconds": secs, "mb_per_s": (target - start) / 1e6 / secs,
                "startup_seconds": t_ready, "replayed_at_startup_mb": (at_ready - start) / 1e6,
                "mb_per_s_after_startup": (target - at_ready) / 1e6 / (secs - t_ready) if secs > t_ready else None}


def pg_summary(phases):
    lat = [x for ph in phases for x in ph["lat"]]
    secs = sum(ph["seconds"] for ph in phases)
    out = {"tps": sum(ph["tps"] for ph in phases) / len(phases), "per_round": [ph["tps"] for ph in phases],
           "latency_ms_p50": pct(lat, 50) * 1e3, "latency_ms_p99": pct(lat, 99) * 1e3,
           "wal_mb_per_s": sum(ph["wal_bytes"] or 0 for ph in phases) / 1e6 / secs,
           "wal_kb_per_commit": sum(ph["wal_bytes"] or 0 for ph in phases) / 1e3 / max(1, sum(ph["transactions"]
                                                                                             for ph in phases))}
    if "received" in phases[0]["samples"][0]:
        rq, cq, replayed, secs2 = [], [], 0, 0
        for ph in phases:
            s = ph["samples"]
            replayed += s[-1]["replayed"] - s[0]["replayed"]
            secs2 += s[-1]["t"] - s[0]["t"]
            for x in s:
                cq.append(max(0, x["primary"] - x["received"]) / 1e6)
                rq.append(max(0, x["received"] - x["replayed"]) / 1e6)
        out.update({"replayed_mb_per_s": replayed / 1e6 / secs2 if secs2 else None,
                    "copy_queue_mb_p50": pct(cq, 50), "copy_queue_mb_p99": pct(cq, 99),
                    "replay_queue_mb_p50": pct(rq, 50), "replay_queue_mb_p99": pct(rq, 99)})
    return out


def pg_run(a):
    """PostgreSQL's figures, or (None, why not)."""
    if a.no_pg:
        return None, "--no-pg"
    if os.geteuid() != 0:
        return None, "needs root (PostgreSQL runs as the postgres user)"
    if not os.access(f"{PG_BIN}/postgres", os.X_OK) or not shutil.which("runuser"):
        return None, "PostgreSQL 15 is not installed (scripts/install-deps --bench)"
    tmp = pg_tmp("ombra-brpg-")
    pg = Pg(tmp, a)
    r = {}
    try:
        pg.setup()
        configs = {"alone": [], "async_on": [], "async_off": [], "sync_on": []}
        for rnd in range(a.rounds):
            pg.set(synchronous_commit="on")
            configs["alone"].append(pg.phase("alone"))
            print(f"  round {rnd + 1}, primary alone: {configs['alone'][-1]['tps']:,.0f} commits/s", flush=True)
        pg.add_standby()
        for rnd in range(a.rounds):
            order = ["async_on", "async_off", "sync_on"]
            for c in order if rnd % 2 == 0 else order[::-1]:
                pg.set(synchronous_commit="off" if c == "async_off" else "on",
                       synchronous_standby_names="*" if c == "sync_on" else "")
                configs[c].append(pg.phase(c))
                print(f"  round {rnd + 1}, standby {c}: {configs[c][-1]['tps']:,.0f} commits/s", flush=True)
        pg.set(synchronous_commit="on", synchronous_standby_names="")
        r = {c: pg_summary(v) for c, v in configs.items()}
        print(f"  catch-up: {a.backlog_mb} MB behind", flush=True)
        r["catch_up"] = pg.catch_up(a.backlog_mb)
        r["version"] = pg.sql("SHOW server_version")
        return r, None
    except (Failed, subprocess.TimeoutExpired, OSError) as e:
        return None, str(e)[:400]
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the table ---------------------------------------------------------------------------------


def main():
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=int, default=15, help="load per database (or PostgreSQL setting) per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4, help="delivering clients (pgbench -c)")
    ap.add_argument("--size", type=int, default=8192, help="bytes per message (per bytea row)")
    ap.add_argument("--backlog-mb", type=int, default=64, help="how far behind a copy is for the catch-up")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    ap.add_argument("--json", default=f"{ROOT}/bench/results/replication.json")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    if min(a.seconds, a.rounds, a.threads, a.size, a.backlog_mb) < 1:
        raise SystemExit("replication.py: --seconds, --rounds, --threads, --size and --backlog-mb must be at least 1")
    need_dag(a.build, "replication.py")
    tmp = tempfile.mkdtemp(prefix="ombra-brep-", dir="/tmp")
    fs = fstype(tmp)
    # SIGTERM ends the run as ^C does: the finally clauses stop every daemon and remove the files
    signal.signal(signal.SIGTERM, on_term)
    print(f"Ombra: 3 servers on 127.0.0.1, {a.threads} clients delivering {a.size}-byte messages, "
          f"{a.seconds} s per database per round, {a.rounds} rounds", flush=True)
    try:
        o = ombra_run(a, tmp)
    except Failed as e:
        raise SystemExit(f"replication.py: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("PostgreSQL 15: a primary, then a streaming standby; pgbench with the same load", flush=True)
    pg, why = pg_run(a)
    if why:
        print(f"PostgreSQL not run: {why}")

    o0, o1, o2 = o["copies0"], o["copies1"], o["copies2"]
    p1 = o1["passives"]["mbx2"]

    def g(k):
        return pg[k] if pg else {}
    rows = [  # metric, Ombra, PostgreSQL, ratio wanted
        ("durable commits/s, 0 copies (PG: no standby)", o0["deliveries_per_s"], g("alone").get("tps"), True),
        ("durable commits/s, 1 async copy", o1["deliveries_per_s"], g("async_on").get("tps"), True),
        ("durable commits/s, 2 async copies", o2["deliveries_per_s"], None, False),
        ("cost: rate with 1 copy / with 0", ratio(o1["deliveries_per_s"], o0["deliveries_per_s"]),
         ratio(g("async_on").get("tps"), g("alone").get("tps")), True),
        ("cost: rate with 2 copies / with 0", ratio(o2["deliveries_per_s"], o0["deliveries_per_s"]), None, False),
        ("commit latency p50 ms, 0 copies", o0["latency_ms_p50"], g("alone").get("latency_ms_p50"), True),
        ("commit latency p50 ms, 1 async copy", o1["latency_ms_p50"], g("async_on").get("latency_ms_p50"), True),
        ("commit latency p99 ms, 1 async copy", o1["latency_ms_p99"], g("async_on").get("latency_ms_p99"), True),
        ("commit latency p50 ms, 2 async copies", o2["latency_ms_p50"], None, False),
        ("commit latency p99 ms, 2 async copies", o2["latency_ms_p99"], None, False),
        ("commits/s, synchronous_commit off", "n/a", g("async_off").get("tps"), False),
        ("commit latency p50 ms, sync_commit off", "n/a", g("async_off").get("latency_ms_p50"), False),
        ("commits/s, synchronous standby/copy", o["sync1"]["deliveries_per_s"], g("sync_on").get("tps"), True),
        ("commit latency p50 ms, synchronous", o["sync1"]["latency_ms_p50"], g("sync_on").get("latency_ms_p50"),
         True),
        ("commit latency p99 ms, synchronous", o["sync1"]["latency_ms_p99"], g("sync_on").get("latency_ms_p99"),
         True),
        ("cost: sync rate / async rate, 1 copy", ratio(o["sync1"]["deliveries_per_s"], o1["deliveries_per_s"]),
         ratio(g("sync_on").get("tps"), g("async_on").get("tps")), True),
        ("log MB/s written, 1 copy", o1["log_mb_per_s"], g("async_on").get("wal_mb_per_s"), True),
        ("log KB per commit, 1 copy", o1["log_kb_per_delivery"], g("async_on").get("wal_kb_per_commit"), True),
        ("replayed MB/s on the passive, 1 copy", p1["replayed_gens_per_s"] * GEN_MB if p1["replayed_gens_per_s"]
         is not None else None, g("async_on").get("replayed_mb_per_s"), True),
        ("copy queue MB p50, 1 copy", p1["copy_queue_p50"] * GEN_MB, g("async_on").get("copy_queue_mb_p50"), False),
        ("copy queue MB p99, 1 copy", p1["copy_queue_p99"] * GEN_MB, g("async_on").get("copy_queue_mb_p99"), False),
        ("replay queue MB p50, 1 copy", p1["replay_queue_p50"] * GEN_MB, g("async_on").get("replay_queue_mb_p50"),
         False),
        ("replay queue MB p99, 1 copy", p1["replay_queue_p99"] * GEN_MB, g("async_on").get("replay_queue_mb_p99"),
         False),
        (f"catch-up MB/s ({a.backlog_mb} MB behind)", o["catch_up"]["mb_per_s"],
         pg["catch_up"]["mb_per_s"] if pg else None, True),
        ("catch-up seconds (lower is better)", o["catch_up"]["seconds"], pg["catch_up"]["seconds"] if pg else None,
         True),
        ("  of which start-up", o["catch_up"]["startup_seconds"],
         pg["catch_up"]["startup_seconds"] if pg else None, True),
        ("catch-up MB/s after the start-up", o["catch_up"]["mb_per_s_after_startup"],
         pg["catch_up"]["mb_per_s_after_startup"] if pg else None, True),
    ]
    w = 44
    print()
    print(f"{'metric':<{w}} | {'Ombra':>10} | {'PostgreSQL':>10} | {'O/PG':>6}")
    print(f"{'-' * w}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 6}")
    for name, ov, pv, want in rows:
        nd = 2 if any(k in name for k in ("ms", "cost", "queue", "seconds", "start-up", "KB")) else 0
        rt = ratio(ov, pv) if want and not isinstance(ov, str) else None
        print(f"{name:<{w}} | {fmt(ov, nd):>10} | {fmt(pv, nd):>10} | {fmt(rt, 2):>6}")
    print()
    print("per passive (generations of 1 MiB; queues sampled every 0.2 s; median / p99 / max):")
    for n in (1, 2):
        for name, p in o[f"copies{n}"]["passives"].items():
            print(f"  {n} copies, {name}: copied {fmt(p['copied_gens_per_s'], 1)} gens/s, replayed "
                  f"{fmt(p['replayed_gens_per_s'], 1)} gens/s; copy queue {p['copy_queue_p50']} / "
                  f"{p['copy_queue_p99']} / {p['copy_queue_max']}, replay queue {p['replay_queue_p50']} / "
                  f"{p['replay_queue_p99']} / {p['replay_queue_max']}; `copy status` said copy queue "
                  f"{p['reported_copy_queue_p50']} / {p['reported_copy_queue_p99']}, replay queue "
                  f"{p['reported_replay_queue_p50']} / {p['reported_replay_queue_p99']} ({p['samples']} samples)")
    for n in (0, 1, 2):
        x = o[f"copies{n}"]
        print(f"  {n} copies: deliveries/s per round {', '.join(f'{v:,.0f}' for v in x['per_round'])}; "
              f"{x['log_mb_per_s']:.1f} MB/s of log")
    print("CPU during the load, in cores (of the machine's "
          f"{os.cpu_count()}; what each process used over the phase's seconds):")
    for n in (0, 1, 2):
        x = o[f"copies{n}"]["cpu_cores"]
        print(f"  {n} copies: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(x.items(), key=lambda kv: -kv[1]))
              + f"; in all {sum(x.values()):.2f}; etcd {o[f'copies{n}']['etcd_per_s']['puts']:.1f} puts/s, "
              f"{o[f'copies{n}']['etcd_per_s']['wal_fsyncs']:.1f} WAL fsyncs/s")
    cu = o["catch_up"]
    print(f"catch-up (copy suspended, {cu['generations']} generations loaded, resumed): {cu['seconds']:.2f} s; "
          f"start-up: resume to the first generation on the passive's disk, {cu['startup_seconds']:.2f} s")
    if pg:
        for c in ("alone", "async_on", "async_off", "sync_on"):
            print(f"  PostgreSQL {c}: commits/s per round {', '.join(f'{v:,.0f}' for v in pg[c]['per_round'])}")
        pc = pg["catch_up"]
        print(f"  PostgreSQL catch-up: standby stopped, {pc['mb']:.0f} MB of WAL written, started: "
              f"{pc['seconds']:.2f} s; start-up: pg_ctl start -w to accepting connections, {pc['startup_seconds']:.2f} s "
              f"({pc['replayed_at_startup_mb']:.0f} MB replayed by then); version {pg['version']}")
    print(f"verified: every passive's digest equals its active's ({o1['digest']}, {o2['digest']})")
    print(f"machine: {os.cpu_count()} CPUs, {fs} on /tmp; the three servers, etcd, the clients (and "
          f"PostgreSQL's two servers) share them")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"time": utc_stamp(),
                   "params": {"seconds": a.seconds, "rounds": a.rounds, "threads": a.threads, "size": a.size,
                              "backlog_mb": a.backlog_mb},
                   "machine": {"nproc": os.cpu_count(), "fstype": fs},
                   "ombra": o, "postgresql": pg, "postgresql_why_not": why,
                   "sync_copies": "not measured: ombra db set --sync-copies does not exist yet",
                   "table": [{"metric": n, "ombra": ov, "postgresql": pv,
                              "ratio": ratio(ov, pv) if want and not isinstance(ov, str) else None}
                             for n, ov, pv, want in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
