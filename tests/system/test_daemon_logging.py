"""The daemons under systemd and on their own: sd_notify's READY=1 only once ombra-store answers
with its databases mounted (ombra-vssd: once its socket answers), STOPPING=1 at SIGTERM (a NOTIFY_SOCKET the test listens on, as
systemd's for a Type=notify unit); records in journald's native protocol with PRIORITY,
SYSLOG_IDENTIFIER and OMBRA_DATABASE/OMBRA_SESSION when stderr is the journal's stream (a socket
the test listens on in place of journald's); log file lines with ISO 8601 UTC timestamps, the file
reopened at its path on SIGHUP after logrotate renamed it; a detached daemon logging to its file;
--version of the three daemons; wrong logging options refused in one line."""
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

import pytest

from conftest import ROOT, Store, daemon_env, start_vssd, stop_process

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ombra-store\[(\d+)\] "
                  r"(debug|info|warning|error): ")


class Datagrams:
    """A Unix datagram socket bound at path: what systemd's notify socket and journald's socket
    are."""

    def __init__(self, path):
        self.path = str(path)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)

    def recv(self, seconds):
        """The next datagram (bytes), None after seconds without one."""
        self.s.settimeout(seconds)
        try:
            return self.s.recv(1 << 20)
        except socket.timeout:
            return None

    def close(self):
        self.s.close()


def reopened_in_time(path, seconds=30):
    """Whether the daemon's SIGHUP made a new file at path with its line in it, within seconds.
    The file is made by the open, before the line is written into it: both are waited for."""
    end = time.monotonic() + seconds
    seen = lambda: path.exists() and "SIGHUP received: log file reopened" in path.read_text()
    while time.monotonic() < end and not seen():
        time.sleep(0.02)
    return seen()


def notify_vars(d):
    """sd_notify's datagram: {VAR: value}."""
    return dict(line.split("=", 1) for line in d.decode().split("\n") if "=" in line)


def journal_fields(d):
    """A record in journald's native protocol: {KEY: value} ("KEY=value\\n", or "KEY\\n", the
    value's length as 64-bit little-endian, the value, "\\n")."""
    out, i = {}, 0
    while i < len(d):
        nl = d.index(b"\n", i)
        eq = d.find(b"=", i, nl)
        if eq >= 0:
            out[d[i:eq].decode()] = d[eq + 1:nl].decode()
            i = nl + 1
        else:
            key = d[i:nl].decode()
            (n,) = struct.unpack("<Q", d[nl + 1:nl + 9])
            out[key] = d[nl + 9:nl + 9 + n].decode()
            assert d[nl + 9 + n:nl + 10 + n] == b"\n", "a binary field ends with a newline"
            i = nl + 10 + n
    return out


class LoggedStore(Store):
    """The conftest's store, started with more arguments; journal=True makes its stderr the
    journal's stream ($JOURNAL_STREAM names the device and inode of the file it goes to)."""

    def __init__(self, build_dir, tmp, args=(), journal=False):
        super().__init__(build_dir, tmp)
        self.args = list(args)
        self.journal = journal

    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "the store already runs"
        self.starts += 1
        log = self.tmp / f"store-{self.starts}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            if self.journal:
                st = os.fstat(f.fileno())
                self.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            self.proc = subprocess.Popen([str(self.daemon), "--foreground", "--server", self.server,
                                          *self.args],
                                         env=daemon_env(self.env), stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self.proc


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="ombra-lg-", dir="/tmp")  # short: Unix socket paths
    yield pathlib.Path(d)
    if not os.environ.get("OMBRA_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def stores():
    """Stops (SIGTERM, then SIGKILL) every store and vssd a test appends."""
    procs = []
    yield procs
    for p in procs:
        stop_process(p)


def test_ready_comes_once_the_store_answers_with_its_databases_mounted_and_stopping_at_sigterm(
        build_dir, tmp, stores):
    st = LoggedStore(build_dir, tmp)
    stores.append(st.start())
    st.ombra("db", "new", "db1")
    st.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "300", "--size", "4000",
             "--seed", "1")
    st.kill9()  # db1 recovers (replays its logs) at the next start: startup work to wait for
    notify = Datagrams(tmp / "notify")
    st.env["NOTIFY_SOCKET"] = notify.path
    stores.append(st.start(wait=False))
    first = notify.recv(30)
    assert first is not None, f"no sd_notify datagram in 30 s:\n{st.stderr()}"
    log_at_ready = st.stderr(run=2)  # at once: the mount is logged before READY=1 is sent
    ready = notify_vars(first)
    assert ready.get("READY") == "1", first
    # at READY=1 db1 (marked mounted, left dirty) is recovered and mounted, the socket answers
    assert "mounted db1" in log_at_ready and "after replaying its logs" in log_at_ready, \
        log_at_ready
    assert st.accepts(), "READY=1 came before store.sock accepted"
    assert st.db_show("db1")["mounted"] is True
    assert ready.get("STATUS") == "server srv1: 1 databases mounted", ready
    assert notify.recv(0.5) is None, "one READY=1, nothing else while it runs"
    st.proc.send_signal(signal.SIGTERM)
    stopping = notify.recv(20)
    assert stopping is not None and notify_vars(stopping).get("STOPPING") == "1", stopping
    assert notify_vars(stopping).get("STATUS") == "stopping (SIGTERM)"
    assert st.proc.wait(20) == 0
    notify.close()


def test_vssd_says_ready_once_its_socket_answers_and_stopping_at_sigterm(build_dir, tmp):
    notify = Datagrams(tmp / "notify")
    env = dict(os.environ, OMBRA_HOME=str(tmp / "home"), OMBRA_RUNTIME_DIR=str(tmp / "run"),
               NOTIFY_SOCKET=notify.path)
    p = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground"],
                         env=daemon_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        ready = notify.recv(30)
        assert ready is not None and notify_vars(ready).get("READY") == "1", ready
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(tmp / "run" / "vss.sock"))  # answers at READY=1
        s.close()
        p.send_signal(signal.SIGHUP)  # nothing to reopen on stderr: it goes on
        p.send_signal(signal.SIGTERM)
        stopping = notify.recv(20)
        assert stopping is not None and notify_vars(stopping).get("STOPPING") == "1", stopping
        assert p.wait(20) == 0
        assert "SIGHUP received: logging to stderr, no file to reopen" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        notify.close()


def test_without_notify_socket_the_store_runs_as_before(build_dir, tmp, stores):
    st = LoggedStore(build_dir, tmp)
    st.env.pop("NOTIFY_SOCKET", None)
    stores.append(st.start())
    st.ombra("db", "new", "db1")
    assert st.stop() == 0
    assert "sd_notify" not in st.stderr()


def test_a_warning_about_a_database_reaches_the_journal_with_priority_and_fields(build_dir, tmp,
                                                                               stores):
    journal = Datagrams(tmp / "journal")
    st = LoggedStore(build_dir, tmp, journal=True)
    st.env["OMBRA_JOURNAL_SOCKET"] = journal.path
    stores.append(st.start())
    stores.append(start_vssd(st, build_dir))
    st.ombra("db", "new", "db1")
    st.ombra("mail", "load", "db1", "--mailboxes", "4", "--messages", "1200", "--size", "8000",
             "--seed", "1")
    repo = tmp / "repo"
    st.ombra("repo", "init", repo)
    # The backup is killed after BackupComplete, before it said it stored the set: the store
    # warns that it truncates none of db1's logs.
    p = subprocess.Popen([str(st.cli), "backup", "--repo", str(repo), "--type", "full", "db1"],
                         env=dict(st.env, OMBRA_BACKUP_PAUSE="completed"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.startswith("paused completed"), line + p.stderr.read()
    p.kill()
    p.wait()
    records, warning = [], None
    end = time.monotonic() + 30
    while warning is None and time.monotonic() < end:
        d = journal.recv(1)
        if d is None:
            continue
        f = journal_fields(d)
        records.append(f)
        if f.get("PRIORITY") == "4" and "no log is truncated" in f.get("MESSAGE", ""):
            warning = f
    assert warning is not None, f"no such warning in the journal: {records}\n{st.stderr()}"
    assert warning["SYSLOG_IDENTIFIER"] == "ombra-store"
    assert warning["OMBRA_DATABASE"] == "db1"
    assert warning["OMBRA_SESSION"] and f"(session {warning['OMBRA_SESSION']})" in warning["MESSAGE"]
    assert warning["MESSAGE"].startswith("the requester did not say it stored the full backup of "
                                         "db1 (session ")
    # info records too, with their own priority and fields
    created = [r for r in records if r["MESSAGE"].startswith("created database db1")]
    assert created and created[0]["PRIORITY"] == "6" and created[0]["OMBRA_DATABASE"] == "db1"
    # the journal has them, stderr (the journal's stream) does not repeat them
    assert "no log is truncated" not in st.stderr()
    journal.close()


def test_a_refusing_journal_leaves_the_lines_on_stderr(build_dir, tmp, stores):
    st = LoggedStore(build_dir, tmp, args=["--log-target", "journal"])
    st.env["OMBRA_JOURNAL_SOCKET"] = str(tmp / "nobody-listens")
    stores.append(st.start())
    st.ombra("db", "new", "db1")
    assert st.stop() == 0
    lines = st.stderr(run=1).splitlines()[1:]
    created = [ln for ln in lines if "created database db1" in ln]
    assert created and LINE.match(created[0]), lines


def test_log_file_lines_carry_iso_timestamps_and_sighup_reopens_the_file(build_dir, tmp, stores):
    path = tmp / "log" / "store.log"
    path.parent.mkdir()
    st = LoggedStore(build_dir, tmp, args=["--log-file", path])
    stores.append(st.start())
    st.ombra("db", "new", "db1")
    lines = path.read_text().splitlines()
    assert lines and all(LINE.match(ln) for ln in lines), lines
    assert {LINE.match(ln).group(1) for ln in lines} == {str(st.proc.pid)}
    assert any(re.search(r" info: created database db1 at ", ln) for ln in lines)
    assert "created database" not in st.stderr(), "the file has the log, not stderr"
    # logrotate: rename, then SIGHUP
    rotated = path.with_name("store.log.1")
    path.rename(rotated)
    st.ombra("db", "new", "db2")  # still into the renamed file
    st.proc.send_signal(signal.SIGHUP)
    assert reopened_in_time(path), f"no new file at {path} after SIGHUP:\n{st.stderr()}"
    st.ombra("db", "new", "db3")
    new, old = path.read_text(), rotated.read_text()
    assert "created database db3" in new and "created database db3" not in old
    assert "created database db2" in old and "created database db2" not in new
    assert all(LINE.match(ln) for ln in new.splitlines())
    assert st.proc.poll() is None, "SIGHUP did not stop the daemon"
    assert st.stop() == 0
    assert "SIGTERM received: shutting down" in path.read_text()


def test_a_detached_store_logs_to_its_file_with_timestamps(build_dir, tmp):
    home, run = tmp / "home", tmp / "run"
    env = dict(os.environ, OMBRA_HOME=str(home), OMBRA_RUNTIME_DIR=str(run))
    r = subprocess.run([str(build_dir / "src/daemons/ombra-store"), "--server", "srv1"],
                       env=daemon_env(env), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log = home / "ombra-store.log"
    end = time.monotonic() + 10
    while time.monotonic() < end and "listening on" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    text = log.read_text()
    lines = text.splitlines()
    assert lines and all(LINE.match(ln) for ln in lines), text
    pid = int(LINE.match(lines[0]).group(1))
    try:
        rotated = log.with_name("ombra-store.log.1")
        log.rename(rotated)
        os.kill(pid, signal.SIGHUP)
        assert reopened_in_time(log), log.read_text() if log.exists() else "no new log file"
    finally:
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 20
        while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the detached store did not stop at SIGTERM"
    assert "stopped" in log.read_text()


def test_version_of_the_three_daemons(build_dir):
    version = re.search(r"version\s*:\s*'([^']+)'", (ROOT / "meson.build").read_text()).group(1)
    for d in ("ombra-store", "ombra-vssd", "ombra-repld"):
        r = subprocess.run([str(build_dir / "src/daemons" / d), "--version"], capture_output=True,
                           text=True, timeout=10)
        assert (r.returncode, r.stdout, r.stderr) == (0, f"{d} {version}\n", ""), d


@pytest.mark.parametrize("args,says", [
    (["--log-level", "loud"], "ombra-store: --log-level: log level 'loud': debug, info, warning "
                              "or error"),
    (["--log-target", "syslog"], "ombra-store: --log-target: log target 'syslog': auto, "
                                 "journal, file or stderr"),
    (["--log-file"], "ombra-store: --log-file: a value is missing"),
])
def test_wrong_logging_options_are_refused_in_one_line(build_dir, tmp, args, says):
    r = subprocess.run([str(build_dir / "src/daemons/ombra-store"), "--foreground", *args],
                       env=dict(os.environ, OMBRA_HOME=str(tmp / "h"), OMBRA_RUNTIME_DIR=str(tmp / "r")),
                       capture_output=True, text=True, timeout=10)
    assert (r.returncode, r.stderr) == (2, says + "\n")


def test_a_log_file_that_cannot_be_opened_is_said_before_detaching(build_dir, tmp):
    r = subprocess.run([str(build_dir / "src/daemons/ombra-store"), "--log-file",
                        str(tmp / "no" / "such" / "dir.log")],
                       env=dict(os.environ, OMBRA_HOME=str(tmp / "h"), OMBRA_RUNTIME_DIR=str(tmp / "r")),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "opening the log file" in r.stderr and "no/such/dir.log" in r.stderr
    assert not (tmp / "r" / "store.sock").exists()


def fill(path):
    """Fills the receive queue of the datagram socket at path (which nobody reads), as a stalled
    journald's: datagrams from fresh sockets until one that has sent nothing yet is refused (a
    sender's own buffer may fill before the reader's queue does)."""
    senders = []
    for _ in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setblocking(False)
        senders.append(s)
        try:
            s.sendto(b"MESSAGE=filler\n", path)
        except BlockingIOError:
            break
        try:
            while True:
                s.sendto(b"MESSAGE=filler\n", path)
        except BlockingIOError:
            pass
    else:
        pytest.fail(f"the queue of {path} never filled")
    for s in senders:
        s.close()


@pytest.mark.slow_under_sanitizers  # waits out a stalled journal: make test-long
def test_a_stalled_journal_does_not_stall_the_store_and_sigterm_stops_it(build_dir, tmp, stores):
    journal = Datagrams(tmp / "journal")  # bound, never read: journald stalled
    st = LoggedStore(build_dir, tmp, args=["--log-target", "journal"])
    st.env["OMBRA_JOURNAL_SOCKET"] = journal.path
    stores.append(st.start())
    fill(journal.path)
    for i in range(40):  # each logs "created database dbN"
        try:
            st.ombra("db", "new", f"db{i}", timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ombra db new db{i} got no answer in 30 s: the store waits for the "
                        f"journal\n{st.stderr()}")
    # what the journal did not take is on stderr, as lines
    lines = [ln for ln in st.stderr(run=1, tail=10 ** 6).splitlines() if LINE.match(ln)]
    assert any("created database db39 at" in ln for ln in lines), st.stderr()
    st.proc.send_signal(signal.SIGTERM)
    try:  # what is guarded against is a store that never stops; 40 databases close first
        assert st.proc.wait(30) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"the store did not stop 30 s after SIGTERM with the journal stalled\n"
                    f"{st.stderr()}")
    assert "SIGTERM received: shutting down" in st.stderr(run=1)
    journal.close()


def test_a_link_planted_at_the_log_file_is_refused_at_start(build_dir, tmp):
    target = tmp / "precious"
    target.write_text("precious\n")
    logdir = tmp / "log"
    logdir.mkdir()
    link = logdir / "store.log"
    link.symlink_to(target)
    for fg in (["--foreground"], []):  # detached too: said before detaching
        r = subprocess.run([str(build_dir / "src/daemons/ombra-store"), *fg, "--log-file",
                            str(link)],
                           env=daemon_env(dict(os.environ, OMBRA_HOME=str(tmp / "h"),
                                               OMBRA_RUNTIME_DIR=str(tmp / "r"),
                                               OMBRA_CONFIG="/dev/null")),
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"ombra-store: opening the log file {link}: it is a symbolic "
                                   f"link"), r.stderr
        assert target.read_text() == "precious\n"
        assert not (tmp / "r" / "store.sock").exists()


def test_a_link_planted_at_the_log_file_before_sighup_is_refused_and_the_old_file_kept(
        build_dir, tmp, stores):
    target = tmp / "precious"
    target.write_text("precious\n")
    path = tmp / "log" / "store.log"
    path.parent.mkdir()
    st = LoggedStore(build_dir, tmp, args=["--log-file", path])
    stores.append(st.start())
    st.ombra("db", "new", "db1")
    rotated = path.with_name("store.log.1")
    path.rename(rotated)
    path.symlink_to(target)  # planted between logrotate's rename and its SIGHUP
    st.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while "SIGHUP received" not in rotated.read_text() and time.monotonic() < end:
        time.sleep(0.02)
    st.ombra("db", "new", "db2")
    old = rotated.read_text()
    assert re.search(rf" error: SIGHUP received: reopening the log file {re.escape(str(path))}: "
                     r"it is a symbolic link .*\(still writing to the old one\)", old), old
    assert "created database db2" in old  # the daemon goes on, in the file it had
    assert target.read_text() == "precious\n"
    assert path.is_symlink()
    assert st.proc.poll() is None
    # the link removed, the next SIGHUP opens a new file at the path again
    path.unlink()
    st.proc.send_signal(signal.SIGHUP)
    assert reopened_in_time(path), path.read_text() if path.exists() else "no new log file"
    assert st.stop() == 0


def test_a_relative_log_file_stays_in_the_start_directory_of_a_detached_store(build_dir, tmp):
    home, run, work = tmp / "home", tmp / "run", tmp / "work"
    work.mkdir()
    name = f"rel-{os.getpid()}-{tmp.name}.log"  # unique: were it reopened in /, it is seen there
    env = dict(os.environ, OMBRA_HOME=str(home), OMBRA_RUNTIME_DIR=str(run),
               OMBRA_CONFIG="/dev/null")
    r = subprocess.run([str(build_dir / "src/daemons/ombra-store"), "--server", "srv1",
                        "--log-file", name], cwd=work, env=daemon_env(env), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log = work / name
    end = time.monotonic() + 10
    while time.monotonic() < end and "listening on" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert lines and LINE.match(lines[0]), lines
    pid = int(LINE.match(lines[0]).group(1))
    try:
        rotated = log.with_name(name + ".1")
        log.rename(rotated)
        os.kill(pid, signal.SIGHUP)
        end = time.monotonic() + 10
        while time.monotonic() < end and "SIGHUP received" not in rotated.read_text() + (
                log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        assert log.exists(), (f"no new {log} after SIGHUP (in / instead: "
                              f"{os.path.exists('/' + name)}):\n{rotated.read_text()}")
        assert "SIGHUP received: log file reopened" in log.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 20
        while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        if os.path.exists("/" + name):
            os.unlink("/" + name)
    assert not os.path.exists(f"/proc/{pid}"), "the detached store did not stop at SIGTERM"
