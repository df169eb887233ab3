"""ombra check and ombra metrics (issue 20, health and monitoring): check is OK on a healthy
server and fails, with the line that says why, for each thing it checks; metrics, parsed by
Prometheus' own parser, carry the values of a known sequence of backups, on stdout and over
HTTP, and the endpoint survives garbage."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Paused

OK, WARNING, CRITICAL = 0, 1, 2


def check(store, *args):
    return store.ombra("check", *args, check=False)


def lines(r, status):
    """The check lines of one status (the first line is the summary)."""
    return [l for l in r.out.splitlines()[1:] if l.startswith(status + " ")]


def has_line(r, status, pattern):
    return any(re.search(pattern, l) for l in lines(r, status))


def backup(store, repo, kind, db="db1", check=True):
    r = store.ombra("backup", "--repo", repo, "--type", kind, "--json", db, check=check)
    return json.loads(r.out) if r.rc == 0 else r


def sets_of(store, repo):
    o = store.json("backups", "list", "--repo", repo)
    return o if isinstance(o, list) else o["sets"]


@pytest.fixture
def backed_up(store, vssd, repo):
    """db1 with a full and an incremental backup in repo."""
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "50", "--size", "2000")
    backup(store, repo, "full")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "20", "--size", "2000",
                "--seed", "2")
    backup(store, repo, "incremental")
    return repo


# ---- ombra check ----------------------------------------------------------------------------

def test_check_ok_on_a_healthy_server(store, backed_up):
    r = check(store, "--repo", backed_up)
    assert r.rc == OK, r.describe()
    assert r.out.splitlines()[0].startswith("OMBRA OK"), r.describe()
    for name in ("ombra-store", "ombra-vssd", "writer Ombra Store Writer", "repository",
                 "db1 full backup", "db1 incremental backup", "db1 last full run",
                 "db1 last incremental run", "log disk"):
        assert has_line(r, "OK", "^OK +" + re.escape(name)), f"no OK line for {name}:\n{r.out}"
    assert not lines(r, "WARNING") and not lines(r, "CRITICAL"), r.describe()
    # The same as one JSON document, a check per entry.
    j = json.loads(check(store, "--repo", backed_up, "--json").out)
    assert j["status"] == "OK" and j["exit"] == 0
    assert {c["status"] for c in j["checks"]} == {"OK"}
    full = next(c for c in j["checks"] if c["check"] == "db1 full backup")
    assert 0 <= full["age_seconds"] < 120 and full["max_age_seconds"] == 8 * 86400


def test_check_store_stopped(store, backed_up):
    store.stop()
    r = check(store, "--repo", backed_up)
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", r"ombra-store: ombra-store does not answer"), r.describe()
    assert r.out.splitlines()[0].startswith("OMBRA CRITICAL")
    line = [x for x in r.out.splitlines() if "ombra-store does not answer" in x][0]
    assert line.count("HINT:") == 1, line  # one hint a line, not the error's and check's


def test_check_vssd_stopped(store, vssd, backed_up):
    vssd.terminate()
    vssd.wait(20)
    r = check(store, "--repo", backed_up)
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", r"ombra-vssd: ombra-vssd does not answer"), r.describe()
    assert has_line(r, "OK", r"ombra-store: "), r.describe()


def test_check_writer_not_stable(store, backed_up):
    """A backup stopped after its snapshot holds the store's writer out of stable: a WARNING (a
    backup in progress, or stuck there) until it ends."""
    p = Paused(store, ["backup", "--repo", backed_up, "--type", "incremental", "db1"],
               "OMBRA_BACKUP_PAUSE", "snapshot")
    assert p.reached, p.first
    try:
        r = check(store, "--repo", backed_up)
        assert r.rc == WARNING, r.describe()
        assert has_line(r, "WARNING", r"writer Ombra Store Writer: writer 'Ombra Store Writer' is "
                        r"waiting_for_backup_complete"), r.describe()
    finally:
        done = p.resume()
    assert done.rc == 0, done.describe()
    assert check(store, "--repo", backed_up).rc == OK


def test_check_repository_gone_or_not_a_directory(store, backed_up):
    moved = backed_up.with_name("repo-away")
    backed_up.rename(moved)
    r = check(store, "--repo", backed_up)
    assert r.rc == CRITICAL and has_line(r, "CRITICAL", r"repository: .*cannot be opened"), \
        r.describe()
    backed_up.write_text("not a repository\n")
    r = check(store, "--repo", backed_up)
    assert r.rc == CRITICAL and has_line(r, "CRITICAL", r"repository: "), r.describe()
    backed_up.unlink()
    moved.rename(backed_up)
    assert check(store, "--repo", backed_up).rc == OK


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_check_repository_read_only(store, backed_up):
    """A repository that opens and lists but cannot take a file: the next backup would fail."""
    m = subprocess.run(["mount", "--bind", str(backed_up), str(backed_up)], capture_output=True,
                       text=True)
    if m.returncode:
        pytest.skip(f"cannot bind-mount here: {m.stderr.strip()}")
    try:
        m = subprocess.run(["mount", "-o", "remount,ro,bind", str(backed_up)],
                           capture_output=True, text=True)
        if m.returncode:
            pytest.skip(f"cannot remount read-only here: {m.stderr.strip()}")
        r = check(store, "--repo", backed_up)
        assert r.rc == CRITICAL, r.describe()
        assert has_line(r, "CRITICAL", r"repository: repository .* is not writable"), r.describe()
        # Listing still works: it is the write that fails.
        assert len(sets_of(store, backed_up)) == 2
    finally:
        subprocess.run(["umount", "-l", str(backed_up)], check=False)
    assert check(store, "--repo", backed_up).rc == OK


def test_check_backups_too_old(store, backed_up):
    time.sleep(2.2)
    r = check(store, "--repo", backed_up, "--max-full-age", "1s")
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", r"db1 full backup: .*older than --max-full-age 1s"), \
        r.describe()
    assert has_line(r, "OK", r"db1 incremental backup: "), r.describe()
    r = check(store, "--repo", backed_up, "--max-incremental-age", "1s")
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", r"db1 incremental backup: .*older than --max-incremental-age"), \
        r.describe()
    # Without the repository the run record alone says the same.
    r = check(store, "--max-full-age", "1s")
    assert r.rc == CRITICAL and has_line(r, "CRITICAL", r"db1 full backup: "), r.describe()
    assert check(store, "--repo", backed_up, "--max-full-age", "1h").rc == OK
    # A database never backed up is CRITICAL at once.
    store.ombra("db", "new", "db2")
    r = check(store, "--repo", backed_up)
    assert r.rc == CRITICAL and has_line(r, "CRITICAL", r"db2 full backup: db2 has no successful"), \
        r.describe()


def test_check_a_failed_backup_is_recorded(store, backed_up):
    nowhere = backed_up.with_name("no-such-repo")
    r = backup(store, nowhere, "incremental", check=False)
    assert r.rc != 0
    r = check(store, "--repo", backed_up)
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", r"db1 last incremental run: the last incremental backup of db1 "
                    r"failed .*-9203 NotRepository"), r.describe()
    assert has_line(r, "OK", r"db1 last full run: "), r.describe()
    # The record is durable state under the data directory, not the repository's.
    rec = json.loads((store.home / "backup-runs.json").read_text())
    inc = next(e for e in rec["runs"] if e["database"] == "db1" and e["type"] == "incremental")
    assert inc["last"]["result"] == "failed" and inc["last_success"]["result"] == "ok"
    # The next run that succeeds clears it.
    backup(store, backed_up, "incremental")
    assert check(store, "--repo", backed_up).rc == OK


def test_a_mistyped_database_is_not_recorded_as_a_failed_backup(store, backed_up):
    """`ombra backup --type full db` typed as `dbl`: the run was recorded under 'dbl', so metrics
    carried ombra_backup_last_run_success{database="dbl"} 0 for ever (an alert nobody could
    clear: no backup of 'dbl' can ever succeed). A database that exists stays recorded."""
    r = backup(store, backed_up, "full", db="dbl", check=False)
    assert r.rc == 1 and "DatabaseNotFound" in r.err, r.describe()
    rec = json.loads((store.home / "backup-runs.json").read_text())
    assert all(e["database"] != "dbl" for e in rec["runs"]), rec
    m = store.ombra("metrics", "--repo", backed_up).out
    assert 'database="dbl"' not in m, m
    assert check(store, "--repo", backed_up).rc == OK
    # A run of both: db1's failure is recorded (its scheduled backup did not happen), dbl's not.
    r = store.ombra("backup", "--repo", backed_up, "--type", "full", "db1", "dbl", check=False)
    assert r.rc == 1, r.describe()
    rec = json.loads((store.home / "backup-runs.json").read_text())
    assert all(e["database"] != "dbl" for e in rec["runs"]), rec
    full = next(e for e in rec["runs"] if e["database"] == "db1" and e["type"] == "full")
    assert full["last"]["result"] == "failed", full


def test_check_log_disk_threshold(store, backed_up):
    r = check(store, "--repo", backed_up, "--min-log-free", "100")
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", r"log disk .*: the log disk of db1 has .*% free .*below "
                    r"--min-log-free 100%"), r.describe()
    assert check(store, "--repo", backed_up, "--min-log-free", "0%").rc == OK
    assert check(store, "--min-log-free", "101").rc == 3  # a usage error: UNKNOWN


@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_check_log_disk_nearly_full(tiny_fs, store, vssd, repo):
    """A real filesystem holding a database's logs, filled to 95%: CRITICAL at the default 10%."""
    store.ombra("db", "new", "small", "--edb", tiny_fs / "small.edb", "--logs", tiny_fs / "logs")
    backup(store, repo, "full", db="small")
    st = os.statvfs(tiny_fs)
    keep = st.f_blocks * st.f_frsize // 20  # 5% stays free
    filler = tiny_fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - keep))
    r = check(store, "--repo", repo)
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "CRITICAL", rf"log disk {re.escape(str(tiny_fs))}/logs: the log disk of "
                    r"small has [0-9.]+% free"), r.describe()
    filler.unlink()
    r = check(store, "--repo", repo)
    assert r.rc == OK, r.describe()


# ---- ombra metrics --------------------------------------------------------------------------

def samples(text):
    """{(sample name, frozenset of labels): value} from Prometheus' own parser."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m, name, **labels):
    hits = [v for (n, ls), v in m.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples\n" + \
        "\n".join(f"{n} {dict(ls)} {v}" for (n, ls), v in m.items() if n == name)
    return hits[0]


@pytest.fixture
def sequence(store, vssd, repo):
    """Two fulls and an incremental of db1, three deliveries, then a failed incremental:
    {"t0", "t1": the sequence's bounds (Unix seconds), "sets": backups list's sets, ...}."""
    t0 = time.time()
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "40", "--size", "3000")
    backup(store, repo, "full")
    msgs = [b"Subject: one\n\nfirst body\n", b"Subject: two\n\nsecond\n", b"Subject: 3\n\nx\n"]
    for m in msgs:
        store.deliver("db1", "alice", m)
    backup(store, repo, "full")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "10", "--size", "3000",
                "--seed", "5")
    inc = backup(store, repo, "incremental")
    t_inc = time.time()
    failed = backup(store, repo.with_name("gone"), "incremental", check=False)
    assert failed.rc != 0
    t1 = time.time()
    return {"t0": t0, "t1": t1, "t_inc": t_inc, "sets": sets_of(store, repo), "inc": inc,
            "delivered": len(msgs), "delivered_bytes": sum(map(len, msgs))}


def assert_sequence(m, store, repo, seq):
    t0, t1 = seq["t0"], seq["t1"]
    L = dict(database="db1", server="srv1")
    assert value(m, "ombra_up", daemon="ombra-store") == 1
    assert value(m, "ombra_up", daemon="ombra-vssd") == 1
    # The last run of each type: the full succeeded, the incremental failed.
    assert value(m, "ombra_backup_last_run_success", type="full", **L) == 1
    assert value(m, "ombra_backup_last_run_success", type="incremental", **L) == 0
    for t in ("full", "incremental"):
        ts = value(m, "ombra_backup_last_run_timestamp_seconds", type=t, **L)
        assert t0 <= ts <= t1, (t, ts, t0, t1)
        assert 0 < value(m, "ombra_backup_last_run_duration_seconds", type=t, **L) < t1 - t0
    assert value(m, "ombra_backup_last_run_timestamp_seconds", type="incremental", **L) >= \
        value(m, "ombra_backup_last_success_timestamp_seconds", type="incremental", **L)
    assert value(m, "ombra_backup_last_run_bytes_stored", type="incremental", **L) == 0
    # The last successes carry what the repository lists.
    sets = seq["sets"]
    fulls = [s for s in sets if s["type"] == "full"]
    incs = [s for s in sets if s["type"] == "incremental"]
    assert len(fulls) == 2 and len(incs) == 1
    newest_full = max(fulls, key=lambda s: s["committed_ns"])
    assert value(m, "ombra_backup_last_success_bytes_stored", type="full", **L) == \
        newest_full["bytes_stored"]
    assert value(m, "ombra_backup_last_success_bytes_stored", type="incremental", **L) == \
        incs[0]["bytes_stored"]
    ts_inc = value(m, "ombra_backup_last_success_timestamp_seconds", type="incremental", **L)
    assert incs[0]["committed_ns"] / 1e9 <= ts_inc <= seq["t_inc"]
    assert value(m, "ombra_backup_sets", type="full", **L) == 2
    assert value(m, "ombra_backup_sets", type="incremental", **L) == 1
    assert value(m, "ombra_backup_last_set_bytes", type="full", **L) == newest_full["bytes"]
    assert value(m, "ombra_backup_last_set_bytes_stored", type="incremental", **L) == \
        incs[0]["bytes_stored"]
    assert value(m, "ombra_backup_last_set_timestamp_seconds", type="full", **L) == \
        pytest.approx(newest_full["committed_ns"] / 1e9, abs=1e-3)
    # Writes held for the last shadow copy: ombra-vssd's and the run's.
    held = value(m, "ombra_vss_last_snapshot_writes_held_seconds")
    assert 0 < held < 10
    assert t0 <= value(m, "ombra_vss_last_snapshot_timestamp_seconds") <= t1
    assert 0 < value(m, "ombra_backup_last_run_writes_held_seconds", type="full", **L) < 10
    assert value(m, "ombra_vss_writer_stable", writer="Ombra Store Writer") == 1
    assert value(m, "ombra_vss_writer_state", writer="Ombra Store Writer", state="stable") == 1
    # Deliveries since the store started, log generations, disks.
    assert value(m, "ombra_store_deliveries_total", result="ok") == seq["delivered"]
    assert value(m, "ombra_store_deliveries_total", result="failed") == 0
    assert value(m, "ombra_store_delivered_bytes_total") == seq["delivered_bytes"]
    assert value(m, "ombra_log_generations", **L) == store.db_show("db1")["log_generations"]
    assert value(m, "ombra_log_disk_free_bytes", **L) > 0
    assert value(m, "ombra_data_disk_free_bytes") > 0
    assert value(m, "ombra_database_mounted", **L) == 1


def test_metrics_after_a_known_sequence(store, repo, sequence):
    r = store.ombra("metrics", "--repo", repo)
    assert_sequence(samples(r.out), store, repo, sequence)
    # Every family says what it is.
    for fam in text_string_to_metric_families(r.out):
        assert fam.name.startswith("ombra_") and fam.documentation and fam.type != "unknown"


def start_endpoint(store, repo):
    p = subprocess.Popen([str(store.cli), "metrics", "--repo", str(repo), "--listen",
                          "127.0.0.1:0"], env=store.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    assert m, f"the endpoint did not say where it listens: {line!r}"
    return p, int(m.group(1))


def get(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def raw(port, payload, close_early=False):
    """Sends payload; returns what came back (b"" when the endpoint closed without a word)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(payload)
        if close_early:
            return b""
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the endpoint closed already; its answer may still be there
        out = b""
        while True:
            c = s.recv(65536)
            if not c:
                return out
            out += c
    except (BrokenPipeError, ConnectionResetError):
        return b""
    finally:
        s.close()


def test_metrics_endpoint(store, repo, sequence):
    p, port = start_endpoint(store, repo)
    try:
        status, ctype, body = get(port)
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert_sequence(samples(body), store, repo, sequence)
        with pytest.raises(urllib.error.HTTPError) as e:
            get(port, "/")
        assert e.value.code == 404
        # Garbage of every kind: the endpoint answers or closes, and lives on.
        assert raw(port, b"\x00\xff\xfe garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw(port, b"A" * 20000).startswith(b"HTTP/1.1 431")
        assert raw(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert raw(port, b"GET /metrics HTTP/9\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw(port, b"GET /metr", close_early=True) == b""
        assert raw(port, b"") == b""
        assert raw(port, b"GET /" + b"x" * 1000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert raw(port, b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414")
        assert p.poll() is None, p.stderr.read()
        # Each scrape gathers fresh values.
        store.deliver("db1", "bob", b"Subject: later\n\nmore\n")
        status, _, body = get(port)
        assert status == 200
        assert value(samples(body), "ombra_store_deliveries_total", result="ok") == \
            sequence["delivered"] + 1
        # A daemon gone is a value, not a failed scrape.
        store.vssd.terminate()
        store.vssd.wait(20)
        status, _, body = get(port)
        assert status == 200 and value(samples(body), "ombra_up", daemon="ombra-vssd") == 0
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(20)
    assert rc == 0, p.stderr.read()


def test_check_and_metrics_read_the_configuration(store, backed_up):
    """[check] thresholds and the default repository from the file; the options win."""
    conf = store.tmp / "ombra.conf"
    conf.write_text(f"[ombra]\ndefault-repo = main\n[repo:main]\npath = {backed_up}\n"
                    "[check]\nmax-full-age = 1s\n[metrics]\nlisten = 127.0.0.1:0\n")
    time.sleep(2.2)
    r = check(store, "--config", conf)
    assert r.rc == CRITICAL and has_line(r, "CRITICAL", r"db1 full backup: .*older than"), \
        r.describe()
    assert has_line(r, "OK", r"repository"), r.describe()  # the file's repository was probed
    assert check(store, "--config", conf, "--max-full-age", "1h").rc == OK
    m = store.ombra("--config", conf, "metrics").out
    fams = {f.name: f for f in text_string_to_metric_families(m)}
    assert sum(s.value for s in fams["ombra_backup_sets"].samples) >= 2, m  # full + incremental
    # --serve listens where [metrics] listen says (port 0: a free one, said on stderr)
    p = subprocess.Popen([str(store.cli), "--config", str(conf), "metrics", "--serve"],
                         env=store.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        port = int(re.search(r":(\d+)", line).group(1))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
        assert "ombra_up" in body
    finally:
        p.terminate()
        p.wait(timeout=20)
    # without [metrics] listen, --serve is a usage error naming the file
    conf.write_text(f"[ombra]\ndefault-repo = main\n[repo:main]\npath = {backed_up}\n")
    r = store.ombra("--config", conf, "metrics", "--serve", check=False)
    assert r.rc == 2 and str(conf) in r.err


# ---- what a tester found (issue 20): hung daemons, slow clients, a FIFO, exit codes, clocks ----

UNKNOWN = 3


def timed_check(store, *args, seconds=15):
    t0 = time.monotonic()
    r = store.ombra("check", *args, check=False, timeout=60)
    return r, time.monotonic() - t0


@pytest.mark.slow_under_sanitizers  # waits on deadlines: make test-long
@pytest.mark.parametrize("daemon", ["ombra-store", "ombra-vssd"])
def test_check_and_metrics_a_daemon_hung(store, vssd, backed_up, daemon):
    """A daemon stopped (SIGSTOP: its socket accepts, nothing answers) is CRITICAL within the
    5 s it is given, not a check that never ends; metrics says ombra_up 0 for it."""
    pid = store.proc.pid if daemon == "ombra-store" else vssd.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        r, took = timed_check(store, "--repo", backed_up)
        assert took < 15, f"check took {took:.1f} s\n{r.describe()}"
        assert r.rc == CRITICAL, r.describe()
        assert has_line(r, "CRITICAL", rf"{daemon}: {daemon} does not answer within 5 s"), \
            r.describe()
        t0 = time.monotonic()
        m = store.ombra("metrics", timeout=60)
        assert time.monotonic() - t0 < 15, m.describe()
        assert value(samples(m.out), "ombra_up", daemon=daemon) == 0
        other = "ombra-vssd" if daemon == "ombra-store" else "ombra-store"
        assert value(samples(m.out), "ombra_up", daemon=other) == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert check(store, "--repo", backed_up).rc == OK


@pytest.mark.slow_under_sanitizers  # waits on deadlines: make test-long
def test_metrics_listen_refuses_a_port_it_cannot_serve_on(store, tmp_path):
    """--listen 127.0.0.1:99999 served on port 34463 (getaddrinfo wraps the number) and
    127.0.0.1:http on port 80: a typo served where no scraper looks. The file's [metrics]
    listen is held to the same numbers."""
    for spec in ("127.0.0.1:99999", "127.0.0.1:http", "127.0.0.1:+80", "127.0.0.1:"):
        r = store.ombra("metrics", "--listen", spec, check=False)
        assert r.rc == 1 and r.err.count("\n") == 1, r.describe()
        assert f"not '{spec}'" in r.err and "65535" in r.err, r.describe()
    conf = tmp_path / "m.conf"
    conf.write_text("[metrics]\nlisten = 127.0.0.1:+80\n")
    r = store.ombra("--config", conf, "metrics", "--serve", check=False)
    assert r.rc == 1 and f"{conf}:2: listen in [metrics]" in r.err, r.describe()


def test_metrics_endpoint_slow_and_idle_clients(store, repo, sequence):
    """A client sending a byte every 2 s and 20 idle connections delay no scrape; each is cut
    off 5 s after it connected; more connections than the endpoint serves at once get 503."""
    import threading
    p, port = start_endpoint(store, repo)
    conns = []
    try:
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        slow_end = {}

        def trickle():
            t0 = time.monotonic()
            try:
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n":
                    slow.sendall(bytes([b]))
                    time.sleep(2)
            except OSError:
                pass
            slow_end["after"] = time.monotonic() - t0
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        for _ in range(20):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        time.sleep(0.5)
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert r.status == 200 and "ombra_up" in r.read().decode()
        assert time.monotonic() - t0 < 8  # without the fix: after the slow client, > 60 s
        # The slow client is cut off once its 5 s are up, with no answer (its sends fail a
        # send or two after the close; the whole request would take 68 s).
        t.join(90)
        assert "after" in slow_end and slow_end["after"] < 20, slow_end
        # The idle ones too: each reads the end of its connection.
        for c in conns:
            c.settimeout(10)
            assert c.recv(100) == b""
        # Beyond 32 connections at once: 503 at once, not a wait.
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        time.sleep(0.5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        conns.append(extra)
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        for c in conns:
            c.close()
        conns = []
        # Served again once the endpoint has seen the 41 closes (on a loaded machine that can
        # take a moment: a 503 until then, never a hang).
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, body = get(port)
                break
            except urllib.error.HTTPError as e:
                assert e.code == 503 and time.monotonic() < deadline, e
                time.sleep(0.2)
        assert status == 200 and "ombra_up" in body
        assert p.poll() is None
    finally:
        for c in conns:
            c.close()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(20)
    assert rc == 0, p.stderr.read()


def test_check_metrics_backup_with_a_fifo_as_the_run_record(store, backed_up):
    """A FIFO in place of backup-runs.json: never opened in a way that waits for a writer.
    check says so (WARNING, naming it), metrics answers, a backup succeeds with one warning."""
    rec = store.home / "backup-runs.json"
    rec.unlink()
    os.mkfifo(rec)
    r, took = timed_check(store, "--repo", backed_up)
    assert took < 15, r.describe()
    assert r.rc == WARNING, r.describe()
    assert has_line(r, "WARNING", r"backup runs: .*backup-runs\.json is a FIFO"), r.describe()
    m = store.ombra("metrics", "--repo", backed_up, timeout=60)
    assert value(samples(m.out), "ombra_up", daemon="ombra-store") == 1
    b = store.ombra("backup", "--repo", backed_up, "--type", "incremental", "db1", check=False,
                    timeout=120)
    assert b.rc == 0, b.describe()
    warn = [l for l in b.err.splitlines() if "warning" in l]
    assert len(warn) == 1 and "backup-runs.json is a FIFO" in warn[0], b.describe()
    assert stat_is_fifo(rec)


def stat_is_fifo(path):
    import stat
    return stat.S_ISFIFO(os.lstat(path).st_mode)


def test_check_usage_and_configuration_errors_are_unknown(store, backed_up):
    """ombra check cannot run as asked: UNKNOWN (3), never CRITICAL (2) or WARNING (1)."""
    for args in (["--bogus"], ["--max-full-age", "5"], ["--min-log-free", "200"],
                 ["--repo", backed_up, "extra"]):
        r = check(store, *args)
        assert r.rc == UNKNOWN, r.describe()
        assert "See 'ombra check --help'" in r.err, r.describe()
    r = check(store, "--bogus", "--json")
    assert r.rc == UNKNOWN and json.loads(r.out)["error"]["code"] == 2, r.describe()
    bad = store.tmp / "bad.conf"
    bad.write_text("[check]\nmax-full-age = soon\n")
    r = check(store, "--config", bad)
    assert r.rc == UNKNOWN and str(bad) in r.err, r.describe()
    bad.write_text("this is not [an ini file\n")
    assert check(store, "--config", bad).rc == UNKNOWN
    assert check(store, "--config", store.tmp / "missing.conf").rc == UNKNOWN
    # The other commands keep their codes.
    assert store.ombra("backups", "list", "--bogus", check=False).rc == 2
    assert store.ombra("--config", bad, "backups", "list", "--repo", backed_up,
                       check=False).rc == 1
    # The help says so.
    h = store.ombra("check", "--help").out
    assert "3 UNKNOWN" in h and "usage error" in h


def test_check_a_backup_recorded_in_the_future(store, backed_up):
    """A run recorded by a clock that was ahead (end_ns in 2030) is a WARNING and does not
    count as a recent backup."""
    rec = store.home / "backup-runs.json"
    j = json.loads(rec.read_text())
    future = 1_900_000_000 * 10**9  # 2030-03-17
    for e in j["runs"]:
        for k in ("last", "last_success"):
            if e.get(k):
                e[k]["end_ns"] = future
    rec.write_text(json.dumps(j))
    r = check(store)  # without --repo: the ages come from the record alone
    assert r.rc == CRITICAL, r.describe()
    assert has_line(r, "WARNING", r"db1 full backup time: .*2030-03-1.* in the future: the clock "
                    r"was wrong when it was recorded"), r.describe()
    assert has_line(r, "CRITICAL", r"db1 full backup: db1 has no successful full backup"), \
        r.describe()
    assert not has_line(r, "OK", r"db1 full backup: "), r.describe()
    # With the repository, its sets give the real age: OK, and the WARNING stays.
    r = check(store, "--repo", backed_up)
    assert r.rc == WARNING, r.describe()
    assert has_line(r, "OK", r"db1 full backup: the last successful full backup of db1 is "
                    r"\d+s old"), r.describe()
    # A few minutes ahead is a clock's skew, not an error.
    for e in j["runs"]:
        for k in ("last", "last_success"):
            if e.get(k):
                e[k]["end_ns"] = time.time_ns() + 60 * 10**9
    rec.write_text(json.dumps(j))
    r = check(store)
    assert not lines(r, "WARNING") and has_line(r, "OK", r"db1 full backup: "), r.describe()


def test_backups_list_names_a_database_with_no_sets(store, backed_up):
    r = store.ombra("backups", "list", "--repo", backed_up, "--db", "typo")
    assert r.rc == 0
    assert "no backup sets of database 'typo' (databases with sets: db1)" in r.err, r.describe()
    r = store.ombra("backups", "list", "--repo", backed_up, "--db", "db1")
    assert "note" not in r.err, r.describe()


def test_metrics_endpoint_out_of_descriptors_waits_instead_of_spinning(store, repo, sequence):
    """With its descriptors used up by idle clients, the endpoint neither spins a core on
    accept's EMFILE nor dies: the waiting connections are served once descriptors are free."""
    import resource

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))
    p = subprocess.Popen([str(store.cli), "metrics", "--repo", str(repo), "--listen",
                          "127.0.0.1:0"], env=store.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=few_fds)
    m = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", p.stderr.readline())
    assert m
    port = int(m.group(1))
    conns = []
    try:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(30)]
        time.sleep(0.5)

        def cpu_s():
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        c0 = cpu_s()
        time.sleep(2)
        used = cpu_s() - c0
        assert used < 0.5, f"{used:.2f} s of CPU in 2 s with no descriptor free: spinning"
        for c in conns:
            c.close()
        conns = []
        status, _, body = get(port)  # a new scrape once the idle ones are gone
        assert status == 200 and "ombra_up" in body
        assert p.poll() is None
    finally:
        for c in conns:
            c.close()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(20)
    assert rc == 0, p.stderr.read()
