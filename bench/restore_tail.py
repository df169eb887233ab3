#!/usr/bin/env python3
"""The tail of a restore, two builds side by side: the seconds from the store's log line
"restored DB: generations A-B replayed" to the exit of `ombra restore DB --to db2 --mount`
(what PostRestore does after replay: the restore's folder, the mount, the answer). One store
home, one chain (a full of about --mb MB and --incrementals incrementals of --incr-mb MB each,
made with the first build); every round restarts the daemons from one build and restores, the
builds taking turns (ABBA), the restored digest checked every time. Prints the medians.

    bench/restore_tail.py --build A --build B [--mb 256] [--incr-mb 100] [--incrementals 3]
                          [--rounds 5]
"""
import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

MSG = 8000
LINE = re.compile(r"^(\S+Z) ombra-store\[\d+\] \w+: restored db2: generations (\d+)-(\d+) replayed")


def sh(cmd, env):
    p = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{cmd}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


class Daemons:
    def __init__(self, build, tmp, env):
        self.log_path = f"{tmp}/daemons.log"
        self.log = open(self.log_path, "a")
        self.procs = [subprocess.Popen([f"{build}/src/daemons/{d}", "--foreground", *x], env=env,
                                       stdout=self.log, stderr=subprocess.STDOUT)
                      for d, x in (("ombra-vssd", []), ("ombra-store", ["--server", "srv1"]))]
        time.sleep(1)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


def last_replayed(path):
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                found = m
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, help="a build directory (twice)")
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--incr-mb", type=int, default=100)
    ap.add_argument("--incrementals", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="restores per build")
    a = ap.parse_args()
    builds = [os.path.abspath(b) for b in a.build]
    if len(builds) != 2:
        raise SystemExit("restore_tail.py: name two builds (--build A --build B)")
    tmp = tempfile.mkdtemp(prefix="ombra-rt-", dir="/tmp")
    env = dict(os.environ, OMBRA_RUNTIME_DIR=f"{tmp}/run", OMBRA_HOME=f"{tmp}/home")
    d = Daemons(builds[0], tmp, env)
    tails = {b: [] for b in builds}
    try:
        ombra = f"{builds[0]}/src/cli/ombra"
        sh(f"{ombra} db new db1", env)
        sh(f"{ombra} mail load db1 --mailboxes 200 --messages {a.mb * 1000 * 1000 // MSG} --size {MSG}", env)
        sh(f"{ombra} repo init {tmp}/warm", env)
        sh(f"{ombra} backup --repo {tmp}/warm --type full db1", env)  # truncates the load's logs
        shutil.rmtree(f"{tmp}/warm")
        repo = f"{tmp}/repo"
        sh(f"{ombra} repo init {repo}", env)
        sh(f"{ombra} backup --repo {repo} --type full db1", env)
        for i in range(a.incrementals):
            sh(f"{ombra} mail load db1 --mailboxes 200 --messages {a.incr_mb * 1000 * 1000 // MSG} "
               f"--size {MSG} --seed {11 + i}", env)
            sh(f"{ombra} backup --repo {repo} --type incremental db1", env)
        digest = sh(f"{ombra} mail digest db1", env).strip()
        sh(f"{ombra} db new db2", env)
        sh(f"{ombra} db dismount db2", env)
        sh(f"{ombra} db set db2 --allow-restore on", env)
        d.stop()
        order = []
        for i in range(a.rounds):
            order += builds if i % 2 == 0 else builds[::-1]
        for i, b in enumerate(order):
            d = Daemons(b, tmp, env)
            ombra = f"{b}/src/cli/ombra"
            sh("sync", env)
            sh(f"{ombra} restore db1 --repo {repo} --to db2 --mount --json", env)
            end = datetime.datetime.now(datetime.timezone.utc)
            d.log.flush()
            m = last_replayed(d.log_path)
            if not m:
                raise RuntimeError("no 'restored db2: generations A-B replayed' line in the store's log")
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            got = sh(f"{ombra} mail digest db2", env).strip()
            if got != digest:
                raise RuntimeError(f"round {i + 1}: digest {got}, the source's is {digest}")
            sh(f"{ombra} db dismount db2", env)
            tail = (end - at).total_seconds()
            tails[b].append(tail)
            print(f"round {i + 1} {b}: generations {m.group(2)}-{m.group(3)}, replayed line to exit "
                  f"{tail:.3f} s", flush=True)
            d.stop()
    finally:
        if d.procs[0].poll() is None:
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for b in builds:
        print(f"{b}: median {statistics.median(tails[b]):.3f} s over {len(tails[b])} "
              f"({', '.join(f'{x:.3f}' for x in tails[b])})")
    print(f"ratio (second / first): {statistics.median(tails[builds[1]]) / statistics.median(tails[builds[0]]):.2f}")


if __name__ == "__main__":
    main()
