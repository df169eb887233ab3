"""The daemons under hostile use (issue 15, points 4 to 7): out of descriptors, over the
connection limit, half-sent frames, huge announced payloads, a reply that misreads its own
announcement, a runtime directory or socket that another user put there.

Each test starts its own ombra-store (or ombra-vssd) with the limits it needs, measures what a
user would see (the log, the CPU, the memory, how long `ombra db list` takes) and fails on
today's main. Runs as root: the runtime-directory tests need a second uid (nobody)."""
import json
import os
import pathlib
import pwd
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import Store, daemon_env

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a second uid: nobody)")


# ---- helpers --------------------------------------------------------------------------------

class HostileStore(Store):
    """A store started with extra arguments and, optionally, a low descriptor limit."""

    def __init__(self, build_dir, tmp, args=(), nofile=None):
        super().__init__(build_dir, tmp)
        self.args = [str(a) for a in args]
        self.nofile = nofile

    def start(self):
        self.starts += 1
        log = self.tmp / f"store-{self.starts}.log"
        self.logs.append(log)
        nofile = self.nofile

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [str(self.daemon), "--foreground", "--server", self.server] + self.args,
                env=daemon_env(self.env), stdin=subprocess.DEVNULL, stdout=f,
                stderr=subprocess.STDOUT, preexec_fn=limit)
        self.wait_ready()
        return self.proc

    def log_text(self):
        return self.logs[-1].read_text(errors="replace")


@pytest.fixture
def hostile(build_dir, request):
    """hostile(args=(), nofile=None) -> a started HostileStore; all stopped at teardown."""
    made = []

    def make(args=(), nofile=None):
        tmp = tempfile.mkdtemp(prefix="ombra-h-", dir="/tmp")
        st = HostileStore(build_dir, tmp, args, nofile)
        request.node._ombra_store = st
        made.append(st)
        st.start()
        return st

    yield make
    for st in made:
        if st.proc and st.proc.poll() is None:
            st.proc.send_signal(15)
            try:
                st.proc.wait(20)
            except subprocess.TimeoutExpired:
                st.proc.kill()
                st.proc.wait()
        if not getattr(request.node, "_ombra_failed", False):
            shutil.rmtree(st.tmp, ignore_errors=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def frame(obj):
    b = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack("<I", len(b)) + b


def reply_now(s, seconds):
    """The reply frame waiting on s within seconds (dict), None when s was closed without one,
    "silent" when nothing came at all."""
    s.settimeout(seconds)
    try:
        h = b""
        while len(h) < 4:
            c = s.recv(4 - len(h))
            if not c:
                return None
            h += c
        (n,) = struct.unpack("<I", h)
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                return None
            b += c
        return json.loads(b)
    except socket.timeout:
        return "silent"
    except (ConnectionResetError, BrokenPipeError):
        return None


def closed_within(s, seconds):
    """(seconds until the daemon closed s or None, the error reply it sent first if any)."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    got = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
    except socket.timeout:
        return None, None
    except ConnectionResetError:
        pass
    took = time.monotonic() - t0
    rep = None
    if len(got) >= 4:
        (n,) = struct.unpack("<I", got[:4])
        try:
            rep = json.loads(got[4:4 + n])
        except ValueError:
            rep = None
    return took, rep


def open_idle(st, n, timeout=2.0):
    socks, failed = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(st.sock))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    return socks, failed


def timed_db_list(st, seconds=20):
    """`db list` and the seconds until it was answered. Refused as over the limit, it is asked
    again: a connection the test just closed is counted until its thread has seen the close (a
    moment later; longer on a loaded machine), and what is timed is how soon the store serves."""
    t0 = time.monotonic()
    while True:
        r = st.ombra("db", "list", check=False, timeout=seconds)
        if r.rc == 0 or "-1101" not in r.err or time.monotonic() - t0 > seconds:
            return r, time.monotonic() - t0
        time.sleep(0.05)


# ---- 4: out of descriptors, over the connection limit -----------------------------------------

@pytest.mark.parametrize("args", [(), ("--max-connections", "1000")],
                         ids=["default-limit", "limit-above-descriptors"])
@pytest.mark.slow_under_sanitizers
def test_out_of_descriptors_the_store_backs_off_logs_once_and_answers_again(hostile, args):
    # By default the connection limit keeps half the descriptors for the databases; set above
    # what the descriptors allow, accept() itself runs out.
    st = hostile(args=args, nofile=64)
    st.ombra("db", "new", "db1")
    log0 = len(st.log_text())
    cpu0 = cpu_seconds(st.proc.pid)
    t0 = time.monotonic()
    socks, failed = open_idle(st, 300, timeout=1.0)
    time.sleep(3)
    cpu = cpu_seconds(st.proc.pid) - cpu0
    wall = time.monotonic() - t0
    new_log = st.log_text()[log0:]
    # The connections refused for lack of descriptors were told why.
    refused = []
    for s in socks:
        r, _, _ = select.select([s], [], [], 0)
        if r:
            rep = reply_now(s, 1)
            if isinstance(rep, dict):
                refused.append(rep)
    for s in socks:
        s.close()
    print(f"{len(socks)} connected, {failed} connects failed, {len(refused)} refused; "
          f"cpu {cpu:.2f} s over {wall:.1f} s; {len(new_log)} bytes of log")
    accept_lines = [l for l in new_log.splitlines() if "accept" in l]
    assert len(accept_lines) <= 3, f"the accept errors flood the log:\n{new_log[:3000]}"
    assert len(new_log) < 20000, f"{len(new_log)} bytes of log in {wall:.0f} s"
    assert cpu < 0.25 * wall, f"the store used {cpu:.2f} s of CPU in {wall:.1f} s while idle"
    assert refused, "no connection over the limits was told why it was refused"
    why = "file descriptors" if args else "at most 32 connections"
    for rep in refused:
        assert rep["ok"] is False and rep["error"] == -1101, rep
        assert why in rep["message"], rep
    # Once the connections are gone, the store answers at once.
    r, took = timed_db_list(st)
    assert r.rc == 0, r.describe()
    assert took < 5, f"db list took {took:.1f} s after the connections closed"
    # The episode ends (one more line) once refusals have stopped for a few seconds.
    time.sleep(5.5)
    st.ombra("db", "list")
    assert "over after" in st.log_text()[log0:], "the end of the episode was not logged"


def test_over_the_connection_limit_a_client_gets_one_clear_refusal(hostile):
    st = hostile(args=("--max-connections", "8", "--frame-timeout-ms", "30000"))
    st.ombra("db", "new", "db1")
    # Eight connections in the middle of a message: none of them can make room. One refused
    # because the CLI's connection just closed was still counted (its thread ends a moment after
    # the close; seen under a loaded machine) is opened again: the test needs eight served.
    log0 = len(st.log_text())
    busy, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        more, failed = open_idle(st, 8 - len(busy))
        assert not failed
        for s in more:
            s.sendall(struct.pack("<I", 100) + b'{"op"')
        busy += more
        time.sleep(0.3)
        refused = [s for s in busy if select.select([s], [], [], 0)[0]]
        for s in refused:
            busy.remove(s)
            s.close()
        if not refused:
            break
    assert len(busy) == 8, "eight connections in the middle of a message could not be held"
    extra = []
    for _ in range(20):
        s = st.connect(timeout=10)
        extra.append(reply_now(s, 10))  # a refusal comes at once; the bound is for a loaded machine
        s.close()
    for rep in extra:
        assert isinstance(rep, dict), f"a connection over the limit got {rep!r}, not a refusal"
        assert rep["error"] == -1101 and "at most 8 connections" in rep["message"], rep
    r = st.ombra("db", "list", check=False, timeout=20)
    assert r.rc != 0 and "at most 8 connections" in r.err and "-1101" in r.err, r.describe()
    assert len(r.err.strip().splitlines()) == 1, r.describe()
    # Once an episode: the 21 refusals here, and the one the CLI's closing connection may have
    # caused while the eight were opened (its episode ends at the next connection served, and
    # under load the test may not see that refusal in time and keep the refused socket).
    new_log = st.log_text()[log0:]
    assert 1 <= new_log.count("the limit") <= 2, f"the refusals flood the log:\n{new_log}"
    for s in busy:
        s.close()
    r, took = timed_db_list(st)
    assert r.rc == 0 and took < 5, r.describe()


def test_at_the_limit_the_longest_idle_connection_makes_room(hostile):
    st = hostile(args=("--max-connections", "8"))
    st.ombra("db", "new", "db1")
    time.sleep(1.0)  # the CLI's connection is let go by its thread after the reply (a busy CI)
    idle, failed = open_idle(st, 8)
    assert not failed
    time.sleep(1.5)  # idle past OM_SERVER_EVICT_IDLE_MS
    for i in range(3):
        r, took = timed_db_list(st)
        assert r.rc == 0 and took < 5, r.describe()
        assert st.deliver("db1", "alice", f"Subject: {i}\n\nthrough a full store") > 0
    # The oldest idle connection was told why it was closed (one place was enough: the CLI's
    # connections end after their request).
    told = [reply_now(s, 0.5) for s in idle]
    closed = [rep for rep in told if isinstance(rep, dict)]
    # Usually one; more when a CLI connection came while the one before it was still counted
    # (its thread ends a moment after the close). The eight were opened within milliseconds of
    # each other: which of them is the longest idle is the store's to say.
    assert 1 <= len(closed) <= 6, told
    for rep in closed:
        assert rep["error"] == -1101 and "idle" in rep["message"], rep
        assert "at most 8 connections" in rep["message"], rep
    for s in idle:
        s.close()


# ---- 5: half-sent frames, silent connections, huge announced payloads -------------------------

def test_a_half_sent_frame_and_a_silent_connection_are_closed_after_their_timeouts(hostile):
    st = hostile(args=("--frame-timeout-ms", "1000", "--idle-timeout-ms", "2500"))
    cases = {
        "half a length": b"\x40\x00",
        "half a message": struct.pack("<I", 100) + b'{"op": "db.l',
        "a data frame that stops": frame({"op": "mail.deliver", "db": "x", "mailbox": "a",
                                          "data": 1000}) + struct.pack("<I", 1000) + b"x" * 10,
    }
    socks = {}
    t0 = time.monotonic()  # before the first byte: no timer of the store starts earlier
    for what, payload in cases.items():
        s = st.connect()
        s.sendall(payload)
        socks[what] = s
    silent = st.connect()
    for what, s in socks.items():
        took, rep = closed_within(s, 10)
        assert took is not None, f"{what}: the store kept the connection open for 10 s"
        took = time.monotonic() - t0
        assert 0.95 < took < 6, f"{what}: closed after {took:.1f} s, the bound is 1 s"
        assert rep and rep["error"] == -1022 and "not whole within" in rep["message"], (what, rep)
        s.close()
    took, rep = closed_within(silent, 10)
    assert took is not None, "a silent connection stayed open 10 s (idle bound 2.5 s)"
    took = time.monotonic() - t0
    assert 2.4 < took < 10, f"the silent connection was closed after {took:.1f} s"
    # A client that sends at a normal pace is not affected, and the daemon goes on.
    st.ombra("db", "new", "db1")
    assert st.deliver("db1", "alice", "Subject: after\n\nstill here") > 0


def test_announced_payloads_beyond_the_limit_are_refused_and_memory_stays_bounded(hostile):
    st = hostile(args=("--max-receive-mb", "64", "--frame-timeout-ms", "20000"))
    st.ombra("db", "new", "db1")
    pid = st.proc.pid
    rss0 = status_kib(pid, "VmRSS")
    req = {"op": "mail.deliver", "db": "db1", "mailbox": "alice"}

    # Larger than the whole budget: refused when announced, before anything is read or held.
    held = []
    for _ in range(4):
        s = st.connect()
        s.sendall(frame(dict(req, data=256 << 20)) + struct.pack("<I", 256 << 20))
        rep = reply_now(s, 5)
        assert isinstance(rep, dict), f"a 256 MiB announcement got {rep!r}, not a refusal"
        assert rep["error"] == -1011 and "limit is 64 MiB" in rep["message"], rep
        held.append(s)

    # Within it, but sent in part and then stalled: the budget caps what they hold together.
    part = 40 << 20
    refusals = 0
    for _ in range(4):
        s = st.connect()
        s.sendall(frame(dict(req, data=48 << 20)))
        rep = reply_now(s, 0.5)
        if isinstance(rep, dict):
            assert rep["error"] == -1011 and "limit is 64 MiB" in rep["message"], rep
            refusals += 1
            s.close()
            continue
        try:
            s.settimeout(20)
            s.sendall(struct.pack("<I", 48 << 20) + b"m" * part)
        except (BrokenPipeError, ConnectionResetError):
            refusals += 1
        held.append(s)
    time.sleep(0.5)
    grew = (status_kib(pid, "VmRSS") - rss0) >> 10
    print(f"RSS grew by {grew} MiB with {refusals} of 4 stalled 48 MiB messages refused")
    assert refusals >= 2, "more than the 64 MiB budget was taken in"
    # AddressSanitizer keeps freed memory in quarantine and pads every allocation
    bound = 160 if "asan" in os.environ.get("OMBRA_BUILD", "") else 90
    assert grew < bound, f"the store's RSS grew by {grew} MiB (budget 64 MiB)"
    # Deliveries of normal size go on while the stalled ones wait for their deadline.
    for s in held:
        s.close()
    time.sleep(0.3)
    assert st.deliver("db1", "alice", "Subject: small\n\nfits") > 0


# ---- 6: the announced data length read after its object was freed -----------------------------

def test_a_data_frame_shorter_than_announced_is_named_with_both_lengths(hostile):
    st = hostile()
    payload = frame({"op": "db.list", "data": 10}) + frame(b"abc")
    rep = st.raw(payload)
    assert rep and rep["ok"] is False, rep
    assert "3 bytes, 10 announced" in rep["message"], rep
    st.ombra("db", "list")


# ---- 4, 5 for ombra-vssd (the same server code) -----------------------------------------------

def unix_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def refused_over_the_limit(path, n, attempts=5):
    """n connections that stay silent, then one more, which the daemon (at its limit with them)
    refuses with one error frame. -> (that frame, the silent sockets, its socket, when the silent
    ones connected).

    What may pass in between on a loaded machine is made again (at most attempts times), each
    time only when the daemon's answer says why: a silent connection makes room for a newcomer
    once it has been silent a second (OM_SERVER_EVICT_IDLE_MS), so when a second passed before
    the one more was accepted, the daemon rightly closed the oldest and told it so; and a
    connection closed just before (the CLI's, the previous attempt's) may still be counted for a
    moment, so that a silent one is refused in the one more's place. Any other outcome fails at
    once, and so do attempts that all end that way."""
    seen = []
    for _ in range(attempts):
        silent = [unix_connect(path) for _ in range(n)]
        t_silent = time.monotonic()
        extra = unix_connect(path)
        rep = reply_now(extra, 30)
        if isinstance(rep, dict) and rep.get("error") == -1101 and "serves at most" in rep["message"]:
            return rep, silent, extra, t_silent
        told = [reply_now(x, 5) for x in silent]
        seen.append({"one more": rep, "silent ones": told})
        why = [t for t in told if isinstance(t, dict) and t.get("error") == -1101 and
               ("idle" in t["message"] or "serves at most" in t["message"])]
        assert why, f"the connection over the limit was neither refused nor made room for: {seen[-1]}"
        for x in silent + [extra]:
            x.close()
        time.sleep(1)
    raise AssertionError(f"{attempts} attempts, each overtaken by the machine's load: {seen}")


def test_the_shadow_copy_service_has_the_same_limits_and_keeps_its_writer(hostile, build_dir):
    """ombra-vssd has the store's limits: a half-sent frame is closed after the frame timeout,
    one connection over the limit is refused with one clear frame, silent connections are closed
    after the idle timeout, and the store's writer, silent all along, stays registered.

    Under load (two cores shared with other runs) every wait polls for what it waits for, with a
    deadline of tens of seconds; what proves a timeout is a lower bound (the daemon waited at
    least that long) and the daemon's own words (why it closed). The idle timeout is 3 s, not 1 s,
    so that the silent connections cannot time out while the limit is tried."""
    idle_s = 3
    st = hostile()
    log = open(st.tmp / "vssd.log", "w")
    vssd = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground",
                             "--max-connections", "4", "--idle-timeout-ms", str(idle_s * 1000),
                             "--frame-timeout-ms", "1000"],
                            env=daemon_env(st.env), stdout=log, stderr=subprocess.STDOUT)
    socks = []
    try:
        assert st.writer_registered(60), "the store's writer did not register"
        sock = str(st.run_dir / "vss.sock")
        half = unix_connect(sock)
        socks.append(half)
        half.sendall(b"\x10\x00")
        t0 = time.monotonic()
        took, rep = closed_within(half, 30)
        assert took is not None, "vssd kept a half-sent frame open 30 s (frame bound 1 s)"
        assert time.monotonic() - t0 >= 0.9, f"closed after {took:.2f} s, before the frame timeout"
        assert rep and "not whole within" in rep["message"], rep
        # The writer and three silent connections: the fifth is refused.
        rep, silent, extra, t_silent = refused_over_the_limit(sock, 3)
        socks += silent + [extra]
        assert "shadow copy service serves at most 4 connections" in rep["message"], rep
        # The silent ones go after the idle timeout, not before; the writer stays registered.
        for x in silent:
            took, _ = closed_within(x, 60)
            assert took is not None, f"a silent connection stayed open 60 s (idle bound {idle_s} s)"
            gone = time.monotonic() - t_silent
            assert gone >= idle_s - 0.1, f"a silent connection was closed after {gone:.2f} s"
        r = st.ombra("vss", "writers", "--json")
        assert any(w["connected"] for w in json.loads(r.out)["writers"]), r.out
    finally:
        for x in socks:
            x.close()
        vssd.terminate()
        vssd.wait(20)
        log.close()


# ---- 7: the runtime directory and the socket of another user ---------------------------------

@pytest.fixture
def open_tmp():
    """A temp directory in /tmp that nobody can traverse (pytest's own is root's only)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="ombra-h-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def one_line_refusal(argv, env, seconds=15):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds)
    return p.returncode, (p.stdout + p.stderr).strip()


@root_only
def test_a_squatted_runtime_directory_stops_the_daemons_with_one_line(build_dir, open_tmp):
    tmp_path = open_tmp
    for name in ("ombra-store", "ombra-vssd"):
        daemon = str(build_dir / "src/daemons" / name)
        for owner, mode, words in ((NOBODY, 0o777, "belongs to uid 65534"),
                                   (NOBODY, 0o700, "belongs to uid 65534"),
                                   (0, 0o777, "mode 0777"),
                                   (0, 0o775, "mode 0775")):
            run = tmp_path / f"run-{name}-{owner}-{mode:o}"
            run.mkdir()
            os.chown(run, owner, owner if owner else 0)
            os.chmod(run, mode)
            env = dict(os.environ, OMBRA_RUNTIME_DIR=str(run), OMBRA_HOME=str(tmp_path / "home"))
            try:
                rc, out = one_line_refusal([daemon, "--foreground"], env)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} started in {run} (owner {owner}, mode {mode:o})")
            assert rc != 0 and words in out and str(run) in out, (name, owner, mode, out)
            assert len(out.splitlines()) == 1, out
            assert not (run / "store.sock").exists() and not (run / "vss.sock").exists()


@root_only
def test_the_default_runtime_directory_of_a_user_cannot_be_squatted(build_dir, open_tmp):
    tmp_path = open_tmp
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    squat = pathlib.Path(f"/tmp/ombra-{NOBODY}")
    if squat.exists():
        pytest.skip(f"{squat} exists on this machine")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    env = {k: v for k, v in os.environ.items() if k not in ("OMBRA_RUNTIME_DIR", "XDG_RUNTIME_DIR")}
    env["OMBRA_HOME"] = str(home)
    as_nobody = ["setpriv", f"--reuid={NOBODY}", "--regid=nogroup", "--clear-groups"]
    daemon_uid = pwd.getpwnam("daemon").pw_uid
    try:
        squat.mkdir()
        os.chown(squat, daemon_uid, daemon_uid)  # another user was first
        os.chmod(squat, 0o777)
        rc, out = one_line_refusal(as_nobody + [str(build_dir / "src/daemons/ombra-store"),
                                                "--foreground"], env)
        assert rc != 0 and f"belongs to uid {daemon_uid}" in out and str(squat) in out, out
        assert len(out.splitlines()) == 1, out
        # The client of that user does not talk to what the squatter put there either.
        rc, out = one_line_refusal(as_nobody + [str(build_dir / "src/cli/ombra"), "db", "list"],
                                   env)
        assert rc != 0 and f"belongs to uid {daemon_uid}" in out, out
    finally:
        shutil.rmtree(squat, ignore_errors=True)
    # Made by the daemon itself: its user's only (0700).
    p = subprocess.Popen(as_nobody + [str(build_dir / "src/daemons/ombra-store"), "--foreground"],
                         env=daemon_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if (squat / "store.sock").exists():
                break
            time.sleep(0.05)
        assert (squat / "store.sock").exists(), p.stdout.read1().decode(errors="replace")
        st = os.stat(squat)
        assert st.st_uid == NOBODY and st.st_mode & 0o777 == 0o700, oct(st.st_mode)
    finally:
        p.terminate()
        p.wait(20)
        shutil.rmtree(squat, ignore_errors=True)


FAKE_DAEMON = r"""
import json, os, socket, struct, sys
path, seen = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
print("ready", flush=True)
s.settimeout(15)
got = 0
try:
    while True:
        c, _ = s.accept()
        c.settimeout(2)
        try:
            h = c.recv(4, socket.MSG_WAITALL)
            got += len(h)
            if len(h) == 4:
                got += len(c.recv(struct.unpack("<I", h)[0], socket.MSG_WAITALL))
        except OSError:
            pass
        # Whole or absent: the test reads it while this process may still be writing it.
        with open(seen + ".tmp", "w") as f:
            f.write(str(got))
        os.rename(seen + ".tmp", seen)
        body = json.dumps({"ok": True, "databases": [{"name": "FAKE-DB", "mounted": True}]}).encode()
        c.sendall(struct.pack("<I", len(body)) + body)
        c.close()
except OSError:
    pass
"""


def fake_daemon(argv_prefix, path, seen):
    p = subprocess.Popen(argv_prefix + [sys.executable, "-c", FAKE_DAEMON, str(path), str(seen)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


@root_only
def test_the_client_refuses_a_socket_or_daemon_of_another_user(build_dir, open_tmp):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    tmp_path = open_tmp
    cli = str(build_dir / "src/cli/ombra")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", "--regid=nogroup", "--clear-groups"]

    def client(run):
        env = dict(os.environ, OMBRA_RUNTIME_DIR=str(run), OMBRA_HOME=str(tmp_path / "home"))
        return one_line_refusal([cli, "db", "list"], env)

    # A runtime directory of another user, with that user's daemon in it.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    seen = theirs / "seen"  # what the fake daemon received, written as nobody
    fake = fake_daemon(as_nobody, theirs / "store.sock", seen)
    try:
        rc, out = client(theirs)
        assert rc != 0 and "FAKE-DB" not in out, out
        assert "belongs to uid 65534" in out and len(out.splitlines()) == 1, out
        assert not seen.exists(), "the client connected to the other user's daemon"

        # The same daemon's socket moved into a directory of root's and given to root: the
        # process at the other end still runs as nobody (SO_PEERCRED).
        ours = tmp_path / "ours"
        ours.mkdir(mode=0o700)
        os.rename(theirs / "store.sock", ours / "store.sock")
        os.chown(ours / "store.sock", 0, 0)
        rc, out = client(ours)
        assert rc != 0 and "FAKE-DB" not in out, out
        assert "runs as uid 65534" in out and len(out.splitlines()) == 1, out
        assert not seen.exists() or seen.read_text() == "0", "the client sent its request"
    finally:
        fake.kill()
        fake.wait()

    # A socket file of another user in root's directory: refused before connecting.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    seen = tmp_path / "seen"
    fake = fake_daemon([], mine / "store.sock", seen)
    try:
        os.chown(mine / "store.sock", NOBODY, NOBODY)
        rc, out = client(mine)
        assert rc != 0 and "FAKE-DB" not in out, out
        assert "socket" in out and "belongs to uid 65534" in out, out
        assert not seen.exists(), "the client connected to a socket of another user"
    finally:
        fake.kill()
        fake.wait()


def test_the_runtime_directory_is_made_for_the_daemon_alone(store):
    st = os.stat(store.run_dir)
    assert st.st_mode & 0o777 == 0o700, oct(st.st_mode)


@root_only
def test_the_operations_of_the_servers_services_are_refused_to_the_members_of_the_group(hostile):
    """A member of --group acts on databases and mail, but a copy's position (which commits are
    acknowledged under --sync-copies), the replication floor (which logs may go) and a DAG join
    (which etcd the store trusts) come from this server's own services only."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    st = hostile(args=("--group", "nogroup"))
    os.chmod(st.tmp, 0o755)
    st.ombra("db", "new", "db1")
    code = (
        "import json, socket, struct, sys\n"
        "out = []\n"
        "for req in json.loads(sys.argv[2]):\n"
        "    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "    b = json.dumps(req).encode(); s.sendall(struct.pack('<I', len(b)) + b)\n"
        "    n = struct.unpack('<I', s.recv(4, socket.MSG_WAITALL))[0]\n"
        "    out.append(json.loads(s.recv(n, socket.MSG_WAITALL))); s.close()\n"
        "print(json.dumps(out))\n")
    reqs = [{"op": "db.list"},
            {"op": "db.sync_position", "db": "db1", "id": "x", "server": "b", "gen": 9, "len": 9},
            {"op": "db.replication_floor", "db": "db1", "id": "x", "floor": 1, "hold_s": 1},
            {"op": "dag.join", "etcd": "http://127.0.0.1:1", "dag": "evil", "check_only": True}]
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", "--regid=nogroup", "--clear-groups",
                        sys.executable, "-c", code, str(st.sock), json.dumps(reqs)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    listed, *services = json.loads(p.stdout)
    assert listed.get("ok") is True, listed  # the group is admitted
    for req, rep in zip(reqs[1:], services):
        assert rep.get("ok") is False and "for this server's services" in rep.get("message", ""), \
            (req["op"], rep)
