#!/usr/bin/env python3
"""The store's writer under a backup with the held provider: how long writes are held (Freeze to
Thaw) for a small and a large database (it should not grow with the size), the whole snapshot
step, and the delivery latency seen by a client that keeps delivering mail (one persistent
connection, durable deliveries) through the backup, beside the same client's latency with no
backup running. Two more cases (issue 21): writes held with 2,200 finished log generations on
disk (--gens; they should not count), and with many databases in one shadow copy (--dbs: one
`ombra backup` of them all). Prints a table and writes bench/results/store_backup.json.

    bench/store_backup.py [--build DIR] [--sizes 100,2048] [--runs 3]
                          [--gens 2200] [--dbs 100] [--cases sizes,gens,dbs]
                          [--compare OTHER_BUILD]

--compare runs the gens and dbs cases with a second build too, alternating the builds round by
round (the figures of one run side by side: this machine is shared and noisy).
"""
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import uuid

from benchlib import ROOT, ombra_env, parser, stop_all, store_daemons, utc_stamp, vss_requester, wait_sockets

MSG = 8000  # bytes per message of the load


class Client:
    """One connection to store.sock speaking the framed JSON protocol (docs/protocol.md)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)

    def _exactly(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise ConnectionError("the store closed the connection")
            b += c
        return b

    def call(self, req, data=b""):
        obj = json.dumps(dict(req, **({"data": len(data)} if data else {}))).encode()
        self.s.sendall(struct.pack("<I", len(obj)) + obj + (struct.pack("<I", len(data)) + data if data else b""))
        (n,) = struct.unpack("<I", self._exactly(4))
        rep = json.loads(self._exactly(n))
        if not rep.get("ok"):
            raise RuntimeError(rep)
        return rep

    def deliver(self, db, box, body):
        obj = json.dumps({"op": "mail.deliver", "db": db, "mailbox": box, "subject": "bench",
                          "data": len(body)}).encode()
        self.s.sendall(struct.pack("<I", len(obj)) + obj + struct.pack("<I", len(body)) + body)
        (n,) = struct.unpack("<I", self._exactly(4))
        rep = json.loads(self._exactly(n))
        if not rep.get("ok"):
            raise RuntimeError(rep)


def deliveries(sock, stop, lat):
    c = Client(sock)
    body = os.urandom(2000)
    i = 0
    while not stop.is_set():
        t0 = time.monotonic()
        c.deliver("db1", f"lat{i % 10}", body)
        lat.append(time.monotonic() - t0)
        i += 1


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else 0


def one_size(build, mb, runs):
    tmp = tempfile.mkdtemp(prefix="ombra-bsb-", dir="/tmp")
    env = ombra_env(tmp)
    logs = open(f"{tmp}/daemons.log", "w")
    daemons = store_daemons(build, env, logs)
    ombra = lambda *a: subprocess.run([f"{build}/src/cli/ombra", *map(str, a)], env=env, capture_output=True,
                                      text=True, check=True).stdout
    try:
        wait_sockets(f"{tmp}/run")
        ombra("db", "new", "db1")
        n = mb * 1000 * 1000 // MSG
        t0 = time.monotonic()
        ombra("mail", "load", "db1", "--mailboxes", 100, "--messages", n, "--size", MSG)
        load_s = time.monotonic() - t0
        info = json.loads(ombra("db", "show", "db1", "--json"))
        info = info.get("db", info)
        edb_bytes = os.path.getsize(info["edb"])
        inst = [w for w in json.loads(ombra("vss", "writers", "--json"))["writers"] if w["connected"]][0]["instance_id"]
        comp = f"{inst}:Ombra Store\\srv1\\{info['id']}"
        sock = f"{tmp}/run/store.sock"
        # latency with no backup, then through the backups
        stop, idle = threading.Event(), []
        th = threading.Thread(target=deliveries, args=(sock, stop, idle))
        th.start()
        time.sleep(3)
        stop.set()
        th.join()
        # A first full backup (not measured): it truncates the logs the load left, as a store in
        # service has had; with thousands of finished generations on disk the held provider's
        # hard links of them all take tens of ms of the freeze (see the result's first_full_ms).
        first = vss_requester(build, env, "full", "held", comp, 1800)["freeze_ms"]
        stop, busy, res = threading.Event(), [], []
        th = threading.Thread(target=deliveries, args=(sock, stop, busy))
        th.start()
        try:
            for _ in range(runs):
                time.sleep(0.5)
                r = vss_requester(build, env, "copy", "held", comp, 1800)
                res.append((r["freeze_ms"], r["snapshot_ms"]))
            time.sleep(0.5)
        finally:
            stop.set()
            th.join()
        return {
            "database_bytes": edb_bytes, "load_s": load_s,
            "freeze_ms": statistics.median(x[0] for x in res), "snapshot_ms": statistics.median(x[1] for x in res),
            "runs": res, "first_full_freeze_ms": first,
            "deliveries_during": len(busy), "delivery_max_ms": max(busy) * 1000, "delivery_p99_ms": pct(busy, .99) * 1000,
            "idle_deliveries": len(idle), "idle_max_ms": max(idle) * 1000, "idle_p99_ms": pct(idle, .99) * 1000,
        }
    finally:
        stop_all(daemons)
        logs.close()
        shutil.rmtree(tmp, ignore_errors=True)


class Daemons:
    """ombra-vssd and ombra-store of one build in a temporary home, and the CLI."""

    def __init__(self, build, vssd_args=()):
        self.build = build
        self.tmp = tempfile.mkdtemp(prefix="ombra-bsb-", dir="/tmp")
        self.env = ombra_env(self.tmp, OMBRA_CONFIG="/dev/null")
        self.logs = open(f"{self.tmp}/daemons.log", "w")
        self.daemons = store_daemons(build, self.env, self.logs, vssd_args)
        wait_sockets(f"{self.tmp}/run", 200)
        self.sock = f"{self.tmp}/run/store.sock"

    def ombra(self, *a, check=True):
        p = subprocess.run([f"{self.build}/src/cli/ombra", *map(str, a)], env=self.env, capture_output=True,
                           text=True)
        if check and p.returncode:
            raise RuntimeError(f"ombra {' '.join(map(str, a))}: {p.stderr.strip()}")
        return p.stdout

    def close(self):
        stop_all(self.daemons, 120)
        self.logs.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def held_backup(d, *args):
    """One backup with the held provider through `ombra backup --json` into a fresh repository;
    its writes-held figure (and the coordinator's details when it gives them)."""
    repo = f"{d.tmp}/repo-{uuid.uuid4()}"
    d.ombra("repo", "init", repo)
    r = json.loads(d.ombra("backup", "--repo", repo, "--type", "copy", "--provider", "held", "--json", *args))
    shutil.rmtree(repo, ignore_errors=True)
    return r


def setup_gens(build, gens):
    """A store with one small database and `gens` finished log generations on disk (the log rolled
    through db.backup_prepare, which closes the current generation as a passive copy's backup
    asks)."""
    d = Daemons(build)
    d.ombra("db", "new", "db1")
    d.ombra("mail", "load", "db1", "--mailboxes", 10, "--messages", 200, "--size", 4000)
    info = json.loads(d.ombra("db", "show", "db1", "--json"))
    info = info.get("db", info)
    c = Client(d.sock)
    for _ in range(gens):
        c.call({"op": "db.backup_prepare", "db": "db1", "id": info["id"], "type": "copy"})
    return d


def setup_dbs(build, n):
    d = Daemons(build)
    for i in range(n):
        d.ombra("db", "new", f"m{i:03}")
        d.ombra("mail", "load", f"m{i:03}", "--mailboxes", 2, "--messages", 5, "--size", 2000)
    return d


def side_by_side(builds, setup, measure, runs):
    """setup(build) for each build, then `runs` rounds measuring each build in turn (alternating
    which goes first); {build: [figures]}."""
    ds = {b: setup(b) for b in builds}
    out = {b: [] for b in builds}
    try:
        for r in range(runs):
            order = builds if r % 2 == 0 else builds[::-1]
            for b in order:
                out[b].append(measure(ds[b]))
    finally:
        for d in ds.values():
            d.close()
    return out


def gens_case(builds, gens, runs):
    def measure(d):
        r = held_backup(d, "db1")
        return {"freeze_ms": r["freeze_ms"], "snapshot_ms": r["snapshot_ms"], "freeze": r.get("freeze")}
    return side_by_side(builds, lambda b: setup_gens(b, gens), measure, runs)


def dbs_case(builds, n, runs):
    names = [f"m{i:03}" for i in range(n)]

    def measure(d):
        r = held_backup(d, *names)
        return {"freeze_ms": r["freeze_ms"], "snapshot_ms": r["snapshot_ms"], "sets": len(r["sets"]),
                "freeze": r.get("freeze")}

    def measure_safe(d):
        try:
            return measure(d)
        except RuntimeError as e:
            return {"error": str(e)[:300]}
    return side_by_side(builds, lambda b: setup_dbs(b, n), measure_safe, runs)


def summary(rows):
    ok = [r["freeze_ms"] for r in rows if "freeze_ms" in r]
    if not ok:
        return {"error": rows[0].get("error"), "runs": rows}
    return {"freeze_ms": statistics.median(ok), "min_ms": min(ok), "max_ms": max(ok), "runs": rows}


def main():
    ap = parser(__doc__)
    ap.add_argument("--sizes", default="100,2048", help="database sizes in MB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gens", type=int, default=2200, help="finished log generations on disk (gens case)")
    ap.add_argument("--dbs", default="100", help="databases in one shadow copy (dbs case; a list: 64,100)")
    ap.add_argument("--cases", default="sizes,gens,dbs")
    ap.add_argument("--compare", help="a second build (e.g. of main) measured beside --build, round by round")
    a = ap.parse_args()
    cases = a.cases.split(",")
    builds = [a.build] + ([a.compare] if a.compare else [])
    label = lambda b: "this" if b == a.build else "compare"
    out, extra = {}, {}
    if "gens" in cases:
        res = gens_case(builds, a.gens, a.runs)
        extra["gens"] = {"generations": a.gens, **{label(b): summary(v) for b, v in res.items()}}
        for b, v in res.items():
            sm = summary(v)
            print(f"{a.gens} finished generations on disk, {label(b):8}: writes held {sm['freeze_ms']:6.1f} ms "
                  f"(median of {len(v)}, {sm['min_ms']:.1f}-{sm['max_ms']:.1f}) [{b}]")
    if "dbs" in cases:
        extra["dbs"] = {}
        for n in (int(x) for x in a.dbs.split(",")):
            res = dbs_case(builds, n, a.runs)
            extra["dbs"][str(n)] = {label(b): summary(v) for b, v in res.items()}
            for b, v in res.items():
                sm = summary(v)
                if "freeze_ms" in sm:
                    print(f"{n} databases in one shadow copy, {label(b):8}: writes held {sm['freeze_ms']:6.1f} ms "
                          f"(median of {len(v)}, {sm['min_ms']:.1f}-{sm['max_ms']:.1f}) [{b}]")
                else:
                    print(f"{n} databases in one shadow copy, {label(b):8}: {sm['error']} [{b}]")
    for mb in (int(x) for x in a.sizes.split(",") if "sizes" in cases):
        r = one_size(a.build, mb, a.runs)
        out[str(mb)] = r
        print(f"{r['database_bytes'] / 1e6:8.0f} MB database: writes held {r['freeze_ms']:6.1f} ms, snapshot "
              f"{r['snapshot_ms']:6.1f} ms (median of {a.runs}); deliveries during the backups: "
              f"{r['deliveries_during']}, slowest {r['delivery_max_ms']:.1f} ms, p99 {r['delivery_p99_ms']:.1f} ms "
              f"(no backup: slowest {r['idle_max_ms']:.1f} ms, p99 {r['idle_p99_ms']:.1f} ms); first full "
              f"backup over the load's untruncated logs held writes {r['first_full_freeze_ms']:.1f} ms")
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    path = f"{ROOT}/bench/results/store_backup.json"
    try:
        with open(path) as f:
            prev = json.load(f)  # the cases not run this time stay as they were
    except (OSError, ValueError):
        prev = {}
    if out:
        prev["sizes"] = out
    prev.update(extra, time=utc_stamp())
    with open(path, "w") as f:
        json.dump(prev, f, indent=1)


if __name__ == "__main__":
    main()
