"""What the benchmark scripts share: running a command and timing it, the table's number format,
medians and ratios, the --build option and its check, the store's daemons of one build in a
temporary home, one vss_requester run, and the result file's stamp. The scripts run as
`python3 bench/X.py` and import this by their own directory (Python puts it first on sys.path)."""
import argparse
import json
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MSG = 8000  # bytes per message of `ombra mail load`
GEN = 1 << 20  # an Ombra log generation
PG_BIN = "/usr/lib/postgresql/15/bin"
TOOLS = ("src/cli/ombra", "src/daemons/ombra-store", "src/daemons/ombra-vssd")


def sh(cmd, env=None):
    """Runs a shell command; (its seconds, its stdout), or RuntimeError with the tail of its
    stderr (or stdout when stderr is empty)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{cmd}: {(p.stderr or p.stdout).strip()[-1500:]}")
    return time.monotonic() - t0, p.stdout


def median(v):
    """The median of the values that are not None, or None."""
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, nd=0):
    """A table cell: '-' for None, a string as it is, a number with thousands separators."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{nd}f}"


def parser(doc):
    """The scripts' argument parser: the docstring as help, and --build (default build-release,
    or $BUILD_RELEASE)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("BUILD_RELEASE", f"{ROOT}/build-release"))
    return ap


def need_build(build, script, tools=TOOLS):
    """Exits with one line naming the first of the build's programs that is missing."""
    for f in tools:
        if not os.access(f"{build}/{f}", os.X_OK):
            raise SystemExit(f"{script}: {build}/{f} is missing: build first (--build DIR)")


def ombra_env(tmp, **extra):
    """The environment of daemons and CLI living in tmp (run/ and home/)."""
    return dict(os.environ, OMBRA_RUNTIME_DIR=f"{tmp}/run", OMBRA_HOME=f"{tmp}/home", **extra)


def daemon(build, name, env, out, *args):
    return subprocess.Popen([f"{build}/src/daemons/{name}", "--foreground", *args], env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def store_daemons(build, env, out, vssd_args=()):
    """ombra-vssd and ombra-store (server srv1) of the build, both writing to out."""
    return [daemon(build, "ombra-vssd", env, out, *vssd_args),
            daemon(build, "ombra-store", env, out, "--server", "srv1")]


def wait_sockets(run_dir, tries=100):
    """Until the store's and the VSS service's sockets exist (at most tries * 50 ms), then 0.3 s."""
    for _ in range(tries):
        if os.path.exists(f"{run_dir}/store.sock") and os.path.exists(f"{run_dir}/vss.sock"):
            break
        time.sleep(0.05)
    time.sleep(0.3)


def stop_all(procs, timeout=60):
    """Terminates them all, then waits for each (killed after timeout seconds)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def vss_requester(build, env, kind, provider, component, timeout):
    """One tests/tools/vss_requester run; its result (the last line of its output, JSON)."""
    p = subprocess.run([f"{build}/tests/tools/vss_requester", "--type", kind, "--provider", provider,
                        "--component", component], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(p.stderr.strip())
    return json.loads(p.stdout.strip().splitlines()[-1])


def fstype(path):
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout.strip()


def disk_counters(path):
    """What the block device under path has done since boot (/proc/diskstats): bytes written,
    bytes discarded, flushes, and the milliseconds it had a request in flight (busy); None where
    the device is not listed (tmpfs, an overlay)."""
    st = os.stat(path)
    dev = (os.major(st.st_dev), os.minor(st.st_dev))
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                v = line.split()
                if (int(v[0]), int(v[1])) == dev:
                    n = [int(x) for x in v[3:]]
                    return {"written": n[6] * 512, "discarded": n[13] * 512 if len(n) > 13 else 0,
                            "flushes": n[15] if len(n) > 15 else 0, "busy_ms": n[9]}
    except OSError:
        pass
    return None


def disk_delta(a, b):
    """b - a of disk_counters: MB written and discarded, flushes, busy_s (seconds the device had a
    request in flight); None when either is None."""
    if a is None or b is None:
        return None
    return {"written": (b["written"] - a["written"]) / 1e6, "discarded": (b["discarded"] - a["discarded"]) / 1e6,
            "flushes": b["flushes"] - a["flushes"], "busy_s": (b["busy_ms"] - a["busy_ms"]) / 1e3}


def utc_stamp():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
