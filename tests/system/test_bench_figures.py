"""bench/figures.py, the regression guard of issue 21's figures, fed synthetic rounds of result
JSONs (no benchmark runs): medians and spreads, REGRESSED only beyond the recorded spread on the
bad side of each figure, not measured said as such, --record and the exit codes."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIGURES = ROOT / "bench" / "figures.py"


def write_round(d, replay=140.0, wall=7.0, tar=7.0, stored=198e6, full_s=2.6, second_s=2.2,
                freeze_ms=26.0, over_tar=1.0, mb=1024, backup=True, scripts=None, why=None, floor=None,
                busy=None):
    """One round's results as the benchmarks write them (only the keys the guard reads, and
    restore.json's two rounds with the ratio wall/tar)."""
    d.mkdir(parents=True)
    (d / "restore.json").write_text(json.dumps({
        "mb": mb, "incr_mb": 100,
        "results": {"replay_log_mb_s": replay, "restore_wall_s": wall, "tar_zstd_x_s": tar,
                    "incrementals": [{}, {}, {}],
                    "rounds": [{"restore_wall_s": wall, "tar_zstd_x_s": tar,
                                **({"disk_floor_s": floor} if floor else {}),
                                **({"restore_device_busy_s": busy} if busy else {})}] * 2}}))
    if backup:
        (d / "backup.json").write_text(json.dumps({
            "mb": mb, "results": {"files_bytes": 1.25e9, "second_full_ombra_stored": stored,
                                  "ombra_full_s": full_s, "second_full_ombra_s": second_s,
                                  "ratio_ombra_over_tar": over_tar}}))
    (d / "store_backup.json").write_text(json.dumps({
        "sizes": {"100": {"first_full_freeze_ms": 3.0}, "2048": {"first_full_freeze_ms": freeze_ms}}}))
    # as a run writes it: which benchmarks this branch had (here no replay.py), and why not
    (d / "round.json").write_text(json.dumps({
        "scripts": scripts or ["restore.json", "backup.json", "store_backup.json", "vss_freeze.json"],
        "why": why or {}, "failed": []}))
    return d


def rounds(tmp, name, values, **kw):
    """A round per value of replay MB/s; kw's lists give the other figures per round."""
    out = []
    for i, v in enumerate(values):
        args = {k: (x[i] if isinstance(x, list) else x) for k, x in kw.items()}
        out.append(str(write_round(tmp / name / f"round-{i + 1}", replay=v, **args)))
    return out


def run(dirs, record_file, *extra):
    p = subprocess.run([sys.executable, str(FIGURES), "--from-results", *dirs, "--record-file",
                        str(record_file), *extra], capture_output=True, text=True, timeout=60)
    return p


def rows(out):
    """The table's rows (not its heading, nor the notes under it)."""
    return [ln for ln in out.splitlines() if " | " in ln and not ln.startswith("figure ")]


def row(out, label):
    lines = [ln for ln in rows(out) if ln.startswith(label)]
    assert len(lines) == 1, out
    return lines[0]


def test_median_and_spread_over_rounds(tmp_path):
    dirs = rounds(tmp_path, "a", [100.0, 300.0, 200.0], wall=[7.0, 8.0, 9.0])
    j = tmp_path / "this.json"
    p = run(dirs, tmp_path / "rec.json", "--json-out", str(j))
    assert p.returncode == 0, p.stdout + p.stderr
    f = json.loads(j.read_text())["figures"]
    assert f["replay_mb_s"]["values"] == [100.0, 300.0, 200.0]
    assert (f["replay_mb_s"]["median"], f["replay_mb_s"]["min"], f["replay_mb_s"]["max"]) == (200.0, 100.0, 300.0)
    assert f["restore_over_untar"]["median"] == 8.0 / 7.0
    assert abs(f["second_full_stored_pct"]["median"] - 15.84) < 0.01
    assert "200 [100-300] n=3" in row(p.stdout, "log replay during restore")
    assert "misses goal" in row(p.stdout, "log replay during restore")
    assert "meets goal" in row(p.stdout, "1st full speed / tar")


def test_record_then_regressed_only_below_the_recorded_spread(tmp_path):
    rec = tmp_path / "rec.json"
    p = run(rounds(tmp_path, "base", [190.0, 200.0, 210.0]), rec, "--record")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(rec.read_text())["figures"]["replay_mb_s"]
    (cond, e), = r.items()
    assert cond == "restore of 1024 MB + 3 x 100 MB"
    assert e["values"] == [190.0, 200.0, 210.0] and (e["median"], e["min"], e["max"]) == (200.0, 190.0, 210.0)
    assert e["commit"] and e["date"]

    # within the recorded spread: noise, not a regression (one round below it decides nothing)
    p = run(rounds(tmp_path, "same", [185.0, 195.0, 205.0]), rec)
    assert p.returncode == 0, p.stdout
    assert not any("REGRESSED" in r for r in rows(p.stdout))
    assert "200 [190-210] n=3" in row(p.stdout, "log replay during restore")

    # the median below the lowest recorded round
    p = run(rounds(tmp_path, "worse", [150.0, 160.0, 230.0]), rec)
    assert p.returncode == 1, p.stdout
    assert "REGRESSED" in row(p.stdout, "log replay during restore")
    assert "REGRESSED" not in row(p.stdout, "restore+replay time")
    assert "REGRESSED: log replay during restore" in p.stdout

    # above the spread: better, never flagged
    p = run(rounds(tmp_path, "better", [400.0, 420.0, 440.0]), rec)
    assert p.returncode == 0 and "better than recorded" in row(p.stdout, "log replay during restore")


def test_lower_is_better_figures(tmp_path):
    rec = tmp_path / "rec.json"
    base = dict(wall=[9.0, 9.5, 10.0], freeze_ms=[20.0, 25.0, 30.0])
    assert run(rounds(tmp_path, "base", [200.0] * 3, **base), rec, "--record").returncode == 0
    # lower restore/untar and freeze: better, not a regression
    p = run(rounds(tmp_path, "lower", [200.0] * 3, wall=[4.0, 4.5, 5.0], freeze_ms=[5.0, 6.0, 7.0]), rec)
    assert p.returncode == 0, p.stdout
    assert "meets goal; better than recorded" in row(p.stdout, "restore+replay time")
    assert "meets goal" in row(p.stdout, "writes held, full with")
    # higher: the bad side for these
    p = run(rounds(tmp_path, "higher", [200.0] * 3, wall=[12.0, 12.0, 12.0], freeze_ms=[31.0, 32.0, 29.0]), rec)
    assert p.returncode == 1, p.stdout
    assert "misses goal; REGRESSED" in row(p.stdout, "restore+replay time")
    assert "REGRESSED" in row(p.stdout, "writes held, full with")
    assert "REGRESSED" not in row(p.stdout, "log replay during restore")


def test_not_measured_is_said_never_guessed(tmp_path):
    why = {"backup": "bench/backup.py failed (exit 1): restic: command not found"}
    dirs = rounds(tmp_path, "a", [200.0] * 3, backup=False, why=why)
    j = tmp_path / "this.json"
    p = run(dirs, tmp_path / "rec.json", "--json-out", str(j))
    assert p.returncode == 0, p.stdout
    r = row(p.stdout, "2nd full, 5% new mail: stored")
    assert "not measured: bench/backup.py failed (exit 1): restic: command not found" in r
    assert "not measured: no `dbs` case" in row(p.stdout, "writes held, 100 dbs")
    assert "not measured: bench/replay.py" in row(p.stdout, "  beside: PostgreSQL")
    f = json.loads(j.read_text())["figures"]
    assert set(f["second_full_time"]) == {"not_measured"} and set(f["freeze_all_ms"]) == {"not_measured"}
    # a benchmark's JSON without the figure's key says which key
    d = write_round(tmp_path / "nokey" / "round-1")
    b = json.loads((d / "backup.json").read_text())
    del b["results"]["ratio_ombra_over_tar"]
    (d / "backup.json").write_text(json.dumps(b))
    p = run([str(d)], tmp_path / "rec.json")
    assert "not measured: backup.json has no results.ratio_ombra_over_tar" in row(p.stdout, "1st full speed")


def test_freeze_all_and_replay_json_once_their_benchmarks_write_them(tmp_path):
    d = write_round(tmp_path / "r" / "round-1", scripts=["replay.json", "restore.json", "store_backup.json"])
    (d / "replay.json").write_text(json.dumps({"mb": 256, "results": {"ombra_mb_s": 620.0,
                                                                      "pg_mb_s": 280.0}}))
    s = json.loads((d / "store_backup.json").read_text())
    s["dbs"] = {"64": {"this": {"freeze_ms": 30.0}}, "100": {"this": {"freeze_ms": 8.5}}}
    s["gens"] = {"generations": 2200, "this": {"freeze_ms": 0.7}}
    (d / "store_backup.json").write_text(json.dumps(s))
    p = run([str(d)], tmp_path / "rec.json")
    assert "620 [620-620] n=1" in row(p.stdout, "log replay during restore")
    assert "meets goal" in row(p.stdout, "log replay during restore")
    assert "280 [280-280]" in row(p.stdout, "  beside: PostgreSQL") and "comparison" in p.stdout
    assert "8.5 [8.5-8.5]" in row(p.stdout, "writes held, 100 dbs")
    assert "0.7 [0.7-0.7]" in row(p.stdout, "writes held, full with")


def test_other_sizes_are_not_compared(tmp_path):
    rec = tmp_path / "rec.json"
    assert run(rounds(tmp_path, "big", [200.0] * 3), rec, "--record").returncode == 0
    p = run(rounds(tmp_path, "small", [50.0] * 3, mb=128), rec)
    assert p.returncode == 0 and not any("REGRESSED" in r for r in rows(p.stdout))
    assert "not compared: recorded only at restore of 1024 MB + 3 x 100 MB" in p.stdout
    # recording the small run keeps the big one's baseline beside it
    assert run(rounds(tmp_path, "small2", [50.0] * 3, mb=128), rec, "--record").returncode == 0
    assert len(json.loads(rec.read_text())["figures"]["replay_mb_s"]) == 2


def test_record_needs_rounds_and_a_sound_file(tmp_path):
    rec = tmp_path / "rec.json"
    p = run(rounds(tmp_path, "two", [200.0, 210.0]), rec, "--record")
    assert p.returncode == 2 and "fewer than 3 rounds" in p.stderr
    assert not rec.exists()
    rec.write_text("{not json")
    p = run(rounds(tmp_path, "three", [200.0] * 3), rec)
    assert p.returncode == 2 and f"{rec} is not JSON" in p.stderr
    p = run([str(tmp_path / "nowhere")], tmp_path / "rec2.json")
    assert p.returncode == 2 and "no such directory" in p.stderr


def test_bad_usage_is_one_line_and_exit_2(tmp_path):
    for args, said in ((["--build", str(tmp_path / "nobuild")], "src/cli/ombra is missing"),
                       (["--bench-args", "nosuch=--mb 1", "--from-results", str(tmp_path)], "want NAME=ARGS"),
                       (["--only", "nosuch"], "unknown benchmark nosuch"),
                       (["--rounds", "0"], "at least 1")):
        p = subprocess.run([sys.executable, str(FIGURES), *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and said in p.stderr, (args, p.stderr)


def test_add_to_record_widens_the_baseline(tmp_path):
    rec = tmp_path / "rec.json"
    assert run(rounds(tmp_path, "a", [190.0, 200.0, 210.0]), rec, "--record").returncode == 0
    p = run(rounds(tmp_path, "b", [170.0, 180.0, 185.0]), rec)
    assert p.returncode == 1 and "REGRESSED" in row(p.stdout, "log replay during restore")
    # added even so (the exit status still says it regressed against what was recorded before)
    p = run(rounds(tmp_path, "c", [170.0, 180.0, 185.0]), rec, "--add-to-record")
    assert p.returncode == 1 and "added to the baseline" in p.stdout
    (e,) = json.loads(rec.read_text())["figures"]["replay_mb_s"].values()
    assert e["values"] == [190.0, 200.0, 210.0, 170.0, 180.0, 185.0]
    assert (e["median"], e["min"], e["max"]) == (187.5, 170.0, 210.0)
    p = run(rounds(tmp_path, "d", [170.0, 180.0, 185.0]), rec)
    assert p.returncode == 0, p.stdout
    # a record that lost its values is refused, not half-read
    r = json.loads(rec.read_text())
    del next(iter(r["figures"]["replay_mb_s"].values()))["values"]
    rec.write_text(json.dumps(r))
    p = run(rounds(tmp_path, "e", [200.0] * 3), rec)
    assert p.returncode == 2 and "lacks its values" in p.stderr


def test_the_restore_beside_a_durable_tar_and_on_tmpfs(tmp_path):
    """The restore's ratio to tar + its sync -f (a comparison, never flagged), and the same ratio
    from restore_mem.json (restore.py --dir /dev/shm), said with where it ran; without that JSON
    the row says not measured."""
    d = write_round(tmp_path / "r" / "round-1", wall=3.0, tar=2.0,
                    scripts=["restore.json", "restore_mem.json", "backup.json", "store_backup.json"])
    j = json.loads((d / "restore.json").read_text())
    j["results"]["rounds"] = [{"restore_wall_s": 3.0, "tar_zstd_x_s": 2.0, "tar_sync_s": 1.0, "final_full_s": 1.0},
                              {"restore_wall_s": 2.0, "tar_zstd_x_s": 2.0, "tar_sync_s": 2.0, "final_full_s": 1.8}]
    (d / "restore.json").write_text(json.dumps(j))
    p = run([str(d)], tmp_path / "rec.json", "--json-out", str(tmp_path / "out.json"))
    f = json.loads((tmp_path / "out.json").read_text())["figures"]
    assert f["restore_over_untar"]["median"] == (1.5 + 1.0) / 2
    assert f["restore_over_untar_sync"]["median"] == (1.0 + 0.5) / 2
    assert "comparison" in row(p.stdout, "  beside: the same / (tar -x + its sync -f)")
    # the end state's full restored beside them (restore.py's final_full_s): a comparison
    assert f["final_full_over_untar"]["median"] == (0.5 + 0.9) / 2
    assert "comparison" in row(p.stdout, "  beside: a full of the end state (no logs)")
    assert "not measured: no restore_mem.json" in row(p.stdout, "  the same on tmpfs"), p.stdout
    assert "not measured" in row(p.stdout, "  beside: a full of the end state on tmpfs"), p.stdout
    (d / "restore_mem.json").write_text(json.dumps({
        "mb": 1024, "incr_mb": 100, "machine": {"fstype": "tmpfs", "dir": "/dev/shm"},
        "results": {"incrementals": [{}, {}, {}],
                    "rounds": [{"restore_wall_s": 1.2, "tar_zstd_x_s": 2.0},
                               {"restore_wall_s": 1.6, "tar_zstd_x_s": 2.0},
                               {"restore_wall_s": 1.0, "tar_zstd_x_s": 2.0}]}}))
    p = run([str(d)], tmp_path / "rec.json", "--json-out", str(tmp_path / "out.json"))
    f = json.loads((tmp_path / "out.json").read_text())["figures"]
    assert f["restore_mem_over_untar"]["median"] == 0.6
    assert "meets goal" in row(p.stdout, "  the same on tmpfs"), p.stdout
    assert "misses goal" in row(p.stdout, "restore+replay time / zstd -d | tar -x"), p.stdout
    assert "in /dev/shm (tmpfs)" in p.stdout


def test_a_benchmark_left_out_says_so_on_its_comparison_row_too(tmp_path):
    """A round run with --only restore,...: replay.py existed but was left out, and PostgreSQL's
    row beside it gives that reason, not that the script is missing."""
    d = write_round(tmp_path / "r" / "round-1", scripts=["restore.json", "backup.json", "store_backup.json"],
                    why={"replay": "left out (--only restore)"})
    p = run([str(d)], tmp_path / "rec.json")
    assert "not measured: left out (--only restore)" in row(p.stdout, "  beside: PostgreSQL 15 replay"), p.stdout
    assert "not measured: left out (--only restore)" in row(p.stdout, "log replay during restore"), p.stdout


def test_the_disks_floor_rows_beside_the_restore(tmp_path):
    """restore.py's disk floor (its bytes written and fdatasync'd) gives two rows beside the
    restore's: floor / tar and restore / floor; rounds without it say not measured."""
    dirs = rounds(tmp_path, "a", [600.0, 600.0], wall=[2.4, 2.2], tar=[2.5, 2.5], floor=[2.0, 2.0],
                  busy=[2.1, 1.1])
    j = tmp_path / "this.json"
    p = run(dirs, tmp_path / "rec.json", "--json-out", str(j))
    assert p.returncode == 0, p.stdout + p.stderr
    f = json.loads(j.read_text())["figures"]
    assert f["floor_over_untar"]["median"] == 2.0 / 2.5
    assert f["restore_over_floor"]["values"] == [2.4 / 2.0, 2.2 / 2.0]
    assert "0.80" in row(p.stdout, "  beside: the disk's floor")
    # the disk's busy seconds during the restore over its wall (restore.py's diskstats)
    assert f["restore_device_busy"]["values"] == [2.1 / 2.4, 1.1 / 2.2]
    assert "comparison" in row(p.stdout, "  beside: the disk busy during the restore")
    p = run(rounds(tmp_path, "b", [600.0]), tmp_path / "rec.json")
    assert "not measured" in row(p.stdout, "  beside: restore+replay / the disk's floor")
    assert "not measured" in row(p.stdout, "  beside: the disk busy during the restore")
