"""The DAG the benchmarks share: etcd and three servers on 127.0.0.1 (each server's ombra-store,
ombra-vssd and ombra-repld with its own home, runtime directory and replication port), the
clients that deliver mail to a store, and the helpers around them (percentiles, waiting, the
copies' status, draining and verifying a database's copies). Used by bench/replication.py and
bench/passive_backup.py."""
import glob
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

from benchlib import PG_BIN, TOOLS, need_build

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
GEN_MB = (1 << 20) / 1e6  # a log generation is 1 MiB
SAMPLE_S = 0.2
SERVERS = ("mbx1", "mbx2", "mbx3")


class Failed(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pct(v, p):
    """The p-th percentile (nearest rank) of v, or None."""
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]


def need_dag(build, script):
    """Exits with one line when the build lacks a program the DAG runs, or etcd is missing."""
    need_build(build, script, TOOLS + ("src/daemons/ombra-repld",))
    if not os.access(ETCD, os.X_OK):
        raise SystemExit(f"{script}: no {ETCD} (apt-get install etcd-server; scripts/install-deps)")


def wait_until(what, pred, seconds, procs=()):
    deadline = time.monotonic() + seconds
    while True:
        if pred():
            return
        for p in procs:
            if p.poll() is not None:
                raise Failed(f"waiting for {what}: {p.args[0]} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise Failed(f"waiting for {what}: not there after {seconds} s")
        time.sleep(0.1)


def max_gen(logs, base):
    """The newest numbered (closed) generation in a log folder, 0 when none."""
    try:
        names = os.listdir(logs)
    except OSError:
        return 0
    gen = re.compile(rf"^{base}([0-9A-F]{{8}})\.log$")
    return max((int(m.group(1), 16) for m in map(gen.match, names) if m), default=0)


# ---- the Ombra side ----------------------------------------------------------------------------


class Server:
    def __init__(self, dag, name):
        self.dag = dag
        self.name = name
        self.dir = f"{dag.tmp}/{name}"
        os.makedirs(f"{self.dir}/home")
        os.makedirs(f"{self.dir}/run")
        self.env = dict(os.environ, OMBRA_HOME=f"{self.dir}/home", OMBRA_RUNTIME_DIR=f"{self.dir}/run",
                        OMBRA_ETCD=dag.etcd_url)
        self.port = free_port()
        self.procs = {}

    def ombra(self, *args, check=True, timeout=300):
        p = subprocess.run([self.dag.cli, *map(str, args)], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode:
            raise Failed(f"{self.name}$ ombra {' '.join(map(str, args))}: exit {p.returncode}: "
                         f"{(p.stderr or p.stdout).strip()}")
        return p.stdout

    def ok(self, *args):
        return subprocess.run([self.dag.cli, *map(str, args)], env=self.env, capture_output=True).returncode == 0

    def json(self, *args):
        return json.loads(self.ombra(*args, "--json"))

    def start(self, daemon, *args):
        log = open(f"{self.dir}/{daemon}.log", "wb")
        self.procs[daemon] = subprocess.Popen([f"{self.dag.build}/src/daemons/ombra-{daemon}", "--foreground",
                                               *args], env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
        log.close()
        return self.procs[daemon]

    def db_dir(self, db):
        """The database's folder here: the active's under dbs/<name>, a passive copy's under
        copies/<db id>."""
        own = f"{self.dir}/home/dbs/{db}"
        if os.path.isdir(own):
            return own
        for d in glob.glob(f"{self.dir}/home/copies/*"):
            if os.path.exists(f"{d}/{db}.edb"):
                return d
        return own

    def closed(self, db):
        """The newest closed generation of db in this server's folder (active or passive)."""
        return max_gen(f"{self.db_dir(db)}/logs", self.dag.base[db])


class Dag:
    """etcd and three servers on 127.0.0.1, each with its own home and runtime directories and
    its own replication port; mbx1 holds the DAG's authority and every active copy."""

    def __init__(self, build, tmp):
        self.build = build
        self.cli = f"{build}/src/cli/ombra"
        self.tmp = tmp
        self.etcd = None
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self.servers = []
        self.base = {}  # database -> its log base name (E00, E01, ...: one per database)

    def new_db(self, db):
        a = self.servers[0]
        a.ombra("db", "new", db)
        info = a.json("db", "show", db)
        self.base[db] = info.get("db", info)["base"]

    def start(self):
        peer = f"http://127.0.0.1:{free_port()}"
        log = open(f"{self.tmp}/etcd.log", "wb")
        self.etcd = subprocess.Popen(
            [ETCD, "--name", "bench", "--data-dir", f"{self.tmp}/etcd", "--listen-client-urls", self.etcd_url,
             "--advertise-client-urls", self.etcd_url, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"bench={peer}", "--logger", "zap"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def healthy():
            try:
                return b'"true"' in urllib.request.urlopen(f"{self.etcd_url}/health", timeout=1).read()
            except OSError:
                return False
        wait_until("etcd", healthy, 20, [self.etcd])
        self.servers = [Server(self, n) for n in SERVERS]
        for s in self.servers:
            p = s.start("store", "--server", s.name)
            wait_until(f"ombra-store of {s.name}", lambda: s.ok("db", "list"), 15, [p])
            p = s.start("vssd")

            def registered():
                out = s.ombra("vss", "writers", "--json", check=False)
                return '"connected": true' in out or '"connected":true' in out
            wait_until(f"the writer of {s.name} in ombra-vssd", registered, 15, [p])
        a = self.servers[0]
        a.ombra("dag", "init", "bench")
        for s in self.servers:
            out = [] if s is a else ["--out", f"{s.dir}/home/dag"]
            a.ombra("dag", "add-server", s.name, "--address", f"127.0.0.1:{s.port}", *out)
        for s in self.servers:
            p = s.start("repld", "--server", s.name, "--listen", f"127.0.0.1:{s.port}")

            def listens(s=s):  # its log says so (a probe connection would be logged as refused)
                with open(f"{s.dir}/repld.log", errors="replace") as f:
                    return ": replication on 127.0.0.1:" in f.read()
            wait_until(f"ombra-repld of {s.name}", listens, 15, [p])
        wait_until("every server alive in the DAG",
                   lambda: a.ombra("dag", "status").count(" alive\n") == len(self.servers), 15)

    def stop(self):
        for d in ("repld", "vssd", "store"):
            for s in self.servers:
                p = s.procs.get(d)
                if p and p.poll() is None:
                    p.terminate()
            for s in self.servers:
                p = s.procs.get(d)
                if p:
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
        if self.etcd and self.etcd.poll() is None:
            self.etcd.terminate()
            self.etcd.wait(30)

    def tails(self):
        out = []
        for s in self.servers:
            for d in ("store", "vssd", "repld"):
                try:
                    with open(f"{s.dir}/{d}.log", errors="replace") as f:
                        t = f.read()[-1500:]
                except OSError:
                    continue
                if t.strip():
                    out.append(f"--- ombra-{d} of {s.name}\n{t}")
        return "\n".join(out)


def cpu_seconds(pid):
    """User + system CPU seconds process pid has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            w = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(w[11]) + int(w[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(dag):
    """CPU seconds so far of every daemon, of etcd, and of this process (the clients) with its
    finished children (the CLI calls that sample)."""
    c = {f"{s.name} {d}": cpu_seconds(p.pid) for s in dag.servers for d, p in s.procs.items()}
    c["etcd"] = cpu_seconds(dag.etcd.pid)
    t = os.times()
    c["bench clients"] = t.user + t.system
    c["bench CLI calls"] = t.children_user + t.children_system
    return c


def etcd_counters(dag):
    """etcd's puts and WAL fsyncs so far (its /metrics): the copies publish their status there."""
    try:
        text = urllib.request.urlopen(f"{dag.etcd_url}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for key, name in (("puts", "etcd_mvcc_put_total"), ("wal_fsyncs", "etcd_disk_wal_fsync_duration_seconds_count")):
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        if m:
            out[key] = float(m.group(1))
    return out


def frame(b):
    return struct.pack("<I", len(b)) + b


class Deliverer(threading.Thread):
    """One client of the store: a connection kept open, one durable delivery after another;
    the latency of each (request sent to reply read) and when it was sent (time.monotonic()).
    interval > 0 paces it: a delivery starts every interval seconds (the next at once when one
    took longer), mail arriving steadily rather than as fast as the store takes it."""

    def __init__(self, sock, db, bodies, k, stop, interval=0.0):
        super().__init__(daemon=True)
        self.sock, self.db, self.bodies, self.k, self.stop = sock, db, bodies, k, stop
        self.interval = interval
        self.lat = []
        self.sent = []
        self.error = None

    def run(self):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(60)
            s.connect(self.sock)
            i = 0
            while not self.stop.is_set():
                body = self.bodies[(self.k * 7 + i) % len(self.bodies)]
                req = json.dumps({"op": "mail.deliver", "db": self.db, "mailbox": f"user{(self.k * 131 + i) % 200:05d}",
                                  "data": len(body)}).encode()
                t0 = time.monotonic()
                s.sendall(frame(req) + frame(body))
                rep = self.reply(s)
                self.lat.append(time.monotonic() - t0)
                self.sent.append(t0)
                if not rep.get("ok") or "id" not in rep:
                    raise Failed(f"a delivery to {self.db} was refused: {rep}")
                i += 1
                if self.interval > 0:
                    self.stop.wait(max(0.0, t0 + self.interval - time.monotonic()))
            s.close()
        except Exception as e:  # reported by the caller
            self.error = e

    @staticmethod
    def reply(s):
        def exactly(n):
            b = b""
            while len(b) < n:
                c = s.recv(n - len(b))
                if not c:
                    raise Failed("the store closed the connection")
                b += c
            return b
        (n,) = struct.unpack("<I", exactly(4))
        return json.loads(exactly(n))


def copy_of(act, db, server):
    return next((c for c in act.json("db", "copy", "status", db)["copies"] if c["server"] == server), None)


def drain(dag, db, copies, seconds=300):
    """Closes the active's generation (dismount, mount: the next mount starts a new one) and waits
    until every passive has replayed all of it. Returns the last generation closed."""
    act = dag.servers[0]
    act.ombra("db", "dismount", db)
    act.ombra("db", "mount", db)
    closed = act.json("db", "show", db)
    closed = closed.get("db", closed)["gen_current"] - 1
    for s in dag.servers[1:1 + copies]:
        def ok():
            c = copy_of(act, db, s.name)
            return (c["state"] == "Healthy" and c["copy_queue"] == 0 and c["replay_queue"] == 0
                    and c["replayed"] >= closed)
        wait_until(f"the copy of {db} on {s.name} replaying through generation {closed}", ok, seconds)
    return closed


def verify(dag, db, copies):
    """The active's mail digest against each passive's (suspended, `ombra dbutil digest`,
    resumed). Raises when one differs."""
    act = dag.servers[0]
    want = act.ombra("mail", "digest", db).strip()
    got = {}
    for s in dag.servers[1:1 + copies]:
        act.ombra("db", "copy", "suspend", db, "--server", s.name)
        wait_until(f"the copy of {db} on {s.name} suspended",
                   lambda: copy_of(act, db, s.name)["state"] == "Suspended", 30)
        got[s.name] = s.ombra("dbutil", "digest", f"{s.db_dir(db)}/{db}.edb", "--logs",
                              f"{s.db_dir(db)}/logs", "--base", dag.base[db]).strip()
        act.ombra("db", "copy", "resume", db, "--server", s.name)
        if got[s.name] != want:
            raise Failed(f"the copy of {db} on {s.name} differs from the active: digest {got[s.name]}, "
                         f"active {want}")
    return want, got


def on_term(*_):
    raise KeyboardInterrupt


# ---- the PostgreSQL side ----------------------------------------------------------------------


def pg_tmp(prefix):
    """A temporary directory the postgres user owns."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(tmp, 0o755)
    shutil.chown(tmp, "postgres")
    return tmp


class PgBase:
    """PostgreSQL 15 clusters in a temp directory, run as the postgres user on Unix sockets only:
    a primary's port and a standby's, commands as postgres, SQL, pg_ctl."""
    RUN_TIMEOUT = 600  # seconds a command may take
    CTL_TIMEOUT = 120  # pg_ctl -t

    def __init__(self, tmp, a):
        self.tmp, self.a = tmp, a
        self.pport, self.sport = free_port(), free_port()

    def run(self, *argv, check=True, timeout=None):
        p = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], capture_output=True, text=True,
                           timeout=timeout or self.RUN_TIMEOUT, cwd=self.tmp)
        if check and p.returncode:
            raise Failed(f"$ {' '.join(map(str, argv))}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
        return p.stdout

    def sql(self, q, port=None):
        return self.run(f"{PG_BIN}/psql", "-h", self.tmp, "-p", port or self.pport, "-qAtX", "-v", "ON_ERROR_STOP=1",
                        "-c", q, "postgres").strip()

    def ctl(self, data, action, port):
        self.run(f"{PG_BIN}/pg_ctl", "-D", f"{self.tmp}/{data}", "-l", f"{self.tmp}/{data}.log", "-w", "-t",
                 self.CTL_TIMEOUT, "-o", f"-p {port} -k {self.tmp}", action)

    def pgbench(self, tag, *args):
        """Starts pgbench against the primary (--threads clients and jobs, these arguments, a log
        line per transaction into a new folder); (the process, the folder)."""
        logs = f"{self.tmp}/pgb-{tag}{time.monotonic_ns()}"
        os.makedirs(logs)
        shutil.chown(logs, "postgres")
        p = subprocess.Popen(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pgbench", "-n", "-h", self.tmp, "-p",
                              str(self.pport), "-c", str(self.a.threads), "-j", str(self.a.threads), *args, "-l",
                              "--log-prefix", f"{logs}/tx", "postgres"],
                             cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return p, logs

    def stop(self):
        for d, port in (("standby", self.sport), ("primary", self.pport)):
            if os.path.exists(f"{self.tmp}/{d}/postmaster.pid"):
                self.run(f"{PG_BIN}/pg_ctl", "-D", f"{self.tmp}/{d}", "-m", "fast", "-w", "stop", check=False)


def pgbench_lines(logs):
    """The words of each line of pgbench's transaction logs in the folder, which is then removed."""
    out = []
    for fn in os.listdir(logs):
        with open(f"{logs}/{fn}") as f:
            out.extend(line.split() for line in f)
    shutil.rmtree(logs, ignore_errors=True)
    return out
