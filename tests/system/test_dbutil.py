"""ombra dbutil against real files: a database left in Dirty Shutdown by kill -9 of a writer
is recovered by `dbutil recover` with every acknowledged commit kept; a live database is not
recovered under its writer's feet; damage is reported by page number and generation."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest


@pytest.fixture(scope="session")
def ombra_bin(build_dir):
    return build_dir / "src" / "cli" / "ombra"


def run(*args, check=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check is not None:
        assert p.returncode == check, p.stdout + p.stderr
    return p


def crashed_db(engine_loop, d, seconds=1.0):
    """Runs engine_loop's commit loop in d, kills it with -9, returns the acknowledged ids."""
    p = subprocess.Popen([str(engine_loop), "write", str(d), "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    time.sleep(seconds)
    p.send_signal(signal.SIGKILL)
    out, _ = p.communicate()
    return [line for line in out.split("\n") if line.strip()]


def test_recover_brings_a_killed_database_to_clean_shutdown_keeping_every_commit(ombra_bin, engine_loop, tmp_path):
    acked = crashed_db(engine_loop, tmp_path)
    assert acked
    h = json.loads(run(ombra_bin, "dbutil", "header", tmp_path / "mail.edb", "--json", check=0).stdout)
    assert h["state"] == "Dirty Shutdown"
    assert h["log_required"][0] >= 1 and h["page_size"] == 32768
    assert set(h["backups"]) == {"previous_full", "previous_incremental", "previous_copy", "previous_differential"}
    run(ombra_bin, "dbutil", "checkpoint", tmp_path / "logs" / "E00.chk", check=0)
    run(ombra_bin, "dbutil", "logs", tmp_path / "logs", check=0)
    r = run(ombra_bin, "dbutil", "recover", tmp_path / "logs", check=0)
    assert "Clean Shutdown" in r.stdout
    h = json.loads(run(ombra_bin, "dbutil", "header", tmp_path / "mail.edb", "--json", check=0).stdout)
    assert h["state"] == "Clean Shutdown" and h["log_required"] == [0, 0]
    v = subprocess.run([str(engine_loop), "verify", str(tmp_path)], input="\n".join(acked), capture_output=True,
                       text=True)
    assert v.returncode == 0 and v.stdout.strip() == f"ok {len(acked)}", v.stdout + v.stderr


def test_recover_refuses_a_database_open_in_another_process(ombra_bin, engine_loop, tmp_path):
    p = subprocess.Popen([str(engine_loop), "write", str(tmp_path), "0"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = run(ombra_bin, "dbutil", "recover", tmp_path / "logs", "--edb", tmp_path / "mail.edb", check=1)
        assert "-1202 DatabaseInUse" in r.stderr and len(r.stderr.strip().split("\n")) == 1, r.stderr
    finally:
        p.kill()
        p.wait()


def test_checksum_names_the_damaged_page_and_log_slot(ombra_bin, engine_loop, tmp_path):
    crashed_db(engine_loop, tmp_path, 1.0)
    run(ombra_bin, "dbutil", "recover", tmp_path / "logs", check=0)
    run(ombra_bin, "dbutil", "checksum", tmp_path / "mail.edb", tmp_path / "logs", check=0)
    edb = tmp_path / "mail.edb"
    with open(edb, "r+b") as f:  # data page 3 lives at (3 + 1) * 32 KiB
        f.seek(4 * 32768 + 1000)
        b = f.read(1)
        f.seek(4 * 32768 + 1000)
        f.write(bytes([b[0] ^ 0x40]))
    r = run(ombra_bin, "dbutil", "checksum", edb, check=1)
    assert "page 3: -1018 ReadVerifyFailure" in r.stdout, r.stdout
    assert "-1018 ReadVerifyFailure" in r.stderr
    gens = json.loads(run(ombra_bin, "dbutil", "logs", tmp_path / "logs", "--json", check=0).stdout)["generations"]
    full = [g for g in gens if g["segments"] >= 4]
    assert full, gens
    log = tmp_path / "logs" / full[0]["file"]
    with open(log, "r+b") as f:  # slot 2 of a generation with data after it
        f.seek(2 * 4096 + 100)
        f.write(b"\xff\xff\xff\xff")
    r = run(ombra_bin, "dbutil", "checksum", log, check=1)
    assert "slot 2: -501 LogFileCorrupt" in r.stdout, r.stdout


def test_logs_reports_a_missing_generation(ombra_bin, engine_loop, tmp_path):
    crashed_db(engine_loop, tmp_path, 1.0)
    gens = sorted((tmp_path / "logs").glob("E00000000*.log"))
    if len(gens) < 3:
        pytest.skip("the loop wrote fewer than three generations on this machine")
    os.remove(gens[1])
    r = run(ombra_bin, "dbutil", "logs", tmp_path / "logs", check=1)
    assert "-528 MissingLogFile" in r.stdout, r.stdout
    j = json.loads(run(ombra_bin, "dbutil", "logs", tmp_path / "logs", "--json", check=1).stdout)
    assert j["missing"] and j["problems"] >= 1
