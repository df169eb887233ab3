#!/usr/bin/env python3
"""Backups from passive copies (issue 18), while mail arrives on the active. A DAG of three
servers on 127.0.0.1 (bench/dagutil.py: etcd, each server's ombra-store, ombra-vssd, ombra-repld);
database mail1 active on mbx1, loaded with --mb MB of mail (`ombra mail load`), passive copies on
mbx2 and mbx3. --threads clients deliver --size-byte messages to the active, each paced to --rate
deliveries a second, each delivery's latency kept with the time it was sent. Then, --rounds
rounds of (the order reversed every other round):

  - no backup: --baseline-seconds of mail alone;
  - `ombra backup mail1 --type full` on mbx2 (--from mbx2: its passive copy), with the default
    provider (auto: held on ext3/ext4) and with --provider copy;
  - the same on mbx1 (--from active), default provider and --provider copy;

each backup into an empty repository (the same work each time). Per setting: the active's
delivery latency p50 / p99 / max over the deliveries sent while the backup ran, beside no backup.
Every 0.2 s throughout, `ombra db copy status mail1 --json` and the new lines of each passive's
ombra-repld log: from them, for each backup of a passive, how long its replay was held (from the
replica writer's "frozen at generation N" to the first status with the copy replayed past N) and
how long the copy took after that to replay every generation the active had closed by then.

Then the deduplication across copies: into one empty repository a full from mbx2, then a full
from mbx3 (and, for reference, another from mbx2): bytes stored and blocks reused by each. Last,
the mail stopped, every copy drained and its digest compared with the active's: a backup that
fails or a copy that differs ends the benchmark with exit 1.

Beside it (root, Debian's postgresql 15 and pgbackrest): a primary (pgbench scale --pg-scale, about
1 GB) with a streaming standby, `pgbench -R` (the same rate, --threads clients) on the primary,
and a full `pgbackrest backup` from the standby (--backup-standby) and from the primary.

Prints a table and writes bench/results/passive_backup.json and .md.

    bench/passive_backup.py [--build DIR] [--mb 1024] [--threads 3] [--rate 40] [--size 8192]
                            [--rounds 3] [--baseline-seconds 20] [--pg-scale 70] [--no-pg]
                            [--json FILE] [--md FILE]
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import PG_BIN, ROOT, fmt, fstype, median, parser, ratio, utc_stamp
from dagutil import (SAMPLE_S, Dag, Deliverer, Failed, PgBase, drain, need_dag, on_term, pct, pg_tmp, pgbench_lines,
                     verify, wait_until)

DB = "mail1"
LOAD_SIZE = 16384  # bytes per message of the initial load
# the backup settings measured: label -> (server index, --from, --provider or None for the default).
# OWN: the server's own name, which names its copy. Not --from passive: that picks the Healthy
# passive copy with the shortest replay queue on any server, then the best activation preference
# (docs/design.md, "ombra backup picks the copy"), so which copy it reads depends on the replay
# queues at that moment: with a small database the copies are level and mbx2's preference wins
# even when mbx3 asks.
OWN = "own"
SETTINGS = {
    "passive": (1, OWN, None),
    "passive_copy": (1, OWN, "copy"),
    "active": (0, "active", None),
    "active_copy": (0, "active", "copy"),
}
LABELS = {
    "none": "no backup",
    "passive": "full from passive (default provider)",
    "passive_copy": "full from passive (--provider copy)",
    "active": "full from active (default provider)",
    "active_copy": "full from active (--provider copy)",
}


class Sampler(threading.Thread):
    """Every SAMPLE_S: `ombra db copy status DB --json` (on mbx1) and the new lines of each
    passive's ombra-repld log, each with the time (time.monotonic()) it was seen."""

    def __init__(self, dag):
        super().__init__(daemon=True)
        self.dag = dag
        self.stop = threading.Event()
        self.samples = []  # {"t", "generated", "copies": {server: {"replayed", "replay_queue", "state"}}}
        self.lines = []  # (t, server, line)
        self.errors = 0
        self.pos = {s.name: 0 for s in dag.servers[1:]}
        self.partial = {s.name: "" for s in dag.servers[1:]}

    def tail(self, t):
        for s in self.dag.servers[1:]:
            try:
                with open(f"{s.dir}/repld.log", errors="replace") as f:
                    f.seek(self.pos[s.name])
                    new = f.read()
                    self.pos[s.name] = f.tell()
            except OSError:
                continue
            text = self.partial[s.name] + new
            *whole, self.partial[s.name] = text.split("\n")
            self.lines.extend((t, s.name, x) for x in whole)

    def run(self):
        act = self.dag.servers[0]
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                st = json.loads(act.ombra("db", "copy", "status", DB, "--json", timeout=20))["copies"]
            except (Failed, ValueError, subprocess.TimeoutExpired):
                st = None
                self.errors += 1
            self.tail(time.monotonic())
            if st:
                gen = next((c["generated"] for c in st if c["active"]), None)
                self.samples.append({"t": t, "generated": gen, "copies": {
                    c["server"]: {"replayed": c["replayed"], "replay_queue": c["replay_queue"], "state": c["state"]}
                    for c in st if not c["active"]}})
            self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - t)))


def caught_up(sampler, servers, t_after):
    """True once a sample taken after t_after shows every server's copy Healthy and replayed
    through the generation before the active's current one."""
    for s in reversed(sampler.samples):
        if s["t"] < t_after:
            return False
        cs = s["copies"]
        return all(n in cs and cs[n]["state"] == "Healthy" and cs[n]["replayed"] >= s["generated"] - 1
                   for n in servers)
    return False


def hold_of(sampler, server, t0, t1, freeze_ms):
    """For the backup of server's copy run from t0 to t1: when the replica writer froze the copy
    (its log line "frozen at generation N", seen within SAMPLE_S) and released it (held: the end
    of the session, t1; otherwise the thaw, freeze_ms later, as the requester timed it); the
    largest replay queue meanwhile (generations the active had closed and the copy had not
    replayed); the catch-up, from the release to the first status with the copy replayed through
    what the active had closed at the release; and, from the status alone, the time from the
    freeze to the first status with the copy replayed past N (the hold plus the first round of
    replay after it, and the copy's publishing of its status)."""
    fr = [(t, x) for t, n, x in sampler.lines if n == server and t0 <= t <= t1 + 1 and "frozen at generation" in x]
    if not fr:
        return {"error": f"no 'frozen at generation' line in the ombra-repld log of {server}"}
    t_freeze, line = fr[0]
    gen = int(re.search(r"frozen at generation (\d+)", line).group(1))
    held = ", held)" in line
    t_release = t1 if held else min(t1, t_freeze + freeze_ms / 1e3)
    smp = [s for s in sampler.samples if s["t"] >= t_freeze - SAMPLE_S and server in s["copies"]]
    past = next((s for s in smp if s["t"] >= t_freeze and s["copies"][server]["replayed"] > gen), None)
    if past is None:
        return {"error": f"the copy on {server} never replayed past generation {gen}"}
    at_release = [s for s in smp if s["t"] <= t_release] or smp[:1]
    target = at_release[-1]["generated"] - 1
    queue = max(max(0, s["generated"] - 1 - s["copies"][server]["replayed"]) for s in smp if s["t"] <= past["t"])
    done = next((s for s in smp if s["t"] >= t_release and s["copies"][server]["replayed"] >= target), None)
    return {"frozen_at_generation": gen, "held_to_session_end": held,
            "freeze_after_start_s": t_freeze - t0, "hold_s": t_release - t_freeze,
            "status_past_n_s": past["t"] - t_freeze, "replay_queue_max_gens": queue,
            "catch_up_target_gen": target, "catch_up_s": done["t"] - t_release if done else None}


def queue_max(sampler, server, t0, t1):
    v = [max(0, s["generated"] - 1 - s["copies"][server]["replayed"]) for s in sampler.samples
         if t0 <= s["t"] <= t1 and server in s["copies"]]
    return max(v) if v else None


def latency(ds, t0, t1):
    """The latencies (seconds) of the deliveries sent from t0 to t1, sorted."""
    return sorted(lat for d in ds for t, lat in zip(list(d.sent), list(d.lat)) if t0 <= t <= t1)


def summary(lat, seconds):
    return {"deliveries": len(lat), "deliveries_per_s": len(lat) / seconds if seconds else None,
            "p50_ms": pct(lat, 50) * 1e3 if lat else None, "p99_ms": pct(lat, 99) * 1e3 if lat else None,
            "max_ms": lat[-1] * 1e3 if lat else None}


def run_backup(s, repo, frm, provider, want_copy):
    """`ombra backup DB --type full --from frm [--provider p] --json` on server s (frm OWN: s's
    name, its own copy); fails unless it stored one set from the copy wanted."""
    args = ["backup", DB, "--repo", repo, "--type", "full", "--from", s.name if frm == OWN else frm, "--json"]
    if provider:
        args += ["--provider", provider]
    r = json.loads(s.ombra(*args, timeout=1200))
    if r.get("failed") or len(r.get("sets", [])) != 1:
        raise Failed(f"{s.name}$ ombra {' '.join(args)}: no set stored: {json.dumps(r)[:600]}")
    if [(c["database"]["name"], c["server"], c["copy"]) for c in r["copies"]] != [(DB, s.name, want_copy)]:
        raise Failed(f"{s.name}$ ombra {' '.join(args)}: backed up {r['copies']}, not the {want_copy} copy here")
    return r


def ombra_run(a, tmp):
    dag = Dag(a.build, tmp)
    sampler = None
    ds = []
    stop = threading.Event()
    r = {}
    try:
        dag.start()
        act, p2, p3 = dag.servers
        dag.new_db(DB)
        n = max(1, a.mb * 1000 * 1000 // LOAD_SIZE)
        print(f"  loading {n:,} messages of {LOAD_SIZE} bytes into {DB} on {act.name}", flush=True)
        t = time.monotonic()
        act.ombra("mail", "load", DB, "--mailboxes", 200, "--messages", n, "--size", LOAD_SIZE, timeout=3600)
        r["load_seconds"] = time.monotonic() - t
        info = act.json("db", "show", DB)
        r["edb_bytes"] = info.get("db", info)["size_bytes"]
        print(f"  seeding the copies on {p2.name} and {p3.name}", flush=True)
        t = time.monotonic()
        for s in (p2, p3):
            act.ombra("db", "copy", "add", DB, "--server", s.name, timeout=1800)
        drain(dag, DB, 2, seconds=1800)
        r["seed_seconds"] = time.monotonic() - t
        # a first full (not measured) lets the load's generations go on every server
        act.ombra("repo", "init", f"{tmp}/repo-first")
        run_backup(act, f"{tmp}/repo-first", "active", None, "active")
        shutil.rmtree(f"{tmp}/repo-first")

        sampler = Sampler(dag)
        sampler.start()
        bodies = [os.urandom(a.size) for _ in range(64)]
        ds = [Deliverer(f"{act.dir}/run/store.sock", DB, bodies, k, stop, interval=1.0 / a.rate)
              for k in range(a.threads)]
        for d in ds:
            d.start()
        names = [p2.name, p3.name]

        def settle():
            """Both copies caught up, then 2 s of plain mail (the phases start alike)."""
            t = time.monotonic()
            wait_until("both copies replaying within a generation of the active",
                       lambda: caught_up(sampler, names, t), 300)
            time.sleep(2)
            for d in ds:
                if d.error:
                    raise Failed(f"delivering to {DB}: {d.error}")

        phases = []
        order = ["none", "passive", "passive_copy", "active", "active_copy"]
        for rnd in range(a.rounds):
            for label in order if rnd % 2 == 0 else order[::-1]:
                settle()
                if label == "none":
                    t0 = time.monotonic()
                    time.sleep(a.baseline_seconds)
                    phases.append({"label": label, "round": rnd + 1, "t0": t0, "t1": time.monotonic()})
                else:
                    idx, frm, prov = SETTINGS[label]
                    repo = f"{tmp}/repo-{label}-{rnd}"
                    act.ombra("repo", "init", repo)
                    t0 = time.monotonic()
                    res = run_backup(dag.servers[idx], repo, frm, prov, "passive" if idx else "active")
                    t1 = time.monotonic()
                    shutil.rmtree(repo)
                    phases.append({"label": label, "round": rnd + 1, "t0": t0, "t1": t1, "backup": res})
                ph = phases[-1]
                lat = latency(ds, ph["t0"], ph["t1"])
                print(f"  round {rnd + 1}, {LABELS[label]}: {ph['t1'] - ph['t0']:.1f} s, {len(lat)} deliveries, "
                      f"p50 {pct(lat, 50) * 1e3:.1f} ms, p99 {pct(lat, 99) * 1e3:.1f} ms, "
                      f"max {lat[-1] * 1e3:.1f} ms", flush=True)
        settle()
        # the holds and catch-ups need the samples after each backup: read them now
        for ph in phases:
            ph["queue_max"] = {n: queue_max(sampler, n, ph["t0"], ph["t1"]) for n in names}
            if ph["label"].startswith("passive"):
                ph["hold"] = hold_of(sampler, p2.name, ph["t0"], ph["t1"], ph["backup"]["freeze_ms"])
                if "error" in ph["hold"]:
                    raise Failed(f"round {ph['round']}, {LABELS[ph['label']]}: {ph['hold']['error']}")

        print("  deduplication: a full from mbx2, then from mbx3, then from mbx2 again, into one repository",
              flush=True)
        repo = f"{tmp}/repo-dedup"
        act.ombra("repo", "init", repo)
        dedup = []
        for s in (p2, p3, p2):
            settle()
            res = run_backup(s, repo, OWN, None, "passive")
            st = res["sets"][0]
            dedup.append({"server": s.name, "bytes_read": res["bytes_read"], "bytes_stored": st["bytes_stored"],
                          "blocks_new": st["blocks_new"], "blocks_reused": st["blocks_reused"],
                          "log_range": st["log_range"], "seconds": res["seconds"]})
            print(f"    from {s.name}: read {res['bytes_read'] / 1e6:,.0f} MB, stored {st['bytes_stored'] / 1e6:,.1f} MB, "
                  f"blocks new {st['blocks_new']}, reused {st['blocks_reused']}", flush=True)
        shutil.rmtree(repo)
        r["dedup"] = dedup

        stop.set()
        for d in ds:
            d.join(60)
            if d.error:
                raise Failed(f"delivering to {DB}: {d.error}")
        sampler.stop.set()
        sampler.join(30)
        print("  draining the copies and comparing their digests with the active's", flush=True)
        drain(dag, DB, 2)
        want, got = verify(dag, DB, 2)  # raises when a copy differs
        r["digest"], r["passive_digests"] = want, got

        r["phases"] = []
        for ph in phases:
            lat = latency(ds, ph["t0"], ph["t1"])
            x = {"label": ph["label"], "round": ph["round"], "seconds": ph["t1"] - ph["t0"],
                 **summary(lat, ph["t1"] - ph["t0"]), "queue_max": ph["queue_max"]}
            # the slowest deliveries and when they were sent, from the phase's start
            x["slowest"] = sorted(((lat, t - ph["t0"]) for d in ds for t, lat in zip(d.sent, d.lat)
                                   if ph["t0"] <= t <= ph["t1"]), reverse=True)[:5]
            if "backup" in ph:
                b = ph["backup"]
                x["backup"] = {k: b[k] for k in ("freeze_ms", "snapshot_ms", "bytes_read", "bytes_stored", "seconds")}
                x["backup"]["log_range"] = b["sets"][0]["log_range"]
            if "hold" in ph:
                x["hold"] = ph["hold"]
            r["phases"].append(x)
        r["settings"] = {}
        for label in LABELS:
            phs = [ph for ph in phases if ph["label"] == label]
            lat = sorted(x for ph in phs for x in latency(ds, ph["t0"], ph["t1"]))
            secs = sum(ph["t1"] - ph["t0"] for ph in phs)
            r["settings"][label] = {**summary(lat, secs), "seconds": secs,
                                    "per_round_p99_ms": [pct(latency(ds, ph["t0"], ph["t1"]), 99) * 1e3
                                                         for ph in phs]}
            holds = [ph["hold"] for ph in phs if "hold" in ph]
            if holds:
                r["settings"][label]["hold_s"] = [h["hold_s"] for h in holds]
                r["settings"][label]["catch_up_s"] = [h["catch_up_s"] for h in holds]
                r["settings"][label]["status_past_n_s"] = [h["status_past_n_s"] for h in holds]
                r["settings"][label]["replay_queue_max_gens"] = [h["replay_queue_max_gens"] for h in holds]
                r["settings"][label]["held_to_session_end"] = all(h["held_to_session_end"] for h in holds)
            if label != "none":
                r["settings"][label]["backup_seconds"] = [ph["t1"] - ph["t0"] for ph in phs]
                r["settings"][label]["freeze_ms"] = [ph["backup"]["freeze_ms"] for ph in phs]
        r["all_deliveries"] = sum(len(d.lat) for d in ds)
        r["status_samples"] = len(sampler.samples)
        r["status_errors"] = sampler.errors
    except Exception:
        print("passive_backup.py: the daemons' last words:\n" + dag.tails())
        raise
    finally:
        stop.set()
        if sampler:
            sampler.stop.set()
        dag.stop()
    return r


# ---- pgBackRest: a full backup from the standby and from the primary ---------------------------


class PgPair(PgBase):
    """A primary archiving its WAL to a pgBackRest repository and a streaming standby, in a temp
    directory, run as the postgres user on Unix sockets only."""

    RUN_TIMEOUT = 1800
    CTL_TIMEOUT = 300

    def pgbr(self, *args):
        return self.run("pgbackrest", f"--config={self.tmp}/pgbackrest.conf", "--stanza=bench", *args)

    def setup(self):
        t = self.tmp
        self.run(f"{PG_BIN}/initdb", "-D", f"{t}/primary")
        with open(f"{t}/primary/postgresql.conf", "a") as f:
            f.write(f"listen_addresses = ''\nwal_level = replica\nmax_wal_size = 4GB\narchive_mode = on\n"
                    f"archive_command = 'pgbackrest --config={t}/pgbackrest.conf --stanza=bench archive-push %p'\n")
        with open(f"{t}/pgbackrest.conf", "w") as f:
            f.write(f"[global]\nrepo1-path={t}/repo\nlog-path={t}\nlock-path={t}\ncompress-type=zst\n"
                    f"compress-level=1\nprocess-max=2\nstart-fast=y\n"
                    f"[bench]\npg1-path={t}/primary\npg1-socket-path={t}\npg1-port={self.pport}\n"
                    f"pg2-path={t}/standby\npg2-socket-path={t}\npg2-port={self.sport}\n")
        shutil.chown(f"{t}/pgbackrest.conf", "postgres")
        self.ctl("primary", "start", self.pport)
        self.run(f"{PG_BIN}/pgbench", "-h", t, "-p", self.pport, "-i", "-q", "-s", self.a.pg_scale, "postgres")
        self.sql("CHECKPOINT")
        self.size = int(self.sql("SELECT pg_database_size('postgres')"))
        self.run(f"{PG_BIN}/pg_basebackup", "-h", t, "-p", self.pport, "-D", f"{t}/standby", "-R", "-X", "stream",
                 "-c", "fast", "-C", "-S", "standby1")
        self.ctl("standby", "start", self.sport)
        wait_until("the standby streaming",
                   lambda: self.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1", 60)
        self.pgbr("stanza-create")

    def backup(self, standby):
        t0 = time.time()
        self.pgbr("--type=full", "--backup-standby" if standby else "--no-backup-standby", "backup")
        return t0, time.time()

    def bench(self, seconds, during=None, lead=3.0):
        """pgbench -R (--rate per client, --threads clients: TPC-B-like transactions) for seconds;
        during(), if given, runs lead seconds in. Returns (latencies with their epoch times,
        during's result)."""
        a = self.a
        p, logs = self.pgbench("", "-R", str(a.rate * a.threads), "-T", str(int(seconds)))
        res = None
        try:
            if during:
                time.sleep(lead)
                res = during()
        finally:
            out, err = p.communicate()
        if p.returncode:
            raise Failed(f"pgbench: exit {p.returncode}: {err.strip()[-500:]}")
        # a line: client, transaction, time us (from the scheduled start), script, epoch s, epoch
        # us, schedule lag us: from the actual start, as Ombra's clients measure
        lat = [(int(w[4]) + int(w[5]) / 1e6, (int(w[2]) - int(w[6])) / 1e6) for w in pgbench_lines(logs)
               if len(w) >= 7 and w[2].isdigit()]
        return lat, res


def pg_run(a):
    """pgBackRest's figures, or (None, why not)."""
    if a.no_pg:
        return None, "--no-pg"
    if os.geteuid() != 0:
        return None, "needs root (PostgreSQL runs as the postgres user)"
    if not os.access(f"{PG_BIN}/postgres", os.X_OK) or not shutil.which("pgbackrest") or not shutil.which("runuser"):
        return None, "PostgreSQL 15 or pgbackrest is not installed (scripts/install-deps --bench)"
    tmp = pg_tmp("ombra-bpbpg-")
    pg = PgPair(tmp, a)
    try:
        print(f"  pgbench -i -s {a.pg_scale}, a standby, the stanza", flush=True)
        pg.setup()
        # a first full (not measured): its time sizes the pgbench runs around the others
        t0, t1 = pg.backup(standby=False)
        first = t1 - t0
        phases = []
        order = ["none", "standby", "primary"]
        for rnd in range(a.rounds):
            for label in order if rnd % 2 == 0 else order[::-1]:
                time.sleep(2)
                if label == "none":
                    lat, _ = pg.bench(a.baseline_seconds)
                    w = (min(t for t, _ in lat), max(t for t, _ in lat))
                else:
                    lat, w = pg.bench(3 + 2 * first + 10, lambda: pg.backup(standby=label == "standby"))
                    if max(t for t, _ in lat) < w[1]:
                        raise Failed(f"pgbench ended before the backup from the {label} did ({w[1] - w[0]:.1f} s, "
                                     f"the first took {first:.1f} s)")
                sel = sorted(x for t, x in lat if w[0] <= t <= w[1])
                phases.append({"label": label, "round": rnd + 1, "seconds": w[1] - w[0], "lat": sel,
                               **summary(sel, w[1] - w[0])})
                print(f"  round {rnd + 1}, pgBackRest {label}: {w[1] - w[0]:.1f} s, {len(sel)} transactions, "
                      f"p50 {pct(sel, 50) * 1e3:.1f} ms, p99 {pct(sel, 99) * 1e3:.1f} ms", flush=True)
        info = json.loads(pg.pgbr("--output=json", "info"))
        backups = info[0]["backup"]
        if len(backups) != 1 + 2 * a.rounds or any(b.get("error") for b in backups):
            raise Failed(f"pgbackrest info lists {len(backups)} backups, {1 + 2 * a.rounds} wanted, or one in error")
        out = {"db_bytes": pg.size, "first_full_seconds": first, "phases": phases,
               "version": pg.run("pgbackrest", "version").strip() + ", PostgreSQL " + pg.sql("SHOW server_version"),
               "backup_bytes": [b["info"]["size"] for b in backups], "repo_bytes": [b["info"]["repository"]["delta"]
                                                                                    for b in backups]}
        for label in order:  # pooled over the rounds, as Ombra's
            phs = [p for p in phases if p["label"] == label]
            lat = sorted(x for p in phs for x in p["lat"])
            out[label] = {**summary(lat, sum(p["seconds"] for p in phs)), "seconds": [p["seconds"] for p in phs],
                          "per_round_p99_ms": [p["p99_ms"] for p in phs]}
        for p in phases:
            del p["lat"]
        return out, None
    except (Failed, subprocess.TimeoutExpired, OSError, ValueError, KeyError, IndexError) as e:
        return None, str(e)[:400]
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the table ---------------------------------------------------------------------------------


def main():
    ap = parser(__doc__)
    ap.add_argument("--mb", type=int, default=1024, help="MB of mail loaded before (16 KiB messages)")
    ap.add_argument("--threads", type=int, default=3, help="clients delivering (pgbench -c)")
    ap.add_argument("--rate", type=int, default=40, help="deliveries a second per client (pgbench -R: times --threads)")
    ap.add_argument("--size", type=int, default=8192, help="bytes per delivered message")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-seconds", type=int, default=20, help="the phase without a backup")
    ap.add_argument("--pg-scale", type=int, default=70, help="pgbench scale of the PostgreSQL database (70: ~1 GB)")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL and pgBackRest")
    ap.add_argument("--json", default=f"{ROOT}/bench/results/passive_backup.json")
    ap.add_argument("--md", default=None, help="the Markdown table (default: --json with .md)")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    a.md = a.md or re.sub(r"\.json$", "", a.json) + ".md"
    if min(a.mb, a.threads, a.rate, a.size, a.rounds, a.baseline_seconds, a.pg_scale) < 1:
        raise SystemExit("passive_backup.py: every number must be at least 1")
    need_dag(a.build, "passive_backup.py")
    tmp = tempfile.mkdtemp(prefix="ombra-bpb-", dir="/tmp")
    fs = fstype(tmp)
    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    print(f"Ombra: 3 servers on 127.0.0.1, {DB} ({a.mb} MB) active on mbx1 with passive copies on mbx2 and mbx3; "
          f"{a.threads} clients delivering {a.size}-byte messages, {a.rate}/s each; {a.rounds} rounds", flush=True)
    try:
        o = ombra_run(a, tmp)
    except Failed as e:
        raise SystemExit(f"passive_backup.py: FAILED: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("pgBackRest: a PostgreSQL 15 primary with a streaming standby; pgbench -R at the same rate", flush=True)
    pg, why = pg_run(a)
    if why:
        print(f"pgBackRest not run: {why}")

    st = o["settings"]
    base = st["none"]
    dd = o["dedup"]
    rows = []  # (metric, value, decimals)

    def lat_rows(label):
        s = st[label]
        rows.append((f"{LABELS[label]}: p50 / p99 / max ms",
                     f"{fmt(s['p50_ms'], 1)} / {fmt(s['p99_ms'], 1)} / {fmt(s['max_ms'], 0)}", None))
        if label != "none":
            rows.append((f"  p50, p99 / no backup's", f"{fmt(ratio(s['p50_ms'], base['p50_ms']), 2)}, "
                         f"{fmt(ratio(s['p99_ms'], base['p99_ms']), 2)}", None))
    for label in LABELS:
        lat_rows(label)
    for prov, act, pas in (("default provider", "active", "passive"), ("--provider copy", "active_copy",
                                                                         "passive_copy")):
        rows.append((f"p99 from active / from passive, {prov}",
                     fmt(ratio(st[act]["p99_ms"], st[pas]["p99_ms"]), 2), None))
        rows.append((f"max from active / from passive, {prov}",
                     fmt(ratio(st[act]["max_ms"], st[pas]["max_ms"]), 2), None))
    for label in ("passive", "passive_copy"):
        s = st[label]
        rows.append((f"replay held s, {LABELS[label][10:]} (median)", fmt(median(s["hold_s"]), 2), None))
        rows.append((f"  hold / backup's seconds", fmt(ratio(median(s["hold_s"]), median(s["backup_seconds"])), 2),
                     None))
        rows.append((f"  replay queue max, generations", ", ".join(str(x) for x in s["replay_queue_max_gens"]), None))
        rows.append((f"  seen in copy status: replayed past N after, s", ", ".join(f"{x:.2f}" for x in
                                                                                s["status_past_n_s"]), None))
        rows.append((f"  catch-up s after the release (median)", fmt(median(s["catch_up_s"]), 2), None))
    for label in ("passive", "passive_copy", "active", "active_copy"):
        rows.append((f"backup seconds, {LABELS[label][10:]}", ", ".join(f"{x:.1f}" for x in
                                                                        st[label]["backup_seconds"]), None))
    rows.append(("dedup: 1st full (mbx2) MB stored", fmt(dd[0]["bytes_stored"] / 1e6, 1), None))
    rows.append(("dedup: 2nd full (mbx3) MB stored", fmt(dd[1]["bytes_stored"] / 1e6, 1), None))
    rows.append(("  2nd / 1st bytes stored", fmt(ratio(dd[1]["bytes_stored"], dd[0]["bytes_stored"]), 3), None))
    rows.append(("  2nd: blocks reused / all", f"{dd[1]['blocks_reused']} / "
                 f"{dd[1]['blocks_reused'] + dd[1]['blocks_new']} = "
                 f"{fmt(ratio(dd[1]['blocks_reused'], dd[1]['blocks_reused'] + dd[1]['blocks_new']), 3)}", None))
    rows.append(("  3rd (mbx2 again) / 1st bytes stored", fmt(ratio(dd[2]["bytes_stored"], dd[0]["bytes_stored"]), 3),
                 None))
    if pg:
        for label, name in (("none", "no backup"), ("standby", "full from standby"), ("primary", "full from primary")):
            rows.append((f"pgBackRest, {name}: p50 / p99 / max ms",
                         f"{fmt(pg[label]['p50_ms'], 1)} / {fmt(pg[label]['p99_ms'], 1)} / "
                         f"{fmt(pg[label]['max_ms'], 0)}", None))
            if label != "none":
                rows.append((f"  p50, p99 / no backup's", f"{fmt(ratio(pg[label]['p50_ms'], pg['none']['p50_ms']), 2)}, "
                             f"{fmt(ratio(pg[label]['p99_ms'], pg['none']['p99_ms']), 2)}", None))
        rows.append(("pgBackRest p99 from primary / from standby",
                     fmt(ratio(pg["primary"]["p99_ms"], pg["standby"]["p99_ms"]), 2), None))
        rows.append(("pgBackRest max from primary / from standby",
                     fmt(ratio(pg["primary"]["max_ms"], pg["standby"]["max_ms"]), 2), None))
        rows.append(("pgBackRest backup seconds, standby / primary",
                     ", ".join(f"{x:.1f}" for x in pg["standby"]["seconds"]) + " / " +
                     ", ".join(f"{x:.1f}" for x in pg["primary"]["seconds"]), None))
    else:
        rows.append(("pgBackRest (backup-standby)", f"not run: {why}", None))
    w = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{w}} | value", f"{'-' * w}-+-{'-' * 24}"]
    lines += [f"{n:<{w}} | {v}" for n, v, _ in rows]
    details = []
    for ph in o["phases"]:
        d = (f"round {ph['round']}, {LABELS[ph['label']]}: {ph['seconds']:.1f} s, {ph['deliveries']} deliveries "
             f"({fmt(ph['deliveries_per_s'], 1)}/s), p50 {fmt(ph['p50_ms'], 1)} p99 {fmt(ph['p99_ms'], 1)} "
             f"max {fmt(ph['max_ms'], 0)} ms; slowest at " +
             ", ".join(f"{t:.1f} s ({lat * 1e3:.0f} ms)" for lat, t in ph["slowest"][:3]))
        if "backup" in ph:
            b = ph["backup"]
            d += (f"; backup read {b['bytes_read'] / 1e6:,.0f} MB, stored {b['bytes_stored'] / 1e6:,.0f} MB, "
                  f"freeze_ms {b['freeze_ms']:.1f}, snapshot_ms {b['snapshot_ms']:.1f}")
        if "hold" in ph:
            h = ph["hold"]
            d += (f"; replay held {h['hold_s']:.2f} s from {h['freeze_after_start_s']:.2f} s in (generation "
                  f"{h['frozen_at_generation']}{', to the session end' if h['held_to_session_end'] else ''}; copy "
                  f"status past it after {h['status_past_n_s']:.2f} s), queue max {h['replay_queue_max_gens']}, "
                  f"caught up {fmt(h['catch_up_s'], 2)} s after the release")
        d += f"; replay queue max (gens) {ph['queue_max']}"
        details.append(d)
    machine = (f"{os.cpu_count()} CPUs, {fs} on /tmp, shared: the three servers, etcd, the clients, the "
               f"backups (and PostgreSQL's two servers) all run on them")
    cmd = "python3 bench/passive_backup.py " + " ".join(sys.argv[1:])
    print()
    print("\n".join(lines))
    print()
    print("\n".join(details))
    print(f"verified: both passive copies' digests equal the active's ({o['digest']})")
    print(f"machine: {machine}")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"time": utc_stamp(), "command": cmd,
                   "params": {"mb": a.mb, "threads": a.threads, "rate": a.rate, "size": a.size, "rounds": a.rounds,
                              "baseline_seconds": a.baseline_seconds, "pg_scale": a.pg_scale},
                   "machine": {"nproc": os.cpu_count(), "fstype": fs},
                   "wall_seconds": time.monotonic() - started,
                   "ombra": o, "pgbackrest": pg, "pgbackrest_why_not": why,
                   "table": [{"metric": n, "value": v} for n, v, _ in rows]}, f, indent=1)
    with open(a.md, "w") as f:
        f.write(MD_HEAD.format(date=time.strftime("%Y-%m-%d", time.gmtime()), cmd=cmd, machine=machine, a=a,
                               edb=o["edb_bytes"] / 1e6))
        f.write("```\n" + "\n".join(lines) + "\n```\n\nPer phase:\n\n")
        f.write("".join(f"- {d}\n" for d in details))
        f.write(f"\nVerified: after the mail stopped, both passive copies' digests equal the active's "
                f"(`{o['digest']}`); every backup stored one set from the copy asked for.\n")
        if not pg:
            f.write(f"\npgBackRest was not run: {why}.\n")
        f.write(MD_NOTES)


MD_HEAD = """# Backups from passive copies (`bench/passive_backup.py`, `make bench-passive`)

Run {date}: `{cmd}`

Machine: {machine}. Absolute times mean little on it: read the ratios.

A DAG of three servers on 127.0.0.1; `mail1` ({edb:,.0f} MB .edb after `ombra mail load`) active on
mbx1, passive copies on mbx2 and mbx3. {a.threads} clients deliver {a.size}-byte messages to the
active, {a.rate} a second each. Latency: the client's, of each delivery sent while the backup ran
(or during {a.baseline_seconds} s without one). Each full backup goes into an empty repository
(the same work each time). {a.rounds} rounds, the order reversed every other round. pgBackRest:
pgbench -R {rate} (-c {a.threads}, TPC-B-like) on the primary, a full backup from the standby
(`--backup-standby`) and from the primary, the same rounds.

""".replace("{rate}", "{a.rate} x {a.threads}")

MD_NOTES = """
How to read it:

- *Default provider* is `auto`: on this ext3 volume (no btrfs, no reflink) it picks `held`, so the
  copy's replay (the passive) or the store writer's files (the active) stay held until the session
  ends. `--provider copy` copies the files during the freeze and thaws after.
- *Replay held*: from the replica writer's log line "frozen at generation N" (seen within 0.2 s)
  to the release: the end of the session with the held provider (the backup's end), the thaw
  with the copy provider (the requester's `freeze_ms` after the freeze). Checked against `ombra db
  copy status` (every 0.2 s): the first status with the copy replayed past N comes that long after
  the freeze plus the first round of replay and the copy's publishing of its status. *Queue*: the
  generations the active had closed and the copy had not replayed (largest sampled). *Catch-up*:
  from the release to the first status with the copy replayed through what the active had closed
  at the release; 0 means within one sample (0.2 s): the copy replays a round of generations and
  publishes its status once, after the round.
- On one machine a backup from a passive still shares the 2 CPUs and the disk with the active:
  it reads, hashes, compresses and writes the same bytes as one from the active. What differs is
  only which writer freezes and holds. On separate servers the passive's backup would also take
  its reads and CPU off the active's machine; this benchmark cannot show that part.
- Clients are paced (a delivery starts every 1/rate s, the next at once when one took longer), so
  a stall shows as one long delivery, not as many.
- *Deduplication*: three fulls from passive copies into one repository, mail arriving meanwhile.
  The second (from mbx3) stores only the blocks that changed since the first (from mbx2): the two
  copies' .edb files are the same pages, replayed from the same log. The third (mbx2 again) is the
  same-copy reference.
"""


if __name__ == "__main__":
    main()
