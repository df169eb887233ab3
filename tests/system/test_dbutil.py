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


def first_ack(p, ids, deadline=120):
    """Waits until engine_loop p has acknowledged a commit (a whole line in the file ids)."""
    end = time.time() + deadline
    while "\n" not in ids.read_text():
        assert p.poll() is None, f"engine_loop ended by itself ({p.returncode})"
        assert time.time() < end, f"no commit acknowledged in {deadline} s"
        time.sleep(0.05)


def crashed_db(engine_loop, d, seconds=1.0, min_gens=0):
    """Runs engine_loop's commit loop in d, kills it with -9, returns the acknowledged ids.
    With min_gens, runs until that many finished log generations exist (at least `seconds`, at
    most a minute), so a slow build (sanitizers, a loaded machine) still gets a real history."""
    ids = d.parent / f"{d.name}.acked"  # a file, not a pipe: a full pipe would stop the loop
    with open(ids, "w") as f:
        p = subprocess.Popen([str(engine_loop), "write", str(d), "0"], stdout=f,
                             stderr=subprocess.DEVNULL)
        # `seconds` count from the first acknowledged commit, not from the start: under the
        # sanitizers on a loaded machine, creating the database can take longer than the window.
        first_ack(p, ids)
        time.sleep(seconds)
        end = time.time() + 60
        while min_gens and time.time() < end and len(list((d / "logs").glob("E00????????.log"))) < min_gens:
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)
        p.wait()
    return [line for line in ids.read_text().split("\n") if line.strip()]


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
    ids = tmp_path.parent / f"{tmp_path.name}.acked"
    with open(ids, "w") as f:
        p = subprocess.Popen([str(engine_loop), "write", str(tmp_path), "0"], stdout=f,
                             stderr=subprocess.DEVNULL)
    try:
        first_ack(p, ids)  # the database is open (and locked) once a commit is acknowledged
        r = run(ombra_bin, "dbutil", "recover", tmp_path / "logs", "--edb", tmp_path / "mail.edb", check=1)
        assert "-1202 DatabaseInUse" in r.stderr and len(r.stderr.strip().split("\n")) == 1, r.stderr
    finally:
        p.kill()
        p.wait()


def test_checksum_names_the_damaged_page_and_log_slot(ombra_bin, engine_loop, tmp_path):
    crashed_db(engine_loop, tmp_path, 1.0, min_gens=3)
    rec = json.loads(run(ombra_bin, "dbutil", "recover", tmp_path / "logs", "--json", check=0).stdout)
    assert (rec["recovery"], rec["state"]) == ("soft", "Clean Shutdown") and rec["records"] > 0, rec
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
    # --json: one document naming both (no second {"error"} document after it), exit 1
    d = json.loads(run(ombra_bin, "dbutil", "checksum", edb, log, "--json", check=1).stdout)
    assert d["problems"] == 2 and [f["ok"] for f in d["files"]] == [False, False], d
    assert d["files"][0]["bad_pages"] == [3] and d["files"][0]["file"] == str(edb), d
    assert (d["files"][1]["damaged_slot"], d["files"][1]["error"]["name"]) == (2, "LogFileCorrupt"), d


def test_logs_reports_a_missing_generation(ombra_bin, engine_loop, tmp_path):
    crashed_db(engine_loop, tmp_path, 1.0, min_gens=4)
    gens = sorted((tmp_path / "logs").glob("E00000000*.log"))
    if len(gens) < 3:
        pytest.skip("the loop wrote fewer than three generations on this machine")
    os.remove(gens[1])
    r = run(ombra_bin, "dbutil", "logs", tmp_path / "logs", check=1)
    assert "-528 MissingLogFile" in r.stdout, r.stdout
    j = json.loads(run(ombra_bin, "dbutil", "logs", tmp_path / "logs", "--json", check=1).stdout)
    assert j["missing"] and j["problems"] >= 1


# ---- check-set: every kind of damage, with its exact error ----

@pytest.fixture(scope="module")
def two_sets(tmp_path_factory, engine_loop, build_dir):
    """Two databases of different log streams, each left in Dirty Shutdown by kill -9."""
    base = tmp_path_factory.mktemp("sets")
    for name in ("a", "b"):
        (base / name).mkdir()
        crashed_db(engine_loop, base / name, 1.0, min_gens=14)  # checkpoints every 4
    return base


def check_set(ombra_bin, d, *extra, check=None, edb=None):
    return run(ombra_bin, "dbutil", "check-set", "--edb", edb or d / "mail.edb", "--logs", d / "logs", *extra,
               check=check)


def flip_byte(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x08]))


@pytest.fixture
def set_a(two_sets, tmp_path):
    shutil.copytree(two_sets / "a", tmp_path / "a")
    return tmp_path / "a"


def needed(ombra_bin, d):
    j = json.loads(check_set(ombra_bin, d, "--json", check=0).stdout)
    return j["logs"]["needed"], j


def gen_file(d, g):
    return d / "logs" / f"E00{g:08X}.log"


def test_check_set_passes_an_intact_set(ombra_bin, set_a):
    (lo, hi), j = needed(ombra_bin, set_a)
    assert j["ok"] and j["error"] is None and lo >= 1 and hi >= lo
    assert j["pages"]["checked"] == j["pages"]["total"] > 0 and j["pages"]["bad_count"] == 0
    r = check_set(ombra_bin, set_a, check=0)
    assert "the set can be recovered" in r.stdout


def test_check_set_names_a_damaged_page(ombra_bin, set_a):
    flip_byte(set_a / "mail.edb", 4 * 32768 + 777)  # data page 3
    r = check_set(ombra_bin, set_a, check=1)
    assert "page 3: -1018 ReadVerifyFailure" in r.stdout, r.stdout
    assert "-1018 ReadVerifyFailure" in r.stderr and "page 3" in r.stderr
    assert len(r.stderr.strip().split("\n")) == 1


def test_a_damaged_header_copy_is_repaired_and_two_are_refused(ombra_bin, set_a):
    edb = set_a / "mail.edb"
    flip_byte(edb, 300)  # primary copy
    r = check_set(ombra_bin, set_a, check=0)
    assert "header copy 0: -1018 ReadVerifyFailure (the other copy is good)" in r.stdout, r.stdout
    h = json.loads(run(ombra_bin, "dbutil", "header", edb, "--json", check=0).stdout)
    assert h["damaged_header_copy"] == 0
    r = run(ombra_bin, "dbutil", "recover", set_a / "logs", check=0)
    assert "header copy 0 was damaged: rewritten from the other" in r.stdout, r.stdout
    h = json.loads(run(ombra_bin, "dbutil", "header", edb, "--json", check=0).stdout)
    assert h["damaged_header_copy"] == -1 and h["state"] == "Clean Shutdown"
    flip_byte(edb, 300)
    flip_byte(edb, 32768 + 300)  # and the secondary
    r = check_set(ombra_bin, set_a, check=1)
    assert "-1018 ReadVerifyFailure" in r.stderr, r.stderr
    r = run(ombra_bin, "dbutil", "header", edb, check=1)
    assert "-1018 ReadVerifyFailure" in r.stderr and "mail.edb" in r.stderr


def test_damage_in_a_needed_log_fails_and_in_an_older_one_is_reported(ombra_bin, set_a):
    (lo, hi), _ = needed(ombra_bin, set_a)
    if lo < 2:
        pytest.skip("the checkpoint never advanced past generation 1 on this machine")
    flip_byte(gen_file(set_a, lo - 1), 4096 + 99)  # older than the oldest needed one
    r = check_set(ombra_bin, set_a, check=0)
    assert f"generation {lo - 1}: segment in slot 1 is damaged (older than the oldest needed" in r.stdout, r.stdout
    target = gen_file(set_a, lo) if gen_file(set_a, lo).exists() else set_a / "logs" / "E00.log"
    flip_byte(target, 4096 + 99)
    r = check_set(ombra_bin, set_a, check=1)
    assert f"-501 LogFileCorrupt" in r.stderr and f"generation {lo}: segment in slot 1" in r.stderr, r.stderr


def test_a_damaged_checkpoint_is_reported_copy_by_copy(ombra_bin, set_a):
    chk = set_a / "logs" / "E00.chk"
    flip_byte(chk, 40)
    r = run(ombra_bin, "dbutil", "checkpoint", chk, check=0)
    assert "1 of the 2 copies is damaged" in r.stdout
    flip_byte(chk, 4096 + 40)
    r = run(ombra_bin, "dbutil", "checkpoint", chk, check=1)
    assert "-533 CheckpointCorrupt" in r.stderr and "both copies" in r.stderr
    r = check_set(ombra_bin, set_a, check=0)  # recovery starts from the header instead
    assert "-533 CheckpointCorrupt" in r.stdout and "not needed" in r.stdout


def test_a_missing_middle_generation_is_missing_log_file(ombra_bin, set_a):
    (lo, hi), _ = needed(ombra_bin, set_a)
    gens = sorted(int(p.name[3:11], 16) for p in (set_a / "logs").glob("E00????????.log"))
    middle = [g for g in gens if lo < g < max(gens)]
    if not middle:
        middle = [g for g in gens if 1 < g < max(gens)]
        lo = 1
    os.remove(gen_file(set_a, middle[0]))
    r = check_set(ombra_bin, set_a, "--first-gen", lo, "--last-gen", max(gens), check=1)
    assert "-528 MissingLogFile" in r.stderr and f"generation {middle[0]} missing" in r.stderr, r.stderr


def test_a_truncated_generation_is_log_file_size_mismatch(ombra_bin, set_a):
    (lo, hi), _ = needed(ombra_bin, set_a)
    victim = gen_file(set_a, lo) if gen_file(set_a, lo).exists() else set_a / "logs" / "E00.log"
    os.truncate(victim, 700000)
    r = check_set(ombra_bin, set_a, check=1)
    assert "-541 LogFileSizeMismatch" in r.stderr and victim.name in r.stderr, r.stderr


def test_a_generation_from_another_database_is_database_log_set_mismatch(ombra_bin, set_a, two_sets):
    # b's generation is of another stream too; the database is the answer (engine/log.h's
    # order), as recovery and hard recovery say (-530: test_log_chain's another_stream)
    ours = sorted(int(p.name[3:11], 16) for p in (set_a / "logs").glob("E00????????.log"))
    theirs = sorted(int(p.name[3:11], 16) for p in (two_sets / "b" / "logs").glob("E00????????.log"))
    common = [g for g in ours if g in theirs and g > ours[0]]
    assert common, (ours, theirs)
    g = common[-1]
    shutil.copy(gen_file(two_sets / "b", g), gen_file(set_a, g))
    r = check_set(ombra_bin, set_a, "--first-gen", ours[0], "--last-gen", ours[-1], check=1)
    assert "-539 DatabaseLogSetMismatch" in r.stderr and gen_file(set_a, g).name in r.stderr, r.stderr


def test_a_database_from_another_log_set_is_refused(ombra_bin, set_a, two_sets):
    r = check_set(ombra_bin, set_a, edb=two_sets / "b" / "mail.edb", check=1)
    assert "-539 DatabaseLogSetMismatch" in r.stderr, r.stderr
    r = run(ombra_bin, "dbutil", "recover", set_a / "logs", "--edb", two_sets / "b" / "mail.edb", check=1)
    assert "-539 DatabaseLogSetMismatch" in r.stderr, r.stderr  # whichever generations the kill left


def test_check_set_usage_errors_are_one_line(ombra_bin, set_a):
    r = run(ombra_bin, "dbutil", "check-set", check=1)
    assert "nothing to check" in r.stderr and len(r.stderr.strip().split("\n")) == 1
    r = run(ombra_bin, "dbutil", "check-set", "--logs", set_a / "logs", check=1)
    assert "without a log base name" in r.stderr
    r = run(ombra_bin, "dbutil", "check-set", "--edb", set_a / "nope.edb", "--logs", set_a / "logs", check=1)
    assert "nope.edb" in r.stderr and len(r.stderr.strip().split("\n")) == 1
    r = run(ombra_bin, "dbutil", "check-set", "--logs", set_a / "logs", "--base", "E00", "--json", check=0)
    assert json.loads(r.stdout)["ok"]
