"""Shared fixtures of the system tests: where the built binaries are, and a store daemon.

OMBRA_BUILD names the build directory (make test sets it; the default is build/)."""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import zlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


# Module-scoped fixtures that take long to build (under the sanitizers most of all): the tests
# that use one run on one pytest-xdist worker (make test runs with --dist loadgroup), so the
# fixture is built once, not once per worker that happens to get one of its tests.
SHARED_FIXTURES = ("two_sets", "installed", "weeks_master")


_HOME = None


def pytest_configure(config):
    # A data directory of the run's own for the commands a test starts without one (repository
    # commands keep the sets' summaries there): never the machine's /var/lib/ombra.
    global _HOME
    if "OMBRA_HOME" not in os.environ:
        _HOME = tempfile.mkdtemp(prefix="ombra-tests-home-")
        os.environ["OMBRA_HOME"] = _HOME
    config.addinivalue_line(
        "markers", "slow_under_sanitizers: long loops (kill -9 rounds, 100 databases, descriptor "
        "exhaustion, waits on deadlines) and walks over every command, page or unit that run "
        "little of our C, which make test leaves out of its sanitizer pass; make test-long runs "
        "them")
    config.addinivalue_line(
        "markers", "dag_long: DAG tests beyond make test's short set (each builds a bed of "
        "servers in namespaces); make test-dag and make test-long run them")
    config.addinivalue_line(
        "markers", "package: the Debian package installed into a temporary root; make "
        "test-package builds it and runs them (they skip without OMBRA_DEB)")


def pytest_unconfigure(config):
    if _HOME:
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    if os.environ.get("OMBRA_FIRST_PARAMS_ONLY") == "1":
        # make test's sanitizer pass: each parametrized test with its first parameters only
        # (the others walk the same code with other inputs; the plain pass and make test-long
        # run them all).
        seen, keep, drop = set(), [], []
        for item in items:
            key = (item.path, getattr(item, "originalname", item.name))
            (drop if key in seen and hasattr(item, "callspec") else keep).append(item)
            seen.add(key)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    shard = os.environ.get("OMBRA_TEST_SHARD", "")
    if shard:
        # "K/N": only the tests whose id falls in part K of N (a stable hash of the id, the
        # same in every xdist worker). make test's sanitizer pass runs one half of its subset,
        # the half chosen by the commit, so consecutive commits cover both; make test-long runs
        # everything.
        try:
            k, n = (int(x) for x in shard.split("/"))
            if not 0 <= k < n:
                raise ValueError
        except ValueError:
            raise pytest.UsageError(f"OMBRA_TEST_SHARD={shard!r}: give K/N with 0 <= K < N")
        keep = [i for i in items if zlib.crc32(i.nodeid.encode()) % n == k]
        drop = [i for i in items if zlib.crc32(i.nodeid.encode()) % n != k]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    # The DAG tests first, the short nemesis at their head: they are long and mostly wait
    # (leases, timeouts, several daemons), so under xdist they overlap the tests that use the
    # CPU instead of running last on an idle machine (collected last, as a subdirectory, they
    # made the last 70 s of make test's plain pass).
    items.sort(key=lambda i: (0 if "::test_nemesis_short" in i.nodeid else
                              1 if i.path.parent.name == "dag" else 2))
    for item in items:
        for name in SHARED_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))


@pytest.fixture(scope="session")
def build_dir():
    d = pathlib.Path(os.environ.get("OMBRA_BUILD", ROOT / "build"))
    if not (d / "build.ninja").exists():
        pytest.fail(f"no build in {d}: run 'make' first (or set OMBRA_BUILD)")
    return d


@pytest.fixture(scope="session")
def engine_loop(build_dir):
    return build_dir / "tests" / "tools" / "engine_loop"


# ---- the store daemon ----------------------------------------------------------------------

STORE_READY_SECONDS = 30  # the socket accepts within this after start (a deadline: it costs
# nothing when the store is quick, and a loaded machine under the sanitizers is not)
STORE_STOP_SECONDS = 20  # SIGTERM to exit
CLI_SECONDS = 120  # any one CLI call


class Result(tuple):
    """(rc, stdout, stderr) of one CLI call, with the command line for messages."""

    def __new__(cls, rc, out, err, argv):
        r = super().__new__(cls, (rc, out, err))
        r.argv = argv
        return r

    rc = property(lambda self: self[0])
    out = property(lambda self: self[1])
    err = property(lambda self: self[2])

    def describe(self):
        out = self.out if isinstance(self.out, str) else repr(self.out[:2000])
        return (f"$ {' '.join(map(str, self.argv))}\nexit {self.rc}\n"
                f"--- stdout\n{out[:4000]}\n--- stderr\n{self.err[:4000]}")



def daemon_env(env):
    """The environment a daemon starts with: env, with OMBRA_DAEMON_ASAN_OPTIONS (when set) as its
    ASAN_OPTIONS. make test's sanitizer pass checks for leaks in the daemons, which live long, and
    not at the exit of each of its 2,000 CLI calls (LeakSanitizer's exit check costs about 50 ms
    of CPU a process, a minute of make test); make test-long checks both."""
    o = os.environ.get("OMBRA_DAEMON_ASAN_OPTIONS")
    return dict(env, ASAN_OPTIONS=o) if o else env


class Store:
    """One ombra-store in a private temp directory, and the CLI pointed at it. server: the name
    the daemon is started with (--server)."""

    def __init__(self, build_dir, tmp, server="srv1"):
        self.daemon = build_dir / "src" / "daemons" / "ombra-store"
        self.cli = build_dir / "src" / "cli" / "ombra"
        for b in (self.daemon, self.cli):
            if not os.access(b, os.X_OK):
                pytest.fail(f"{b} is not built: run 'ninja -C {build_dir}' first")
        self.server = server
        self.tmp = pathlib.Path(tmp)
        self.run_dir = self.tmp / "run"
        self.home = self.tmp / "home"
        self.sock = self.run_dir / "store.sock"
        # OMBRA_CONFIG=/dev/null: no configuration file (this machine's /etc/ombra/ombra.conf
        # would otherwise name repositories and directories); a test that wants one passes
        # --config, which wins over the variable.
        self.env = dict(os.environ, OMBRA_RUNTIME_DIR=str(self.run_dir),
                        OMBRA_HOME=str(self.home), OMBRA_CONFIG="/dev/null")
        self.proc = None
        self.starts = 0
        self.logs = []  # one stderr file per daemon run
        self.args = []  # more options of the daemon from the next start (--cache-mb 1)

    # -- lifecycle
    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "the store already runs"
        self.starts += 1
        log = self.tmp / f"store-{self.starts}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen([str(self.daemon), "--foreground", "--server", self.server,
                                          *self.args],
                                         env=daemon_env(self.env), stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)
        self.wait_ready()
        return self.proc

    def wait_ready(self, seconds=STORE_READY_SECONDS):
        deadline = time.monotonic() + seconds
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"ombra-store exited with {self.proc.returncode} before its socket "
                            f"accepted:\n{self.stderr()}")
            if self.accepts():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{self.sock} does not accept {seconds} s after start:\n"
                            f"{self.stderr()}")
            time.sleep(0.02)

    def accepts(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.sock))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, seconds=STORE_STOP_SECONDS):
        """SIGTERM; returns the exit code (fails when it does not exit in time)."""
        p = self.proc
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(seconds)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                pytest.fail(f"ombra-store did not exit {seconds} s after SIGTERM:\n"
                            f"{self.stderr()}")
        return p.returncode

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return self.proc.returncode

    def stderr(self, run=None, tail=6000):
        """The daemon's stderr: of run number `run` (1-based), else of every run."""
        logs = self.logs if run is None else [self.logs[run - 1]]
        parts = []
        for i, log in enumerate(logs):
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            parts.append(f"--- ombra-store run {self.logs.index(log) + 1} ({log})\n{text}")
        s = "\n".join(parts)
        return s if len(s) <= tail else "...\n" + s[-tail:]

    # -- the CLI
    def ombra(self, *args, input=None, check=True, binary=False, user=None, timeout=CLI_SECONDS,
              env=None):
        """Runs `ombra ARGS`; returns (rc, stdout, stderr). stdout is bytes when binary; env: more
        variables."""
        argv = [str(self.cli)] + [str(a) for a in args]
        if user:
            argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] + argv
        if isinstance(input, str):
            input = input.encode()
        p = subprocess.run(argv, input=input, capture_output=True,
                           env=dict(self.env, **env) if env else self.env, timeout=timeout)
        out = p.stdout if binary else p.stdout.decode(errors="replace")
        r = Result(p.returncode, out, p.stderr.decode(errors="replace"), argv)
        if check and r.rc != 0:
            pytest.fail(f"ombra failed:\n{r.describe()}\n{self.stderr()}")
        return r

    def writer_registered(self, seconds=15):
        """True once ombra-vssd lists the store's writer as connected (within seconds)."""
        end = time.time() + seconds
        while time.time() < end:
            r = self.ombra("vss", "writers", "--json", check=False)
            if r.rc == 0 and any(w["name"] == "Ombra Store Writer" and w["connected"] for w in json.loads(r.out)["writers"]):
                return True
            time.sleep(0.1)
        return False

    def json(self, *args):
        r = self.ombra(*args, "--json")
        try:
            return json.loads(r.out)
        except ValueError:
            pytest.fail(f"not JSON:\n{r.describe()}")

    def db_show(self, name):
        o = self.json("db", "show", name)
        return o["db"] if isinstance(o, dict) and isinstance(o.get("db"), dict) else o

    def db_list(self):
        o = self.json("db", "list")["databases"]
        return o["databases"] if isinstance(o, dict) else o

    def deliver(self, db, mailbox, message, *opts):
        r = self.ombra("mail", "deliver", db, mailbox, *opts, input=message)
        m = re.search(r"(\d+)\s*$", r.out)
        assert m, f"no message id printed:\n{r.describe()}"
        return int(m.group(1))

    def get(self, db, mailbox, id_):
        return self.ombra("mail", "get", db, mailbox, id_, binary=True).out

    def messages(self, db, mailbox, *opts):
        o = self.json("mail", "list", db, mailbox, *opts)["messages"]
        return o["messages"] if isinstance(o, dict) else o

    def digest(self, db):
        r = self.ombra("mail", "digest", db)
        m = re.search(r"\b[0-9a-f]{32}\b", r.out)
        assert m, f"no 32-hex digest printed:\n{r.describe()}"
        return m.group(0)

    # -- the raw protocol
    def connect(self, timeout=10):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self.sock))
        return s

    @staticmethod
    def frame(obj):
        b = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return struct.pack("<I", len(b)) + b

    @staticmethod
    def read_reply(s):
        """One reply object from s; None when the daemon closed the connection first."""

        def exactly(n):
            b = b""
            while len(b) < n:
                try:
                    c = s.recv(n - len(b))
                except ConnectionResetError:
                    return None
                if not c:
                    return None
                b += c
            return b

        h = exactly(4)
        if h is None:
            return None
        (n,) = struct.unpack("<I", h)
        assert n <= 1 << 20, f"reply frame of {n} bytes"
        body = exactly(n)
        assert body is not None, "the daemon closed in the middle of its reply"
        return json.loads(body)

    def raw(self, payload, timeout=10):
        """Sends payload bytes on a fresh connection, returns the first reply (or None if the
        daemon closed without replying). A daemon that neither replies nor closes within
        timeout fails the test."""
        s = self.connect(timeout)
        try:
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                return self.read_reply(s)
            except socket.timeout:
                pytest.fail(f"the daemon neither replied nor closed within {timeout} s after "
                            f"{payload[:80]!r}")
        finally:
            s.close()

    def request(self, obj, data=None, timeout=60):
        if data is not None:
            obj = dict(obj, data=len(data))
        payload = self.frame(obj) + (self.frame(data) if data is not None else b"")
        return self.raw(payload, timeout)


def edb_header_states(path):
    """The state field of both header copies of an .edb, read straight from the file
    (src/engine/format.c: eng_dbhdr_encode; u32 at byte 72 of pages 0 and 1), so a test can
    check a database's shutdown state with no daemon and no CLI involved."""
    names = {1: "Just Created", 2: "Dirty Shutdown", 3: "Clean Shutdown"}
    with open(path, "rb") as f:
        b = f.read(2 * 32768)
    states = []
    for copy in (0, 1):
        page = b[copy * 32768:(copy + 1) * 32768]
        assert page[8:16] == b"OMBRAEDB", f"{path}: header copy {copy} has no magic"
        states.append(names.get(struct.unpack_from("<I", page, 72)[0], "Unknown"))
    return states


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the stderr of the store daemons it ran."""
    outcome = yield
    rep = outcome.get_result()
    store = getattr(item, "_ombra_store", None)
    if rep.failed:
        item._ombra_failed = True  # keep the temp directory for a look
        if store is not None:
            rep.sections.append(("ombra-store stderr", store.stderr()))


@pytest.fixture
def store(build_dir, request):
    """A running ombra-store --server srv1 in a private temp directory. Stopped with SIGTERM at
    teardown, which must end it with exit 0 within 20 s. A failing test shows the daemon's
    stderr and keeps the directory (so does OMBRA_KEEP_TMP=1, e.g. to grep sanitizer logs)."""
    # Short path: a Unix socket path has room for 107 bytes only.
    tmp = tempfile.mkdtemp(prefix="ombra-st-", dir="/tmp")
    st = Store(build_dir, tmp)
    request.node._ombra_store = st
    st.start()
    yield st
    failed = False
    try:
        if st.proc.poll() is None:
            rc = st.stop()
            if rc != 0:
                failed = True
                pytest.fail(f"ombra-store exited {rc} after SIGTERM (expected 0):\n"
                            f"{st.stderr()}")
    finally:
        if st.proc.poll() is None:
            st.proc.kill()
            st.proc.wait()
        keep = failed or getattr(request.node, "_ombra_failed", False)
        if keep or os.environ.get("OMBRA_KEEP_TMP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def ombra(store):
    """ombra(*args, input=None, check=True) -> (rc, stdout, stderr), against the store."""
    return store.ombra


# ---- the shadow copy service next to the store ----

def stop_process(p, seconds=20):
    """SIGTERM, then SIGKILL after seconds: a daemon a test started is gone when it returns."""
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(seconds)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@pytest.fixture
def vssd(store, build_dir):
    """ombra-vssd next to the store (same runtime directory); the store's writer registered."""
    log = open(store.tmp / "vssd.log", "w")
    p = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground", "--event-limit-ms", "20000"],
                         env=daemon_env(store.env), stdout=log, stderr=subprocess.STDOUT)
    store.vssd = p
    try:  # stopped whatever happens, a failure before the test too (it was left running)
        if not store.writer_registered():
            pytest.fail("the store's writer did not register with ombra-vssd:\n" + store.stderr())
        yield p
    finally:
        stop_process(p)
        log.close()


# ---- issue 14's proof (tests/system/test_trust.py, test_campaign.py): a second server, the
# shadow copy service started on demand, and one CLI call's outcome judged by the rule of the
# product (exit 0, or one line on stderr) ----

def start_vssd(store, build_dir):
    """ombra-vssd beside `store` (its runtime directory); waits for the store's writer."""
    log = open(store.tmp / f"vssd-{store.starts}.log", "w")
    p = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground",
                          "--event-limit-ms", "20000"],
                         env=daemon_env(store.env), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    store.vssd = p
    if not store.writer_registered():
        p.kill()
        p.wait()
        pytest.fail("the store's writer did not register with ombra-vssd:\n" + store.stderr())
    return p


@pytest.fixture
def server_beta(build_dir, request):
    """A second server, 'beta': its own ombra-store --server beta and ombra-vssd, in its own
    temp directory (nothing shared with the `store` fixture's server but the file system)."""
    tmp = tempfile.mkdtemp(prefix="ombra-beta-", dir="/tmp")
    st = Store(build_dir, tmp, server="beta")
    st.start()
    vssd = start_vssd(st, build_dir)
    yield st
    stop_process(vssd)
    rc = st.stop()
    if st.proc.poll() is None:
        st.proc.kill()
        st.proc.wait()
    if getattr(request.node, "_ombra_failed", False) or os.environ.get("OMBRA_KEEP_TMP") or rc != 0:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    assert rc == 0, f"ombra-store --server beta exited {rc} after SIGTERM:\n{st.stderr()}"


def one_line_refusal(r):
    """True when r (a Result) is a refusal as the product promises it: a non-zero exit (not a
    signal) and exactly one line on stderr."""
    lines = [l for l in r.err.strip().split("\n") if l.strip()]
    return r.rc > 0 and len(lines) == 1


def process_stopped(pid):
    """True while the process is stopped by a signal (state T in /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def resume_when_stopped(p, seconds=60):
    """SIGCONT to p once it has stopped itself. A CLI at OMBRA_*_PAUSE prints "paused <stage>"
    first and stops after: a SIGCONT sent in between is lost, and the stop then lasts forever."""
    end = time.monotonic() + seconds
    while not process_stopped(p.pid) and p.poll() is None:
        assert time.monotonic() < end, f"pid {p.pid} did not stop itself in {seconds} s"
        time.sleep(0.005)
    p.send_signal(signal.SIGCONT)


class Paused:
    """A CLI call that stops itself at a stage (OMBRA_BACKUP_PAUSE / OMBRA_RESTORE_PAUSE: it
    prints "paused <stage>" on stderr, then SIGSTOPs itself; some stages come once per file)."""

    def __init__(self, store, args, var, stage, env=None, seconds=60):
        import threading
        self.argv = [str(store.cli)] + [str(a) for a in args]
        self.p = subprocess.Popen(self.argv, env=dict(store.env, **{var: stage}, **(env or {})),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=lambda f=f, acc=acc: acc.extend(iter(f.readline, "")),
                                         daemon=True)
                        for f, acc in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.readers:
            t.start()
        # it reached the stage once it printed so and stopped (it prints first, then stops)
        end = time.monotonic() + seconds
        while not self.err and self.p.poll() is None and time.monotonic() < end:
            time.sleep(0.005)
        self.first = self.err[0] if self.err else ""
        self.reached = self.first.startswith(f"paused {stage}")
        while self.reached and not process_stopped(self.p.pid) and self.p.poll() is None:
            if time.monotonic() > end:
                self.reached = False
            time.sleep(0.005)

    def kill9(self):
        self.p.kill()
        return self.finish(10)

    def resume(self, timeout=CLI_SECONDS):
        """SIGCONT, again at every later pause, until it exits: a Result."""
        end = time.monotonic() + timeout
        while self.p.poll() is None:
            if process_stopped(self.p.pid):
                self.p.send_signal(signal.SIGCONT)
            if time.monotonic() > end:
                self.p.kill()
                self.finish(10)
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.01)
        return self.finish(10)

    def finish(self, seconds):
        """Waits for the exit (TimeoutExpired after seconds, the process killed): a Result."""
        try:
            self.p.wait(seconds)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise
        for t in self.readers:
            t.join(seconds)
        return Result(self.p.returncode, "".join(self.out), "".join(self.err), self.argv)


# ---- a repository and a backed-up chain (the restore attack and safety suites) ----

@pytest.fixture
def repo(store, vssd):
    """An empty plain repository next to the store (a test module may define its own)."""
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


@pytest.fixture
def source(store, repo):
    """db1 with a full and an incremental backup in repo (several generations in the chain):
    {"digest": db1's digest after them, "full", "inc": each backup's first set}."""
    store.ombra("db", "new", "db1")
    sets = {}
    for seed, kind in ((1, "full"), (2, "incremental")):
        store.ombra("mail", "load", "db1", "--mailboxes", "3", "--messages", "200", "--size",
                    "5000", "--seed", str(seed))
        r = store.ombra("backup", "--repo", repo, "--type", kind, "--json", "db1")
        sets[kind] = json.loads(r.out)["sets"][0]
    return {"digest": store.digest("db1"), "full": sets["full"], "inc": sets["incremental"]}
