#!/usr/bin/env python3
"""Log replay side by side, one run, warm cache: Ombra's hard recovery of a restored set (a full
backup of a small store database, then an incremental holding about --mb MB of log, laid down
with --no-replay; `ombra dbutil recover` replays it) against PostgreSQL 15's crash recovery of
about the same volume of WAL (a cluster stopped with `pg_ctl stop -m immediate` after as much
mail-like inserts; `pg_ctl start` replays it). Each round puts the same files back (cp -a, so
both start warm), then times one side, then the other, alternating who goes first. After each
timed Ombra run the recovered database's mail digest (`ombra dbutil digest`) must equal the one
recorded before the incremental; PostgreSQL's table must hold every row. Prints a table and
writes bench/results/replay.json.

    bench/replay.py [--build DIR] [--mb 256] [--base-mb 64] [--rounds 3] [--no-pg] [--json FILE]
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from benchlib import (GEN, MSG, PG_BIN, ROOT, fmt, fstype, median, need_build, ombra_env, parser, sh, stop_all,
                      store_daemons)


class Ombra:
    """A store database, a full backup, --mb MB of new mail, an incremental; the chain laid down
    with --no-replay into tmp/lay.orig (the daemons are stopped afterwards)."""

    def __init__(self, a, tmp):
        self.a, self.tmp = a, tmp
        self.ombra = f"{a.build}/src/cli/ombra"
        self.env = ombra_env(tmp)

    def setup(self):
        a, tmp, env, o = self.a, self.tmp, self.env, self.ombra
        log = open(f"{tmp}/daemons.log", "w")
        daemons = store_daemons(a.build, env, log)
        try:
            time.sleep(1)
            sh(f"{o} db new db1", env)
            sh(f"{o} mail load db1 --mailboxes 200 --messages {a.base_mb * 1000 * 1000 // MSG} --size {MSG}", env)
            sh(f"{o} repo init {tmp}/repo", env)
            sh(f"{o} backup --repo {tmp}/repo --type full db1", env)
            t, _ = sh(f"{o} mail load db1 --mailboxes 200 --messages {a.mb * 1000 * 1000 // MSG} --size {MSG} "
                      f"--seed 11", env)
            print(f"ombra: {a.mb} MB of new mail in {t:.1f} s", flush=True)
            self.digest = sh(f"{o} mail digest db1", env)[1].strip()
            sh(f"{o} backup --repo {tmp}/repo --type incremental db1", env)
            sh(f"{o} restore db1 --repo {tmp}/repo --edb {tmp}/lay/db1.edb --logs {tmp}/lay/logs --no-replay",
               env)
        finally:
            stop_all(daemons)
            log.close()
        shutil.rmtree(f"{tmp}/repo")
        shutil.rmtree(f"{tmp}/home")
        os.rename(f"{tmp}/lay", f"{tmp}/lay.orig")
        logs = [f for f in os.listdir(f"{tmp}/lay.orig/logs/_restoredLogs") if f.endswith(".log")]
        self.log_files = len(logs)

    def round(self):
        tmp, o = self.tmp, self.ombra
        shutil.rmtree(f"{tmp}/lay", ignore_errors=True)
        sh(f"cp -a {tmp}/lay.orig {tmp}/lay && sync")
        wall, out = sh(f"{o} dbutil recover {tmp}/lay/logs --json", self.env)
        r = json.loads(out)
        gens = r["log_range"][1] - r["log_range"][0] + 1
        got = sh(f"{o} dbutil digest {tmp}/lay/db1.edb --logs {tmp}/lay/logs", self.env)[1].strip()
        if got != self.digest:
            raise RuntimeError(f"the recovered database's digest {got} is not the recorded {self.digest}")
        return {"seconds": r["seconds"], "wall": wall, "generations": gens, "records": r["records"],
                "transactions": r["transactions"], "log_mb": gens * GEN / 1e6,
                "mb_s": gens * GEN / 1e6 / r["seconds"]}


class Postgres:
    """A PostgreSQL 15 cluster (shared_buffers 256MB, as Ombra's default cache) with a mail table
    (bodies of random bytes, stored uncompressed), a checkpoint, then about --mb MB of inserts in
    transactions of 64 messages (as `ombra mail load`), then stop -m immediate: crash recovery
    replays all of that WAL. The crashed data directory is kept and copied back for each round."""

    def __init__(self, a, tmp):
        self.a, self.tmp = a, tmp
        self.port = 54000 + os.getpid() % 1000

    def run(self, *argv, check=True):
        p = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], capture_output=True, text=True,
                           cwd=self.tmp)
        if check and p.returncode:
            raise RuntimeError(f"{' '.join(map(str, argv))}: {(p.stderr or p.stdout).strip()[-600:]}")
        return p.stdout

    def sql(self, q):
        return self.run(f"{PG_BIN}/psql", "-h", self.tmp, "-p", self.port, "-qAtX", "-v", "ON_ERROR_STOP=1",
                        "-c", q, "postgres").strip()

    def ctl(self, *args):
        return self.run(f"{PG_BIN}/pg_ctl", "-D", f"{self.tmp}/pg", "-l", f"{self.tmp}/pg.log", "-t", 600,
                        "-o", f"-p {self.port} -k {self.tmp}", *args)

    def setup(self):
        a, tmp = self.a, self.tmp
        self.run(f"{PG_BIN}/initdb", "-D", f"{tmp}/pg")
        with open(f"{tmp}/pg/postgresql.conf", "a") as f:
            f.write("listen_addresses = ''\nwal_level = replica\nshared_buffers = 256MB\nmax_wal_size = 16GB\n"
                    "checkpoint_timeout = 1d\nlog_line_prefix = '%m '\nlog_checkpoints = on\n")
        self.ctl("-w", "start")
        self.sql("CREATE TABLE mail (id bigserial PRIMARY KEY, mailbox int, body bytea); "
                 "ALTER TABLE mail ALTER COLUMN body SET STORAGE EXTERNAL")
        self.sql("CHECKPOINT")
        start = int(self.sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))
        msgs = a.mb * 1000 * 1000 // MSG
        batch = 64
        t0 = time.monotonic()
        self.sql("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        with open(f"{tmp}/load.sql", "w") as f:  # one session, a transaction per statement
            for i in range(0, msgs, batch):
                f.write(f"INSERT INTO mail (mailbox, body) SELECT g % 200, (SELECT string_agg(gen_random_bytes("
                        f"{MSG // 8}), '') FROM generate_series(1, 8) k WHERE k > g * 0) "
                        f"FROM generate_series(1, {min(batch, msgs - i)}) g;\n")
        os.chmod(f"{tmp}/load.sql", 0o644)
        self.run(f"{PG_BIN}/psql", "-h", tmp, "-p", self.port, "-qAtX", "-v", "ON_ERROR_STOP=1", "-f",
                 f"{tmp}/load.sql", "postgres")
        end = int(self.sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))
        print(f"postgresql: {msgs} rows in {time.monotonic() - t0:.1f} s, {(end - start) / 1e6:.0f} MB of WAL",
              flush=True)
        self.rows = msgs
        self.wal_bytes = end - start
        self.ctl("-m", "immediate", "stop")
        os.rename(f"{tmp}/pg", f"{tmp}/pg.orig")

    def round(self):
        tmp = self.tmp
        shutil.rmtree(f"{tmp}/pg", ignore_errors=True)
        sh(f"cp -a {tmp}/pg.orig {tmp}/pg && sync")
        open(f"{tmp}/pg.log", "w").close()
        t0 = time.monotonic()
        self.ctl("-w", "start")
        wall = time.monotonic() - t0
        rows = int(self.sql("SELECT count(*) FROM mail"))
        self.ctl("-m", "fast", "-w", "stop")
        if rows != self.rows:
            raise RuntimeError(f"postgresql recovered {rows} rows, {self.rows} were committed")
        with open(f"{tmp}/pg.log") as f:
            log = f.read()
        stamps = {}
        for key, pat in (("begin", r"automatic recovery in progress"), ("redo_done", r"redo done at"),
                         ("ready", r"database system is ready to accept connections")):
            m = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ .*" + pat, log, re.M)
            if not m:
                raise RuntimeError(f"postgresql's log has no line '{pat}':\n{log[-1500:]}")
            stamps[key] = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + float(
                "0" + m.group(1)[19:])
        m = re.search(r"redo done at .* elapsed: ([\d.]+) s", log)
        secs = stamps["ready"] - stamps["begin"]  # replay and the end-of-recovery checkpoint
        return {"seconds": secs, "redo_seconds": float(m.group(1)) if m else None, "wall": wall,
                "log_mb": self.wal_bytes / 1e6, "mb_s": self.wal_bytes / 1e6 / secs}


def main():
    ap = parser(__doc__)
    ap.add_argument("--mb", type=int, default=256, help="MB of mail logged after the full backup (the log replayed)")
    ap.add_argument("--base-mb", type=int, default=64, help="MB of mail in the database at the full backup")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    ap.add_argument("--json", default=f"{ROOT}/bench/results/replay.json")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    if a.rounds < 1 or a.mb < 1 or a.base_mb < 1:
        raise SystemExit("replay.py: --rounds, --mb and --base-mb must be at least 1")
    need_build(a.build, "replay.py")
    why_no_pg = None
    if a.no_pg:
        why_no_pg = "--no-pg"
    elif os.geteuid() != 0 or not shutil.which("runuser"):
        why_no_pg = "needs root (PostgreSQL runs as postgres through runuser)"
    elif not os.access(f"{PG_BIN}/postgres", os.X_OK):
        why_no_pg = f"{PG_BIN}/postgres is missing (scripts/install-deps --bench)"
    tmp = tempfile.mkdtemp(prefix="ombra-rp-", dir="/tmp")
    os.chmod(tmp, 0o755)
    fs = fstype(tmp)
    om = Ombra(a, f"{tmp}/o")
    os.makedirs(om.tmp)
    pg = None
    if not why_no_pg:
        pg = Postgres(a, f"{tmp}/p")
        os.makedirs(pg.tmp)
        shutil.chown(pg.tmp, "postgres")
    rounds = []
    try:
        om.setup()
        if pg:
            pg.setup()
        for i in range(a.rounds):  # who goes first alternates (bench/README.md, Noise)
            r = {}
            for side in (("ombra", "pg") if i % 2 == 0 else ("pg", "ombra")):
                if side == "ombra":
                    r["ombra"] = om.round()
                elif pg:
                    r["pg"] = pg.round()
            rounds.append(r)
            print(f"round {i + 1}: Ombra {r['ombra']['log_mb']:.0f} MB of log in {r['ombra']['seconds']:.2f} s "
                  f"({r['ombra']['mb_s']:.0f} MB/s, digest equal)"
                  + (f"; PostgreSQL {r['pg']['log_mb']:.0f} MB of WAL in {r['pg']['seconds']:.2f} s "
                     f"({r['pg']['mb_s']:.0f} MB/s, redo alone {fmt(r['pg']['redo_seconds'], 2)} s)" if "pg" in r
                     else ""), flush=True)
    finally:
        if pg:
            pg.run(f"{PG_BIN}/pg_ctl", "-D", f"{pg.tmp}/pg", "-m", "immediate", "stop", check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    o_mb_s = median([r["ombra"]["mb_s"] for r in rounds])
    p_mb_s = median([r["pg"]["mb_s"] for r in rounds if "pg" in r])
    ratios = [r["ombra"]["mb_s"] / r["pg"]["mb_s"] for r in rounds if "pg" in r]
    res = {
        "ombra_mb_s": o_mb_s, "ombra_seconds": median([r["ombra"]["seconds"] for r in rounds]),
        "ombra_log_mb": rounds[0]["ombra"]["log_mb"], "ombra_records": rounds[0]["ombra"]["records"],
        "pg_mb_s": p_mb_s, "pg_seconds": median([r["pg"]["seconds"] for r in rounds if "pg" in r]),
        "pg_redo_seconds": median([r["pg"]["redo_seconds"] for r in rounds if "pg" in r]),
        "pg_wal_mb": rounds[0]["pg"]["log_mb"] if "pg" in rounds[0] else None, "pg_why_not": why_no_pg,
        "ratio_ombra_over_pg": median(ratios), "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "rounds": rounds,
    }
    rows = [("log replayed, MB", res["ombra_log_mb"], res["pg_wal_mb"]),
            ("replay seconds (median)", res["ombra_seconds"], res["pg_seconds"]),
            ("MB/s of log (median)", o_mb_s, p_mb_s)]
    print(f"\n{'metric':<28} | {'Ombra':>9} | {'PG 15':>9} | {'O/PG':>6}")
    print("-" * 29 + "+" + "-" * 11 + "+" + "-" * 11 + "+" + "-" * 7)
    for name, o, p in rows:
        print(f"{name:<28} | {fmt(o, 2 if 'seconds' in name else 0):>9} | {fmt(p, 2 if 'seconds' in name else 0):>9}"
              f" | {fmt(o / p if o and p else None, 2):>6}")
    if ratios:
        print(f"per-round ratio of MB/s: {min(ratios):.2f} to {max(ratios):.2f}; PostgreSQL's redo alone "
              f"(without its end-of-recovery checkpoint): {fmt(res['pg_redo_seconds'], 2)} s")
    else:
        print(f"PostgreSQL not run: {why_no_pg}")
    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "mb": a.mb, "base_mb": a.base_mb,
           "machine": {"nproc": os.cpu_count(), "fstype": fs}, "results": res}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
