"""Checking an installed tree's systemd units without systemd running (it is not PID 1 on the
test machines): `systemd-analyze verify --root` over the tree, and the daemons started with the
command line their unit's ExecStart gives. Used by test_units.py (a `meson install` into a temp
directory) and test_package.py (the .deb unpacked into one)."""
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import daemon_env

UNITS = ("ombra-store.service", "ombra-vssd.service", "ombra-repld.service",
         "ombra-backup@.service")
HOST_UNITS = pathlib.Path("/lib/systemd/system")


def need_systemd_analyze():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")


def find_units(root):
    """{unit name: path} of Ombra's units under root (wherever the install put them)."""
    found = {}
    for name in UNITS:
        paths = [p for p in pathlib.Path(root).rglob(name) if "systemd/system" in str(p)]
        assert paths, f"{name} is not installed under {root}"
        found[name] = paths[0]
    return found


def prepare_root(root):
    """Gives root the host's own units (sysinit.target, basic.target...): verify resolves the
    implicit dependencies of a service inside the root, and a real system has them."""
    dst = pathlib.Path(root) / "lib/systemd/system"
    dst.mkdir(parents=True, exist_ok=True)
    for p in HOST_UNITS.iterdir():
        q = dst / p.name
        if not q.exists() and not q.is_symlink() and p.is_file() and not p.is_symlink():
            shutil.copy2(p, q)


def verify(root, units, manpath):
    """systemd-analyze verify --root over units (paths inside root), with man looking in the
    tree's own pages for each Documentation=man:... Returns (rc, everything it printed): a unit
    with an unknown key or a bad value still exits 0, so the output must be empty too."""
    env = dict(os.environ, MANPATH=str(manpath), SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="")
    p = subprocess.run(["systemd-analyze", "verify", f"--root={root}"] + [str(u) for u in units],
                       capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, (p.stdout + p.stderr).strip()


def exec_start(unit):
    """The argv of the unit's ExecStart= (the last one: a drop-in convention)."""
    argv = None
    for line in pathlib.Path(unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line[len("ExecStart="):])
    assert argv, f"{unit} has no ExecStart="
    return argv


class NotifySocket:
    """The datagram socket systemd gives a Type=notify service as $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages = []

    def poll(self):
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode(errors="replace"))
        except (socket.timeout, BlockingIOError):
            pass
        return any("READY=1" in m.split("\n") for m in self.messages)

    def close(self):
        self.sock.close()


def sends_ready(binary):
    """Whether the daemon was built with sd_notify's READY=1 (the daemons' part of issue 20)."""
    return b"READY=1" in pathlib.Path(binary).read_bytes()


def run_like_unit(argv, tmp, sock_name, config, seconds=15):
    """Starts argv as its unit would (systemd's RuntimeDirectory= and StateDirectory= played by
    OMBRA_RUNTIME_DIR and OMBRA_HOME in tmp, a NOTIFY_SOCKET, and the tree's configuration file
    as OMBRA_CONFIG in place of /etc/ombra/ombra.conf: the one installed must be one the daemons
    accept, and the machine's own is none of the test's business), waits until its socket
    accepts (and, when the daemon sends it, READY=1), stops it with SIGTERM as systemctl stop
    does. Returns (exit code, its output, READY=1 seen)."""
    tmp = pathlib.Path(tmp)
    run, home = tmp / "run", tmp / "home"
    run.mkdir(mode=0o755)
    home.mkdir(mode=0o750)
    notify = NotifySocket(tmp / "notify")
    log = tmp / (pathlib.Path(argv[0]).name + ".log")
    env = daemon_env(dict(os.environ, OMBRA_RUNTIME_DIR=str(run), OMBRA_HOME=str(home),
                          NOTIFY_SOCKET=notify.path, OMBRA_CONFIG=str(config)))
    with open(log, "wb") as f:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT)
    ready = False
    try:
        deadline = time.monotonic() + seconds
        want_ready = sends_ready(argv[0])
        while True:
            assert p.poll() is None, (f"{argv} exited {p.returncode} at start:\n"
                                      f"{log.read_text(errors='replace')}")
            ready = notify.poll() or ready
            if accepts(run / sock_name) and (ready or not want_ready):
                break
            assert time.monotonic() < deadline, (
                f"{argv}: {run / sock_name} not accepting (or no READY=1: {notify.messages}) "
                f"{seconds} s after start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        notify.close()
    return rc, log.read_text(errors="replace"), ready


def accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
