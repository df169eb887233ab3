"""The DAG test bed: up to four Ombra servers on one machine, each in its own network namespace,
and a real etcd (Debian's etcd-server) on the bridge between them. The DAG tests are written on
it; tests/system/dag/conftest.py turns it into the fixtures `dag_bed` and `dag`.

Layout of one bed (R: six random hex digits, unique per bed, so pytest-xdist workers never meet):

    root namespace                                 namespace om-R-a        namespace om-R-b ...
    bridge omb-R  10.X.Y.254/24 ---+-- omv-R-a ===== eth0 10.X.Y.1/24
       |                           +-- omv-R-b ================================= eth0 10.X.Y.2/24
    etcd member(s) on 10.X.Y.254 (.253, .252 for three members), client port 2379

- Each server (a, b, c, d) has its own OMBRA_HOME and OMBRA_RUNTIME_DIR under the bed's temp
  directory (/tmp/omd-*/<name>/{home,run}) and runs ombra-store --server NAME and ombra-vssd
  inside its namespace (`ip netns exec`); s.ombra(...) runs the CLI there with its environment.
- X.Y come from R; the bed takes the first /24 that no address or route of the machine uses,
  under a lock file, so two beds never share a subnet.
- A link set down (s.link_down()) is the root-side end of the server's veth: its packets go
  nowhere, to the other servers and to etcd alike (a connect times out; nothing is refused).
- The temp directory is bind-mounted on itself as a shared mount before any daemon starts:
  `ip netns exec` gives each process a slave copy of the mount table, so a small log disk that
  the test mounts later (s.small_log_disk) is seen by daemons already running.
- Teardown (Bed.close) SIGCONTs and stops every daemon (a store that does not exit 0 on SIGTERM
  fails the test), kills whatever else runs in the namespaces, stops etcd, unmounts the loop
  disks and the temp directory, deletes the namespaces, veths and bridge, then checks that none
  of them is left (Bed.leftovers). It runs however the test ended.
"""
import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import pathlib
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

# tests/system/dag is a package (dag.conftest, dag.dagbed): tests/system/conftest.py stays the
# module `conftest`, which every test file there imports from (two plain conftest.py files would
# take turns in sys.modules["conftest"]).
from conftest import Result, Store, process_stopped

SERVER_NAMES = "abcd"
MAX_SERVERS = len(SERVER_NAMES)
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
REPLD_PORT = 7100  # every server's ombra-repld listens on its own address, this port
ETCD_READY_SECONDS = 20
DAEMON_READY_SECONDS = 30  # a deadline, not a wait: a loaded machine may need it
DAEMON_STOP_SECONDS = 20
LOCK_FILE = "/tmp/ombra-dagbed.lock"


def _ip_binary():
    return shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip")
                                       if os.access(p, os.X_OK)), None)


IP = _ip_binary()
ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def skip_reason():
    """Why the bed cannot be built on this machine, or None."""
    if os.geteuid() != 0:
        return ("the DAG test bed needs root: it makes network namespaces, a bridge, veth "
                "pairs and loop mounts")
    if IP is None:
        return "the DAG test bed needs iproute2's `ip` (apt-get install iproute2)"
    if not os.access(ETCD, os.X_OK):
        return "the DAG test bed needs etcd (apt-get install etcd-server: /usr/bin/etcd)"
    return None


def run(*argv, check=True, timeout=30):
    """Runs a setup command (ip, mount, mkfs ...); a failure raises with its stderr."""
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"$ {' '.join(map(str, argv))}\nexit {p.returncode}\n{p.stderr}")
    return p


def _tail(path, limit=4000):
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def listening(pid, port):
    """True when the process's network namespace has a TCP socket listening on port (read from
    /proc/PID/net/tcp*, which shows the namespace of PID: no need to enter it)."""
    for f in ("tcp", "tcp6"):
        try:
            lines = pathlib.Path(f"/proc/{pid}/net/{f}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def alive(p):
    return p is not None and p.poll() is None


def end_process(p, seconds=DAEMON_STOP_SECONDS):
    """SIGCONT (a stopped daemon cannot act on SIGTERM), SIGTERM, then SIGKILL after seconds.
    Returns (exit code, whether it had to be killed)."""
    if not alive(p):
        return (None if p is None else p.returncode), False
    p.send_signal(signal.SIGCONT)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(seconds)
        return p.returncode, False
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return p.returncode, True


class DagResult(Result):
    """One CLI call: the system tests' Result (rc, out, err, describe()) that also answers to
    CompletedProcess's names."""

    returncode = property(lambda self: self[0])
    stdout = property(lambda self: self[1])
    stderr = property(lambda self: self[2])


# The probes that run inside a namespace (python -c): a TCP connect, an HTTP GET, a listener.
_PROBE_TCP = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    try:
        got = s.recv(256).decode(errors="replace")
    except socket.timeout:  # a server that speaks second (TLS): connected all the same
        got = ""
    print("connected", got)
except OSError as e:
    print("failed", type(e).__name__, e)
"""
_PROBE_HTTP = """
import sys, urllib.request
try:
    print("ok", urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())
except Exception as e:
    print("failed", type(e).__name__, e)
"""
_LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[3].encode()); c.close()
"""


class Server(Store):
    """One server of the bed: the system tests' Store (deliver, digest, json, db_show, ...) with
    its daemons and its CLI inside network namespace `ns`. Daemons by name: "store", "vssd",
    "repld"."""

    def __init__(self, bed, name, index):
        self.bed = bed
        self.dir = bed.tmp / name
        self.dir.mkdir()
        super().__init__(bed.build_dir, self.dir, server=name)
        self.ns = f"om-{bed.rand}-{name}"
        self.veth = f"omv-{bed.rand}-{name}"  # root-side end; eth0 inside
        self.addr = str(bed.net.network_address + index + 1)
        self.real_cli = self.cli
        self.cli = IP  # Store.ombra runs [self.cli] + args: ip netns exec NS ombra ...
        self.vssd_bin = bed.build_dir / "src/daemons/ombra-vssd"
        self.repld_bin = bed.build_dir / "src/daemons/ombra-repld"
        # Store.start runs self.daemon; a script that execs ip netns exec, which execs the daemon:
        # the Popen's pid is the daemon's own, for signals.
        real_store = self.daemon
        self.daemon = self.dir / "ombra-store-in-ns"
        self.daemon.write_text(f'#!/bin/sh\nexec {IP} netns exec {self.ns} {real_store} "$@"\n')
        self.daemon.chmod(0o755)
        self.vssd = None
        self.repld = None
        self.repld_kw = None
        self.helpers = []  # listeners and the like, ended at teardown
        self.daemon_logs = []  # (label, path) of every vssd and repld run
        self.disks = []  # (image, mount point)

    # -- network
    def make_links(self):
        bed = self.bed
        run(IP, "netns", "add", self.ns)
        run(IP, "-n", self.ns, "link", "set", "lo", "up")
        run(IP, "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        run(IP, "link", "set", self.veth, "master", bed.bridge, "up")
        run(IP, "-n", self.ns, "addr", "add", f"{self.addr}/{bed.net.prefixlen}", "dev", "eth0")
        run(IP, "-n", self.ns, "link", "set", "eth0", "up")

    def link_down(self):
        """Cuts this server off: from the other servers and from etcd alike."""
        run(IP, "link", "set", self.veth, "down")

    def link_up(self):
        run(IP, "link", "set", self.veth, "up")

    def in_ns(self, *argv):
        return [IP, "netns", "exec", self.ns] + [str(a) for a in argv]

    def owns(self, pid):
        """True when process pid lives in this server's network namespace."""
        return (os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{self.ns}").st_ino)

    def tcp(self, host, port, timeout=1.0):
        """Connects from this namespace to host:port: the first bytes the peer sent (str), or
        None when the connect failed or timed out."""
        p = subprocess.run(self.in_ns(sys.executable, "-c", _PROBE_TCP, host, port, timeout),
                           capture_output=True, text=True, timeout=timeout + 20)
        out = p.stdout.strip()
        return out[len("connected "):] if out.startswith("connected") else None

    def wait_tcp(self, host, port, seconds=10):
        """tcp() again until it connects (a healed link takes a moment: a SYN or an ARP request
        lost while it was down is retried): its result, or None after seconds."""
        deadline = time.monotonic() + seconds
        while True:
            got = self.tcp(host, port)
            if got is not None or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def http_get(self, url, timeout=1.0):
        """GET url from this namespace: the body, or None when it could not be fetched."""
        p = subprocess.run(self.in_ns(sys.executable, "-c", _PROBE_HTTP, url, timeout),
                           capture_output=True, text=True, timeout=timeout + 20)
        out = p.stdout.strip()
        return out[len("ok "):] if out.startswith("ok ") else None

    def reaches_etcd(self, timeout=1.0):
        """True when etcd's /health answers true to a GET from this namespace (one try)."""
        body = self.http_get(f"{self.bed.etcd_urls[0]}/health", timeout)
        return body is not None and json.loads(body).get("health") == "true"

    def wait_reaches_etcd(self, seconds=10):
        """reaches_etcd() again until true (after a healed link: see wait_tcp), or False."""
        deadline = time.monotonic() + seconds
        while not self.reaches_etcd():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def listen(self, port, greeting=None):
        """A TCP listener on this server's address that greets every connection with `greeting`
        (default "hello from NAME") and closes it; ended at teardown."""
        greeting = greeting or f"hello from {self.server}"
        p = subprocess.Popen(self.in_ns(sys.executable, "-c", _LISTENER, self.addr, port, greeting),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.helpers.append(p)
        self._wait_listening(p, port, f"listener on {self.addr}:{port}")
        return p

    def _wait_listening(self, p, port, what, log=None):
        deadline = time.monotonic() + DAEMON_READY_SECONDS
        while not listening(p.pid, port):
            if not alive(p):
                pytest.fail(f"{what} exited with {p.returncode} before listening"
                            + (f":\n{_tail(log)}" if log else ""))
            if time.monotonic() > deadline:
                pytest.fail(f"{what} does not listen {DAEMON_READY_SECONDS} s after start"
                            + (f":\n{_tail(log)}" if log else ""))
            time.sleep(0.02)

    # -- the CLI
    def ombra(self, *args, user=None, **kw):
        """Runs `ombra ARGS` inside the namespace with this server's OMBRA_HOME and
        OMBRA_RUNTIME_DIR: a DagResult (rc/out/err, also returncode/stdout/stderr). Keywords as
        Store.ombra: input, check (a failure fails the test, showing the daemons' logs), binary,
        timeout, env, user (run as that user inside the namespace)."""
        pre = ["netns", "exec", self.ns]
        if user:
            pre += ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"]
        r = super().ombra(*pre, self.real_cli, *args, **kw)
        return DagResult(r.rc, r.out, r.err, r.argv)

    # -- daemons
    def start_all(self):
        self.start()
        self.start_vssd()

    def start_vssd(self):
        assert not alive(self.vssd), f"ombra-vssd of {self.server} already runs"
        log = self.dir / f"vssd-{len(self.daemon_logs) + 1}.log"
        self.daemon_logs.append(("ombra-vssd", log))
        with open(log, "wb") as f:
            self.vssd = subprocess.Popen(
                self.in_ns(self.vssd_bin, "--foreground", "--event-limit-ms", "20000"),
                env=self.env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        if alive(self.proc) and not self.writer_registered():
            pytest.fail(f"the store's writer on {self.server} did not register with ombra-vssd:\n"
                        + self.stderr())
        return self.vssd

    def start_repld(self, port=REPLD_PORT, etcd=None, args=()):
        """ombra-repld --foreground --server NAME --listen ADDR:PORT --etcd URL [args] inside the
        namespace; waits until it listens on PORT. Skips the test while it is not built."""
        if not os.access(self.repld_bin, os.X_OK):
            pytest.skip("ombra-repld not built yet")
        assert not alive(self.repld), f"ombra-repld of {self.server} already runs"
        self.repld_kw = dict(port=port, etcd=etcd, args=tuple(args))
        log = self.dir / f"repld-{len(self.daemon_logs) + 1}.log"
        self.daemon_logs.append(("ombra-repld", log))
        with open(log, "wb") as f:
            self.repld = subprocess.Popen(
                self.in_ns(self.repld_bin, "--foreground", "--server", self.server, "--listen",
                           f"{self.addr}:{port}", "--etcd", etcd or self.bed.etcd_url, *args),
                env=self.env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        self._wait_listening(self.repld, port, f"ombra-repld of {self.server}", log)
        return self.repld

    def process(self, proc):
        """The Popen of daemon `proc` ("store", "vssd", "repld"), or proc itself."""
        if not isinstance(proc, str):
            return proc
        return {"store": self.proc, "vssd": self.vssd, "repld": self.repld}[proc]

    def daemons(self):
        return [p for p in (self.proc, self.vssd, self.repld) if p is not None]

    def kill9(self, proc="store"):
        """SIGKILL to one daemon; returns its exit status (-9)."""
        p = self.process(proc)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        return p.returncode

    def kill9_all(self):
        for p in self.daemons():
            if alive(p):
                p.kill()
                p.wait(10)

    def stop(self):
        """SIGSTOP to every running daemon of this server; returns once all are stopped."""
        live = [p for p in self.daemons() if alive(p)]
        for p in live:
            p.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not all(process_stopped(p.pid) for p in live):
            assert time.monotonic() < deadline, "a daemon did not stop on SIGSTOP"
            time.sleep(0.01)

    @contextlib.contextmanager
    def paused(self, proc):
        """One daemon of this server ("store", "repld") SIGSTOPped for the with block, then
        SIGCONTinued whatever the block did."""
        p = self.process(proc)
        p.send_signal(signal.SIGSTOP)
        try:
            yield p
        finally:
            p.send_signal(signal.SIGCONT)

    def cont(self):
        for p in self.daemons():
            if alive(p):
                p.send_signal(signal.SIGCONT)

    def term(self, proc="store"):
        """SIGTERM to one daemon (SIGCONT first); its exit code. Fails the test when it does not
        exit in time."""
        p = self.process(proc)
        rc, killed = end_process(p)
        if killed:
            pytest.fail(f"{proc} of {self.server} did not exit {DAEMON_STOP_SECONDS} s after "
                        f"SIGTERM:\n{self.stderr()}")
        return rc

    def restart(self, proc="store"):
        """Starts daemon proc again (ended first with SIGTERM if it still runs), with the same
        arguments; a restarted store waits until its writer is back in ombra-vssd."""
        if alive(self.process(proc)):
            self.term(proc)
        if proc == "store":
            self.start()
            if alive(self.vssd) and not self.writer_registered():
                pytest.fail(f"the restarted store's writer on {self.server} did not register "
                            f"with ombra-vssd:\n{self.stderr()}")
            self.wait_directory()
            return self.proc
        if proc == "vssd":
            return self.start_vssd()
        if proc == "repld":
            return self.start_repld(**self.repld_kw)
        raise ValueError(f"no daemon {proc!r}")

    def wait_directory(self, timeout=20.0):
        """A store whose directory is in etcd answers "not reached yet" (exit 75) until its
        connector's first attempt is through: waits for that (as an administrator would retry)."""
        d = self.home / "directory.json"
        if not d.exists() or "etcd" not in json.loads(d.read_text()):
            return
        end = time.monotonic() + timeout
        while True:
            r = self.ombra("db", "list", "--json", check=False)
            if r.rc != 75 or time.monotonic() > end:
                return
            time.sleep(0.1)

    # -- a small disk
    def small_log_disk(self, mb=16, fstype="ext4"):
        """A loop-mounted filesystem of mb MiB (ext4; xfs needs 300 MiB at least), e.g. for
        `ombra db new NAME --logs DIR`; returns its mount point. Unmounted at teardown."""
        mkfs = shutil.which(f"mkfs.{fstype}")
        if mkfs is None:
            pytest.skip(f"mkfs.{fstype} is not installed")
        k = len(self.disks) + 1
        image = self.dir / f"disk{k}.img"
        mnt = self.dir / f"disk{k}"
        mnt.mkdir()
        with open(image, "wb") as f:
            f.truncate(mb << 20)
        opts = ["-q", "-F", "-m", "0"] if fstype.startswith("ext") else ["-q", "-f"]
        run(mkfs, *opts, image, timeout=60)
        self.disks.append((image, mnt))
        run("mount", "-o", "loop", image, mnt)
        return mnt

    # -- logs
    def stderr(self, run=None, tail=6000):
        """The logs of this server's daemons (Store.stderr's signature: run selects one store run)."""
        if run is not None:
            return super().stderr(run, tail)
        parts = [super().stderr(tail=tail)]
        parts += [f"--- {label} of {self.server} ({log})\n{_tail(log, 3000)}"
                  for label, log in self.daemon_logs]
        return "\n".join(parts)

    # -- teardown
    def shutdown(self, errors):
        """Ends every process of this server; a store that does not exit 0 on SIGTERM is an
        error. Kills anything left in the namespace (a CLI call that timed out, say)."""
        for p in self.helpers:
            end_process(p, 5)
        for label, p in (("ombra-repld", self.repld), ("ombra-vssd", self.vssd)):
            rc, killed = end_process(p)
            if killed:
                errors.append(f"{label} of {self.server} needed SIGKILL after SIGTERM")
        was_running = alive(self.proc)
        rc, killed = end_process(self.proc)
        if killed:
            errors.append(f"ombra-store of {self.server} needed SIGKILL after SIGTERM")
        elif was_running and rc != 0:
            errors.append(f"ombra-store of {self.server} exited {rc} after SIGTERM (expected 0):"
                          f"\n{self.stderr()}")
        if os.path.exists(f"/run/netns/{self.ns}"):
            pids = run(IP, "netns", "pids", self.ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while run(IP, "netns", "pids", self.ns, check=False).stdout.split():
                if time.monotonic() > deadline:
                    errors.append(f"processes left in {self.ns} after SIGKILL")
                    break
                time.sleep(0.02)


class EtcdMember:
    def __init__(self, bed, index, ip):
        self.bed = bed
        self.index = index
        self.name = f"m{index}"
        self.ip = ip
        self.data = bed.tmp / "etcd" / self.name
        self.proc = None
        self.logs = []

    @property
    def scheme(self):
        return "https" if self.bed.etcd_tls else "http"

    @property
    def client_url(self):
        return f"{self.scheme}://{self.ip}:{ETCD_CLIENT_PORT}"

    @property
    def peer_url(self):
        return f"http://{self.ip}:{ETCD_PEER_PORT}"

    def start(self):
        assert not alive(self.proc), f"etcd member {self.name} already runs"
        self.data.parent.mkdir(exist_ok=True)
        log = self.bed.tmp / f"etcd-{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        argv = [ETCD, "--name", self.name, "--data-dir", self.data,
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in self.bed.etcd),
                "--initial-cluster-state", "new", "--initial-cluster-token", f"omd-{self.bed.rand}",
                "--logger", "zap"]
        tls = self.bed.etcd_tls
        if tls:
            argv += ["--cert-file", tls["cert"], "--key-file", tls["key"], "--client-cert-auth",
                     "--trusted-ca-file", tls["ca"]]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT)

    def healthy(self, timeout=1.0):
        try:
            body = self.bed.etcd_request("/health", None, timeout, self.index)
        except (OSError, ValueError):
            return False
        return body.get("health") == "true"


class Bed:
    """A DAG test bed of n servers (bed.servers, also bed.a, bed.b, ...) and etcd."""

    def __init__(self, build_dir, n=3, etcd_members=1):
        if not 1 <= n <= MAX_SERVERS:
            raise ValueError(f"a bed has 1 to {MAX_SERVERS} servers, not {n}")
        if etcd_members not in (1, 3):
            raise ValueError("etcd runs one member or three")
        self.build_dir = pathlib.Path(build_dir)
        self.n = n
        self.etcd_members = etcd_members
        self.etcd_tls = None
        self.servers = []
        self.etcd = []
        self.tmp = None
        self.rand = None
        self.bridge = None
        self.net = None
        self.closed = False
        self.bound = False  # the temp directory's shared bind mount is in place

    # -- building
    def start(self):
        try:
            self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="omd-", dir="/tmp"))
            run("mount", "--bind", self.tmp, self.tmp)
            self.bound = True
            run("mount", "--make-shared", self.tmp)
            with open(LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._choose_names()
                run(IP, "link", "add", self.bridge, "type", "bridge")
            run(IP, "addr", "add", f"{self.bridge_ip}/{self.net.prefixlen}", "dev", self.bridge)
            for k in range(1, self.etcd_members):
                run(IP, "addr", "add", f"{self.net.network_address + 254 - k}/{self.net.prefixlen}",
                    "dev", self.bridge)
            run(IP, "link", "set", self.bridge, "up")
            self.servers = [Server(self, SERVER_NAMES[i], i) for i in range(self.n)]
            for s in self.servers:
                s.make_links()
            self.etcd = [EtcdMember(self, k, str(self.net.network_address + 254 - k))
                         for k in range(self.etcd_members)]
            for m in self.etcd:
                m.start()
            self.wait_etcd()
            for s in self.servers:
                s.start_all()
        except BaseException:
            self.close(keep=True, check=False)
            raise
        return self

    def _choose_names(self):
        """R and the /24: none of the machine's names, addresses or routes may overlap (called
        under the lock, and the bridge made before it is released)."""
        used = []
        for cmd in (["-4", "-o", "addr", "show"], ["-4", "route", "show", "table", "all"]):
            for line in run(IP, *cmd).stdout.splitlines():
                for word in line.split():
                    try:
                        used.append(ipaddress.ip_network(word, strict=False))
                    except ValueError:
                        pass
        links = run(IP, "-o", "link", "show").stdout
        for _ in range(1000):
            rand = secrets.token_hex(3)
            net = ipaddress.ip_network(f"10.{64 + int(rand[:2], 16) % 128}.{int(rand[2:4], 16)}.0/24")
            if rand in links or any(net.overlaps(u) and u.prefixlen >= 16 for u in used):
                continue
            if any(os.path.exists(f"/run/netns/om-{rand}-{c}") for c in SERVER_NAMES):
                continue
            self.rand, self.net, self.bridge = rand, net, f"omb-{rand}"
            return
        raise RuntimeError("no free 10.x.y.0/24 for the test bed")

    @property
    def bridge_ip(self):
        return str(self.net.network_address + 254)

    def __getattr__(self, name):
        if len(name) == 1 and name in SERVER_NAMES:
            for s in self.__dict__.get("servers", ()):
                if s.server == name:
                    return s
        raise AttributeError(name)

    # -- etcd
    @property
    def etcd_urls(self):
        return [m.client_url for m in self.etcd]

    @property
    def etcd_url(self):
        """The client URL(s), comma-separated as etcd's own clients take them."""
        return ",".join(self.etcd_urls)

    def wait_etcd(self, seconds=ETCD_READY_SECONDS):
        """Waits until every running member answers /health with true."""
        deadline = time.monotonic() + seconds
        for m in self.etcd:
            while alive(m.proc) and not m.healthy():
                if time.monotonic() > deadline:
                    pytest.fail(f"etcd member {m.name} not healthy {seconds} s after start:\n"
                                + _tail(m.logs[-1]))
                time.sleep(0.05)
            if m.proc.poll() is not None and m.proc.returncode != -signal.SIGKILL:
                pytest.fail(f"etcd member {m.name} exited with {m.proc.returncode}:\n"
                            + _tail(m.logs[-1]))

    def etcd_kill9(self, member=None):
        """SIGKILL to one member (index) or to all. While the others keep a quorum, returns once
        they have a leader again (a write sent in between could wait out etcd's request timeout,
        7 s: a proposal forwarded to the dead leader is dropped, not retried)."""
        for m in self.etcd if member is None else [self.etcd[member]]:
            if alive(m.proc):
                m.proc.kill()
                m.proc.wait(10)
        if sum(alive(m.proc) for m in self.etcd) > len(self.etcd) // 2:
            self.wait_etcd()

    def etcd_restart(self, member=None):
        """Starts the member(s) again on the same data directory (after etcd_kill9, or ends a
        running one with SIGTERM first); waits for health."""
        for m in self.etcd if member is None else [self.etcd[member]]:
            end_process(m.proc)
            m.start()
        self.wait_etcd()

    def etcd_use_tls(self, ca, cert, key, client_cert, client_key):
        """The hook for client-certificate authentication (the DAG's CA, later): restarts every
        member with https client URLs, --client-cert-auth and --trusted-ca-file ca; the bed's own
        requests then present client_cert/client_key. Peers stay plain http on the bridge.
        Each server's environment gets OMBRA_ETCD = the new endpoints: a store restarted then
        reaches its directory there, not at the endpoints its join recorded."""
        self.etcd_tls = dict(ca=str(ca), cert=str(cert), key=str(key),
                             client_cert=str(client_cert), client_key=str(client_key))
        for m in self.etcd:
            end_process(m.proc)
        for m in self.etcd:
            m.start()
        self.wait_etcd()
        for s in self.servers:
            s.env["OMBRA_ETCD"] = self.etcd_url

    def etcd_request(self, path, body=None, timeout=10.0, member=None):
        """POST body (JSON) to, or GET, path ("/health", "/v3/kv/range") on etcd from the root
        namespace: the decoded reply. member: that member only (index), else the first member
        that answers."""
        ctx = None
        if self.etcd_tls:
            ctx = ssl.create_default_context(cafile=self.etcd_tls["ca"])
            ctx.load_cert_chain(self.etcd_tls["client_cert"], self.etcd_tls["client_key"])
        data = None if body is None else json.dumps(body).encode()
        members = self.etcd if member is None else [self.etcd[member]]
        for i, m in enumerate(members):
            try:
                with urllib.request.urlopen(urllib.request.Request(m.client_url + path, data=data),
                                            timeout=timeout, context=ctx) as r:
                    return json.loads(r.read())
            except OSError:
                if i == len(members) - 1:
                    raise

    def etcd_put(self, key, value, member=None):
        self.etcd_request("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, member=member)

    def etcd_get(self, key, prefix=False, member=None):
        """The value (bytes) of key, or None; with prefix=True a dict key -> value of every key
        under it (e.g. bed.etcd_get("/ombra/dag/", prefix=True))."""
        req = {"key": _b64(key)}
        if prefix:
            k = key.encode()
            req["range_end"] = _b64(k[:-1] + bytes([k[-1] + 1]))
        kvs = self.etcd_request("/v3/kv/range", req, member=member).get("kvs", [])
        pairs = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                 for kv in kvs}
        return pairs if prefix else pairs.get(key)

    # -- logs
    def logs(self, limit=3000):
        """The tail of every daemon's log, and of etcd's: what a failing test prints."""
        parts = []
        for s in self.servers:
            for i, log in enumerate(s.logs):
                parts.append(f"--- ombra-store of {s.server}, run {i + 1} ({log})\n{_tail(log, limit)}")
            for label, log in s.daemon_logs:
                parts.append(f"--- {label} of {s.server} ({log})\n{_tail(log, limit)}")
        for m in self.etcd:
            for log in m.logs:
                parts.append(f"--- etcd {m.name} ({log})\n{_tail(log, limit)}")
        return "\n".join(parts)

    # -- teardown
    def close(self, keep=False, check=True):
        """Ends everything the bed made; keep leaves the temp directory (logs, data) in place.
        With check, fails when a store did not exit 0 on SIGTERM or anything is left."""
        if self.closed:
            return
        self.closed = True
        errors = []

        def stop(s):
            try:
                s.shutdown(errors)
            except Exception as e:  # go on: the rest must be cleaned up whatever happens
                errors.append(f"stopping {s.server}: {e}")
        # The servers stop side by side (each waits for its own daemons' exits, which take a
        # second or two): a bed's teardown costs one server's, not the sum of them all.
        threads = [threading.Thread(target=stop, args=(s,)) for s in self.servers]
        threads += [threading.Thread(target=end_process, args=(m.proc, 10)) for m in self.etcd]
        for t in threads[:len(self.servers)]:
            t.start()
        for t in threads[:len(self.servers)]:
            t.join()
        for t in threads[len(self.servers):]:  # etcd after the servers, which use it to the end
            t.start()
        for t in threads[len(self.servers):]:
            t.join()
        for s in self.servers:
            for image, mnt in s.disks:
                if os.path.ismount(mnt):
                    if run("umount", mnt, check=False).returncode != 0:
                        errors.append(f"{mnt} busy at teardown; unmounted lazily")
                        run("umount", "-l", mnt, check=False)
                for dev in run("losetup", "-j", image, check=False).stdout.splitlines():
                    run("losetup", "-d", dev.split(":")[0], check=False)
        for s in self.servers:
            run(IP, "netns", "del", s.ns, check=False)
            run(IP, "link", "del", s.veth, check=False)  # gone with the namespace's eth0, else now
        if self.bridge:
            run(IP, "link", "del", self.bridge, check=False)
        if self.bound:
            if run("umount", self.tmp, check=False).returncode != 0:
                errors.append(f"{self.tmp} busy at teardown; unmounted lazily")
                run("umount", "-l", self.tmp, check=False)
        left = self.leftovers()
        if left:
            errors.append("left behind: " + "; ".join(left))
        if self.tmp:
            if keep or errors or os.environ.get("OMBRA_KEEP_TMP"):
                print(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, onerror=lambda f, path, e: errors.append(
                    f"cannot remove {path}: {e[1]}"))
        if check and errors:
            pytest.fail("DAG test bed teardown:\n" + "\n".join(errors))

    def leftovers(self):
        """What of this bed still exists: namespaces, links, mounts, loop devices, processes."""
        if self.rand is None:
            return []
        left = [f"namespace {ns}" for ns in run(IP, "netns", "list").stdout.split()
                if ns.startswith(f"om-{self.rand}-")]
        left += [f"link {line.split(':')[1].strip()}"
                 for line in run(IP, "-o", "link", "show").stdout.splitlines() if self.rand in line]
        with open("/proc/self/mountinfo") as f:
            left += [f"mount {line.split()[4]}" for line in f
                     if self.tmp and line.split()[4].startswith(str(self.tmp))]
        for s in self.servers:
            for image, _ in s.disks:
                if run("losetup", "-j", image, check=False).stdout.strip():
                    left.append(f"loop device on {image}")
        procs = [p for s in self.servers for p in s.daemons() + s.helpers]
        procs += [m.proc for m in self.etcd if m.proc]
        left += [f"process {p.pid} ({p.args[0] if isinstance(p.args, list) else p.args})"
                 for p in procs if alive(p)]
        return left
