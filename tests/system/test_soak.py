"""Hostile-load soak (issue 15): while mail is delivered and backups of several databases run one
after another, attackers open connections until the store's limit, send half frames, announce
huge payloads, send garbage, and connect as another uid. Afterwards every delivery the store
acknowledged must read back, byte for byte, after a restart.

OMBRA_SOAK_SECONDS sets how long the attack lasts (default 30); OMBRA_SOAK_REPORT names a JSON
file for the figures, which are also printed on one line starting with "soak:".
The test fails on any acknowledged delivery that does not read back, on a store that stops
answering (db list slower than 30 s), when no backup completes, or when the store's peak memory
passes 1 GiB."""
import hashlib
import json
import os
import re
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import Result
from test_hostile import HostileStore, cpu_seconds, frame, status_kib

DBS = ("sales", "support", "legal")
NOBODY = 65534



def failure_kinds(errors):
    """How many failures of each kind (the error number and name of their first stderr line, or
    the line itself), so the report says why backups or probes failed under attack."""
    kinds = {}
    for e in errors:
        e = e.split("--- stderr\n", 1)[-1]
        m = re.search(r"-\d+ [A-Za-z]+", e)
        k = m.group(0) if m else (e.strip().split("\n") or [""])[0][:80]
        kinds[k] = kinds.get(k, 0) + 1
    return kinds

class Soak:
    def __init__(self, st, seconds):
        self.st = st
        self.seconds = seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = []  # (db, mailbox, id, sha256 of the body)
        self.n = dict(deliver_refused=0, deliver_failed=0, backups=0, backup_failures=0,
                      db_list_calls=0, db_list_refused=0, flood_conns=0, flood_refused=0,
                      half_frames=0, huge=0, huge_refused=0, garbage=0, other_uid=0,
                      other_uid_refused=0)
        self.db_list_max = 0.0
        self.errors = []

    def ombra(self, *args, **kw):
        """The CLI; a call that does not return in time counts as a failure (the store hung)."""
        try:
            return self.st.ombra(*args, check=False, **kw)
        except subprocess.TimeoutExpired as e:
            return Result(-9, "", f"timed out after {e.timeout} s", ["ombra"] + list(args))

    def count(self, key, k=1):
        with self.lock:
            self.n[key] += k

    # ---- legitimate work
    def deliverer(self, seed):
        rnd = random.Random(seed)
        i = 0
        while not self.stop.is_set():
            db = rnd.choice(DBS)
            box = f"user{rnd.randrange(8)}"
            body = (f"Subject: soak {seed}-{i}\n\n" + "x" * rnd.randrange(10, 20000)).encode()
            i += 1
            r = self.ombra("mail", "deliver", db, box, input=body, timeout=60)
            if r.rc == 0:
                mid = int(r.out.split()[-1])
                with self.lock:
                    self.acked.append((db, box, mid, hashlib.sha256(body).hexdigest()))
            elif "-1101" in r.err:
                self.count("deliver_refused")  # a temporary refusal: an MTA retries
                time.sleep(0.05)
            else:
                self.count("deliver_failed")
                self.errors.append(r.describe())

    def backups(self, repo):
        kinds = {db: "full" for db in DBS}
        while not self.stop.is_set():
            for db in DBS:
                if self.stop.is_set():
                    break
                r = self.ombra("backup", "--repo", repo, "--type", kinds[db], db, timeout=300)
                if r.rc == 0:
                    self.count("backups")
                    kinds[db] = "incremental"
                else:
                    self.count("backup_failures")
                    self.errors.append(r.describe())
                    time.sleep(0.2)

    def prober(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            while True:  # until it answers: how long a user waits for the store
                r = self.ombra("db", "list", timeout=60)
                self.count("db_list_calls")
                if r.rc == 0 or time.monotonic() - t0 > 30:
                    break
                self.count("db_list_refused")
                time.sleep(0.1)
            took = time.monotonic() - t0
            with self.lock:
                self.db_list_max = max(self.db_list_max, took)
            if r.rc != 0:
                self.errors.append(r.describe())
            time.sleep(0.5)

    # ---- attackers
    def connect(self, timeout=2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self.st.sock))
        return s

    def flood(self):
        """Connections until the store refuses one; held two seconds; again."""
        while not self.stop.is_set():
            held = []
            try:
                for _ in range(400):
                    try:
                        s = self.connect(timeout=1)
                    except OSError:
                        break
                    held.append(s)
                    self.count("flood_conns")
                    s.setblocking(False)
                    try:
                        if s.recv(1, socket.MSG_PEEK):
                            self.count("flood_refused")  # told: at most N connections
                            break
                    except BlockingIOError:
                        pass
                self.stop.wait(2)
            finally:
                for s in held:
                    s.close()

    def holding(self, keep, pause, one):
        """Opens connections with one(socket) (which may raise OSError) while the soak runs,
        holding the last `keep` of them open, one every `pause` seconds."""
        held = []
        while not self.stop.is_set():
            try:
                s = self.connect()
                one(s)
                held.append(s)
            except OSError:
                pass
            if len(held) > keep:
                held.pop(0).close()
            self.stop.wait(pause)
        for s in held:
            s.close()

    def half_frames(self):
        rnd = random.Random(7)

        def one(s):
            payload = frame({"op": "db.list", "pad": "p" * rnd.randrange(100)})
            s.sendall(payload[:rnd.randrange(1, len(payload) - 1)])
            self.count("half_frames")
        self.holding(20, 0.2, one)

    def huge(self):
        def one(s):
            s.sendall(frame({"op": "mail.deliver", "db": "sales", "mailbox": "evil",
                             "data": 256 << 20}) + struct.pack("<I", 256 << 20) + b"z" * 4096)
            s.setblocking(False)
            time.sleep(0.05)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    self.count("huge_refused")
            except BlockingIOError:
                pass
            self.count("huge")
        self.holding(8, 0.3, one)

    def garbage(self):
        rnd = random.Random(11)
        cases = [lambda: rnd.randbytes(rnd.randrange(1, 200)),
                 lambda: frame(b"{" * rnd.randrange(1, 5000)),
                 lambda: frame(b'{"op": "mail.deliver", "data": -1}'),
                 lambda: frame({"op": "db.list", "data": 10}) + frame(b"abc"),
                 lambda: struct.pack("<I", 0xFFFFFFF0),
                 lambda: frame(rnd.randbytes(300))]
        while not self.stop.is_set():
            try:
                s = self.connect()
                s.sendall(rnd.choice(cases)())
                s.settimeout(2)
                try:
                    s.recv(65536)
                except OSError:
                    pass
                s.close()
                self.count("garbage")
            except OSError:
                pass
            self.stop.wait(0.05)

    def other_uid(self, cli):
        """A client of another uid (nobody), refused by the daemon's SO_PEERCRED check."""
        while not self.stop.is_set():
            p = subprocess.run(["setpriv", f"--reuid={NOBODY}", "--regid=nogroup",
                                "--clear-groups", cli, "db", "list"], env=self.st.env,
                               capture_output=True, text=True, timeout=30)
            self.count("other_uid")
            if p.returncode != 0 and ("-1032" in p.stderr or "-1101" in p.stderr):
                self.count("other_uid_refused")
            elif p.returncode == 0:
                self.errors.append("a client of uid 65534 was served:\n" + p.stdout)
            self.stop.wait(0.3)


def read_back(st, acked):
    """The acknowledged deliveries that do not read back as delivered (one connection)."""
    lost = []
    s = st.connect(timeout=30)
    try:
        for db, box, mid, digest in acked:
            s.sendall(frame({"op": "mail.get", "db": db, "mailbox": box, "id": mid}))
            rep = st.read_reply(s)
            body = b""
            if rep and rep.get("ok") and rep.get("data"):
                n = rep["data"]
                h = s.recv(4, socket.MSG_WAITALL)
                assert struct.unpack("<I", h)[0] == n
                while len(body) < n:
                    body += s.recv(n - len(body))
            if not (rep and rep.get("ok")) or hashlib.sha256(body).hexdigest() != digest:
                lost.append((db, box, mid, rep))
    finally:
        s.close()
    return lost


def test_soak_under_hostile_load(build_dir):
    seconds = float(os.environ.get("OMBRA_SOAK_SECONDS", "30"))
    tmp = tempfile.mkdtemp(prefix="ombra-soak-", dir="/tmp")
    # A descriptor limit the flood reaches (128 connections), quicker timeouts than the
    # defaults so that the attackers' places turn over within the run, and a receive budget
    # the huge announcements run into.
    st = HostileStore(build_dir, tmp, args=("--frame-timeout-ms", "3000", "--idle-timeout-ms",
                                            "10000", "--max-receive-mb", "128"), nofile=256)
    vlog = open(os.path.join(tmp, "vssd.log"), "w")
    vssd = None
    failed = True
    try:
        st.start()
        vssd = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground",
                                 "--event-limit-ms", "20000"],
                                env=st.env, stdout=vlog, stderr=subprocess.STDOUT)
        assert st.writer_registered(), "the store's writer did not register:\n" + st.stderr()
        for db in DBS:
            st.ombra("db", "new", db)
        repo = os.path.join(tmp, "repo")
        st.ombra("repo", "init", repo)
        # Another uid reaches the socket, so that the daemon's own check is what refuses it.
        os.chmod(tmp, 0o755)
        os.chmod(st.run_dir, 0o755)
        os.chmod(st.sock, 0o666)

        soak = Soak(st, seconds)
        cli = str(st.cli)
        jobs = [(soak.deliverer, (1,)), (soak.deliverer, (2,)), (soak.backups, (repo,)),
                (soak.prober, ()), (soak.flood, ()), (soak.half_frames, ()), (soak.huge, ()),
                (soak.garbage, ())]
        if os.geteuid() == 0 and shutil.which("setpriv"):
            jobs.append((soak.other_uid, (cli,)))
        died = []

        def run(fn, args):  # a worker that dies would leave its figures short in silence
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 (any failure is the test's)
                died.append(f"{fn.__name__}: {e!r}")
                soak.stop.set()
        threads = [threading.Thread(target=run, args=j) for j in jobs]
        pid = st.proc.pid
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        log0 = len(st.log_text())
        for t in threads:
            t.daemon = True
            t.start()
        time.sleep(seconds)
        soak.stop.set()
        cpu = cpu_seconds(pid) - cpu0
        wall = time.monotonic() - t0
        for t in threads:
            t.join(300)
        hwm = status_kib(pid, "VmHWM") >> 10
        log_bytes = len(st.log_text()) - log0

        # Every acknowledged delivery, after a clean restart.
        st.proc.terminate()
        try:
            rc = st.proc.wait(20)
        except subprocess.TimeoutExpired:
            g = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 12"],
                               capture_output=True,
                               text=True, timeout=60) if shutil.which("gdb") else None
            stacks = (g.stdout + g.stderr) if g else ""
            with open(os.path.join(tmp, "stacks.txt"), "w") as f:
                f.write(stacks)
            pytest.fail(f"the store did not stop 20 s after SIGTERM:\n{stacks[-12000:]}\n"
                        f"{st.stderr()}")
        assert rc == 0, "the store did not stop cleanly after the soak:\n" + st.stderr()
        st.start()
        lost = read_back(st, soak.acked)
        fig = dict(seconds=round(wall, 1), delivered=len(soak.acked),
                   read_back=len(soak.acked) - len(lost), lost=len(lost),
                   store_peak_mib=hwm, store_cpu_pct=round(100 * cpu / wall, 1),
                   db_list_max_s=round(soak.db_list_max, 2), log_bytes=log_bytes, **soak.n,
                   why_failed=failure_kinds(soak.errors))
        line = "soak: " + " ".join(f"{k}={v}" for k, v in fig.items())
        print(line)
        if os.environ.get("OMBRA_SOAK_REPORT"):
            with open(os.environ["OMBRA_SOAK_REPORT"], "w") as f:
                json.dump(fig, f, indent=1)
        assert not died, f"soak workers died: {died}\n{line}"
        assert not lost, f"{len(lost)} acknowledged deliveries lost: {lost[:5]}\n{line}"
        assert soak.acked, f"no delivery was acknowledged during the soak\n{line}"
        assert soak.n["deliver_failed"] == 0, "\n".join(soak.errors[:3]) + "\n" + line
        assert fig["backups"] >= 1, "no backup completed:\n" + "\n".join(soak.errors[:3])
        # A busy store's refusal is retried by the backup: the flood fails no backup.
        assert soak.n["backup_failures"] == 0, f"{fig['why_failed']}\n" + "\n".join(soak.errors[:3])
        assert soak.db_list_max < 30, f"db list waited {soak.db_list_max:.1f} s\n{line}"
        assert hwm < 1024, f"the store's peak memory was {hwm} MiB\n{line}"
        assert log_bytes < 2 << 20, f"{log_bytes} bytes of log in {wall:.0f} s\n{line}"
        assert not [e for e in soak.errors if "65534 was served" in e], soak.errors
        failed = False
    finally:
        if vssd:
            vssd.terminate()
            vssd.wait(20)
        vlog.close()
        if st.proc and st.proc.poll() is None:
            st.proc.terminate()
            try:
                st.proc.wait(20)
            except subprocess.TimeoutExpired:
                st.proc.kill()
                st.proc.wait()
        if failed:
            print(f"kept {tmp}\n{st.stderr()}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
