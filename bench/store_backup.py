#!/usr/bin/env python3
"""The store's writer under a backup with the held provider: how long writes are held (Freeze to
Thaw) for a small and a large database (it should not grow with the size), the whole snapshot
step, and the delivery latency seen by a client that keeps delivering mail (one persistent
connection, durable deliveries) through the backup, beside the same client's latency with no
backup running. Prints a table and writes bench/results/store_backup.json.

    bench/store_backup.py [--build DIR] [--sizes 100,2048] [--runs 3]
"""
import argparse
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    env = dict(os.environ, OMBRA_RUNTIME_DIR=f"{tmp}/run", OMBRA_HOME=f"{tmp}/home")
    logs = open(f"{tmp}/daemons.log", "w")
    vssd = subprocess.Popen([f"{build}/src/daemons/ombra-vssd", "--foreground"], env=env, stdout=logs,
                            stderr=subprocess.STDOUT)
    store = subprocess.Popen([f"{build}/src/daemons/ombra-store", "--foreground", "--server", "srv1"], env=env,
                             stdout=logs, stderr=subprocess.STDOUT)
    ombra = lambda *a: subprocess.run([f"{build}/src/cli/ombra", *map(str, a)], env=env, capture_output=True,
                                      text=True, check=True).stdout
    try:
        for _ in range(100):
            if os.path.exists(f"{tmp}/run/store.sock") and os.path.exists(f"{tmp}/run/vss.sock"):
                break
            time.sleep(0.05)
        time.sleep(0.3)
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
        p = subprocess.run([f"{build}/tests/tools/vss_requester", "--type", "full", "--provider", "held",
                            "--component", comp], env=env, capture_output=True, text=True, timeout=1800)
        if p.returncode:
            raise RuntimeError(p.stderr.strip())
        first = json.loads(p.stdout.strip().splitlines()[-1])["freeze_ms"]
        stop, busy, res = threading.Event(), [], []
        th = threading.Thread(target=deliveries, args=(sock, stop, busy))
        th.start()
        try:
            for _ in range(runs):
                time.sleep(0.5)
                p = subprocess.run([f"{build}/tests/tools/vss_requester", "--type", "copy", "--provider", "held",
                                    "--component", comp], env=env, capture_output=True, text=True, timeout=1800)
                if p.returncode:
                    raise RuntimeError(p.stderr.strip())
                r = json.loads(p.stdout.strip().splitlines()[-1])
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
        store.terminate()
        vssd.terminate()
        store.wait(60)
        vssd.wait(30)
        logs.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("BUILD_RELEASE", f"{ROOT}/build-release"))
    ap.add_argument("--sizes", default="100,2048", help="database sizes in MB")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    out = {}
    for mb in (int(x) for x in a.sizes.split(",")):
        r = one_size(a.build, mb, a.runs)
        out[str(mb)] = r
        print(f"{r['database_bytes'] / 1e6:8.0f} MB database: writes held {r['freeze_ms']:6.1f} ms, snapshot "
              f"{r['snapshot_ms']:6.1f} ms (median of {a.runs}); deliveries during the backups: "
              f"{r['deliveries_during']}, slowest {r['delivery_max_ms']:.1f} ms, p99 {r['delivery_p99_ms']:.1f} ms "
              f"(no backup: slowest {r['idle_max_ms']:.1f} ms, p99 {r['idle_p99_ms']:.1f} ms); first full "
              f"backup over the load's untruncated logs held writes {r['first_full_freeze_ms']:.1f} ms")
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    with open(f"{ROOT}/bench/results/store_backup.json", "w") as f:
        json.dump({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": out}, f, indent=1)


if __name__ == "__main__":
    main()
