#!/usr/bin/env python3
"""The regression guard of the performance figures (issue 21): runs the benchmarks R rounds (or
reads rounds already run), takes each figure from their result JSONs, and prints one table:

    figure | goal | this run: median [min-max] | recorded: median [min-max] | verdict

The verdict says whether this run's median meets the figure's goal, and REGRESSED when it falls
outside the recorded spread on the bad side (below the recorded lowest round for a figure where
higher is better, above the highest where lower is better). The record is
bench/results/figures.json; only --record writes it (this run becomes the baseline), never a
plain run. A figure whose benchmark is missing, failed or lacks the value says "not measured:
why"; it is never guessed.

    bench/figures.py [--rounds R] [--quick] [--build DIR] [--record] [--keep-results]
                     [--bench-args NAME=ARGS ...] [--only NAME,...]
    bench/figures.py --from-results DIR [DIR ...] [--record]

Each round runs, one after the other, the benchmarks that exist (bench/replay.py, restore.py,
backup.py, store_backup.py, vss_freeze.py), each side by side with its comparison as it does
alone; a round's JSONs are kept in scratch/bench/figures/<time>/round-N/, which --from-results
reads again (bench/results itself is one round: the last run of each benchmark).

Exit status: 0, 1 when a figure REGRESSED, 2 on bad usage or a bad record file, 3 when a
benchmark failed (exited non-zero: a restore digest that differs, a crash); 3 wins over 1.
"""
import argparse
import datetime
import json
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RECORD = RESULTS / "figures.json"
MIN_RECORD_ROUNDS = 3  # a spread of fewer rounds says nothing on these machines


def die(msg):
    """Bad usage or a bad record file: one line, exit 2."""
    print(f"bench/figures.py: {msg}", file=sys.stderr)
    sys.exit(2)


class NotMeasured(Exception):
    """Why a figure has no value in a round's results."""


# ---- the benchmarks a round runs -------------------------------------------------------------

# name, script, the JSON it writes, its arguments at the sizes, at --quick's
BENCHES = [
    ("replay", "bench/replay.py", "replay.json", [], []),  # its own defaults; --bench-args for more
    ("restore", "bench/restore.py", "restore.json", ["--mb", "1024"],
     ["--mb", "128", "--incr-mb", "16", "--rounds", "2", "--no-pg"]),
    # the same on storage that keeps up with both sides (tmpfs): what the software does where the
    # disk does not decide (a durable restore writes every byte before it answers, tar does not)
    ("restore_mem", "bench/restore.py", "restore_mem.json",
     ["--mb", "1024", "--no-pg", "--dir", "/dev/shm", "--json", str(RESULTS / "restore_mem.json")],
     ["--mb", "128", "--incr-mb", "16", "--rounds", "2", "--no-pg", "--dir", "/dev/shm",
      "--json", str(RESULTS / "restore_mem.json")]),
    ("backup", "bench/backup.py", "backup.json", ["--mb", "1024"], ["--mb", "128"]),
    ("store_backup", "bench/store_backup.py", "store_backup.json", ["--sizes", "100,2048"],
     ["--sizes", "256", "--runs", "2"]),
    ("vss_freeze", "bench/vss_freeze.py", "vss_freeze.json", ["--mb", "1024"], ["--mb", "64", "--runs", "2"]),
]


# ---- the figures -----------------------------------------------------------------------------

def need(results, name):
    """A round's JSON, or NotMeasured saying which benchmark did not run (and why, if it failed)."""
    j = results.get(name)
    if j is None:
        why = results.get("_why", {}).get(name)
        raise NotMeasured(why or f"no {name}.json in this round")
    return j


def path(j, name, *keys):
    """j[k0][k1]..., or NotMeasured naming the key the JSON lacks."""
    for k in keys:
        if not isinstance(j, dict) or j.get(k) is None:
            raise NotMeasured(f"{name}.json has no {'.'.join(map(str, keys))}")
        j = j[k]
    if isinstance(j, bool) or not isinstance(j, (int, float)):
        raise NotMeasured(f"{name}.json: {'.'.join(map(str, keys))} is not a number")
    return float(j)


def chain(restore):
    x = restore.get("results", {})
    n = len(x.get("incrementals") or []) or "?"
    return f"{restore.get('mb', '?')} MB + {n} x {restore.get('incr_mb', '?')} MB"


def replay_ombra(r):
    """bench/replay.py's Ombra figure when it has run; until it exists, the restore's replay."""
    why = r.get("_why", {}).get("replay")
    if r.get("replay") is None and why and why.startswith("left out"):
        raise NotMeasured(why)  # --only without it: not the restore's figure in its place
    if "replay.json" in r.get("_scripts", ()) or r.get("replay") is not None:
        j = need(r, "replay")
        return path(j, "replay", "results", "ombra_mb_s"), f"replay.py, {j.get('mb', '?')} MB of log"
    j = need(r, "restore")
    return path(j, "restore", "results", "replay_log_mb_s"), f"restore of {chain(j)}"


def replay_pg(r):
    why = r.get("_why", {}).get("replay")
    if r.get("replay") is None and why and ("replay.json" in r.get("_scripts", ()) or why.startswith("left out")):
        raise NotMeasured(why)  # failed, or left out (--only)
    if "replay.json" not in r.get("_scripts", ()) and r.get("replay") is None:
        raise NotMeasured("bench/replay.py (PostgreSQL's replay beside ours) is not on this branch")
    j = need(r, "replay")
    res = j.get("results", {})
    if res.get("pg_mb_s") is None and res.get("pg_why_not"):
        raise NotMeasured(str(res["pg_why_not"]))
    return path(j, "replay", "results", "pg_mb_s"), f"replay.py, {j.get('mb', '?')} MB of WAL"


def restore_ratio(r, name="restore", durable_tar=False, key="restore_wall_s", over="tar_zstd_x_s"):
    """Median of the restore's rounds of (restore + replay wall seconds, or key's) / (zstd -d |
    tar -x seconds, and its sync -f when durable_tar; or over's): each round times every side one
    after the other, so its ratio meets one weather."""
    j = need(r, name)
    rounds = j.get("results", {}).get("rounds") or []
    m = j.get("machine") if isinstance(j.get("machine"), dict) else {}
    where = chain(j) + (f" in {m['dir']} ({m.get('fstype', '?')})" if m.get("dir") not in (None, "/tmp") else "")
    v = [x[key] / (x[over] + (x.get("tar_sync_s") or 0 if durable_tar else 0))
         for x in rounds if x.get(key) and x.get(over)
         and (not durable_tar or x.get("tar_sync_s") is not None)]
    if v:
        return statistics.median(v), where
    if durable_tar or (key, over) != ("restore_wall_s", "tar_zstd_x_s"):
        raise NotMeasured(f"{name}.json has no rounds with {'tar_sync_s' if durable_tar else key + ' and ' + over}")
    return (path(j, name, "results", "restore_wall_s") / path(j, name, "results", "tar_zstd_x_s"), where)


def restore_over_untar(r):
    return restore_ratio(r)


def floor_over_untar(r):
    return restore_ratio(r, key="disk_floor_s")


def restore_over_floor(r):
    return restore_ratio(r, over="disk_floor_s")


def restore_device_busy(r):
    return restore_ratio(r, key="restore_device_busy_s", over="restore_wall_s")


def final_full_over_untar(r):
    return restore_ratio(r, key="final_full_s")


def final_full_mem_over_untar(r):
    return restore_ratio(r, "restore_mem", key="final_full_s")


def restore_over_untar_sync(r):
    return restore_ratio(r, durable_tar=True)


def restore_mem_over_untar(r):
    return restore_ratio(r, "restore_mem")


def second_full_stored(r):
    j = need(r, "backup")
    size = path(j, "backup", "results", "files_bytes")
    return 100 * path(j, "backup", "results", "second_full_ombra_stored") / size, f"{j.get('mb', '?')} MB + 5%"


def second_full_time(r):
    j = need(r, "backup")
    return (path(j, "backup", "results", "second_full_ombra_s") / path(j, "backup", "results", "ombra_full_s"),
            f"{j.get('mb', '?')} MB + 5%")


def first_full_over_tar(r):
    j = need(r, "backup")
    return path(j, "backup", "results", "ratio_ombra_over_tar"), f"{j.get('mb', '?')} MB"


def freeze_generations(r):
    """A full backup's writes held with the load's log generations on disk: store_backup.py's
    first full over the largest database's untruncated logs (2,048 MB: about 2,200 generations),
    or its `gens` case when it has one ({"generations": N, "this": {"freeze_ms": ms}})."""
    j = need(r, "store_backup")
    g = j.get("gens")
    if isinstance(g, dict) and isinstance(g.get("this"), dict):
        return path(j, "store_backup", "gens", "this", "freeze_ms"), f"{g.get('generations', '?')} generations"
    sizes = j.get("sizes") or {}
    if not sizes:
        raise NotMeasured("store_backup.json has no sizes")
    mb = max(sizes, key=int)
    return path(j, "store_backup", "sizes", mb, "first_full_freeze_ms"), f"first full, {mb} MB load's logs"


def freeze_all(r):
    """`ombra backup --all`: writes held for every database of a server in one shadow copy, from
    store_backup.json's `dbs` case (per number of databases, {"this": {"freeze_ms": ms}}; the
    largest number)."""
    j = r.get("store_backup")
    d = j.get("dbs") if isinstance(j, dict) else None
    if isinstance(d, dict) and d:
        n = max(d, key=int)
        return path(j, "store_backup", "dbs", n, "this", "freeze_ms"), f"{n} databases"
    if all(r.get(n) is None for n in ("store_backup", "vss_freeze")):
        need(r, "store_backup")
    raise NotMeasured("no `dbs` case in store_backup.json (bench/store_backup.py --cases dbs)")


# id, label, unit, better, goal (op, value), guarded, extractor. A row that is not guarded is a
# comparison shown beside ours (its verdict says so); it is recorded, never flagged.
FIGURES = [
    ("replay_mb_s", "log replay during restore, MB/s of log", "MB/s", "higher", (">=", 500), True, replay_ombra),
    ("replay_pg_mb_s", "  beside: PostgreSQL 15 replay, MB/s", "MB/s", "higher", None, False, replay_pg),
    ("restore_over_untar", "restore+replay time / zstd -d | tar -x", "x", "lower", ("<=", 0.7), True,
     restore_over_untar),
    ("restore_over_untar_sync", "  beside: the same / (tar -x + its sync -f)", "x", "lower", None, False,
     restore_over_untar_sync),
    ("floor_over_untar", "  beside: the disk's floor for its bytes / tar -x", "x", "lower", None, False,
     floor_over_untar),
    ("restore_over_floor", "  beside: restore+replay / the disk's floor", "x", "lower", None, False,
     restore_over_floor),
    ("restore_device_busy", "  beside: the disk busy during the restore / its time", "x", "higher", None, False,
     restore_device_busy),
    ("final_full_over_untar", "  beside: a full of the end state (no logs) / tar -x", "x", "lower",
     None, False, final_full_over_untar),
    ("restore_mem_over_untar", "  the same on tmpfs (storage keeps up)", "x", "lower", ("<=", 0.7), True,
     restore_mem_over_untar),
    ("final_full_mem_over_untar", "  beside: a full of the end state on tmpfs / tar -x", "x", "lower", None, False,
     final_full_mem_over_untar),
    ("second_full_stored_pct", "2nd full, 5% new mail: stored / db size", "%", "lower", ("<=", 7), True,
     second_full_stored),
    ("second_full_time", "2nd full, 5% new mail: time / 1st full", "x", "lower", ("<=", 0.3), True,
     second_full_time),
    ("freeze_generations_ms", "writes held, full with ~2,200 gens on disk", "ms", "lower", ("<", 10), True,
     freeze_generations),
    ("freeze_all_ms", "writes held, 100 dbs in one shadow copy", "ms", "lower", ("<", 10), True, freeze_all),
    ("first_full_over_tar", "1st full speed / tar | zstd -1 -T0", "x", "higher", (">=", 0.87), True,
     first_full_over_tar),
]

OPS = {">=": lambda v, g: v >= g, "<=": lambda v, g: v <= g, "<": lambda v, g: v < g, ">": lambda v, g: v > g}


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "MB/s":
        return f"{v:,.0f}"
    if unit in ("%", "ms"):
        return f"{v:.1f}"
    return f"{v:.2f}"


def goal_text(goal, unit):
    if goal is None:
        return "-"
    op, g = goal
    return f"{op.replace('>=', '≥').replace('<=', '≤')} {g}{'%' if unit == '%' else ''}" + (
        f" {unit}" if unit in ("ms", "MB/s") else "")


# ---- rounds -> figures -----------------------------------------------------------------------

def load_round(d):
    """A round's results: {name: json or None, "_why": {name: reason}, "_scripts": names}."""
    d = pathlib.Path(d)
    r = {"_why": {}, "_scripts": set()}
    meta = d / "round.json"
    if meta.exists():  # written by a run: which benchmarks existed, and why any did not give JSON
        m = json.loads(meta.read_text())
        r["_why"] = m.get("why", {})
        r["_scripts"] = set(m.get("scripts", []))
    else:
        r["_scripts"] = {b[2] for b in BENCHES if (ROOT / b[1]).exists()}
    for _, script, js, _, _ in BENCHES:
        name = js[:-5]
        p = d / js
        r[name] = None
        if p.exists():
            try:
                r[name] = json.loads(p.read_text())
            except ValueError as e:
                r["_why"][name] = f"{p}: not JSON ({e})"
        elif name not in r["_why"]:
            r["_why"][name] = (f"{script} is not on this branch" if not (ROOT / script).exists()
                               else f"no {js} in {d}")
    return r


def summarize(rounds):
    """{figure id: {"values", "median", "min", "max", "condition"} or {"not_measured": why}}."""
    out = {}
    for fid, _, _, _, _, _, fn in FIGURES:
        vals, conds, whys = [], set(), []
        for r in rounds:
            try:
                v, c = fn(r)
                vals.append(v)
                conds.add(c)
            except NotMeasured as e:
                whys.append(str(e))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                whys.append(f"unreadable result ({type(e).__name__}: {e})")
        if not vals:
            out[fid] = {"not_measured": whys[0] if whys else "no rounds"}
            continue
        e = {"values": vals, "median": statistics.median(vals), "min": min(vals), "max": max(vals),
             "condition": " / ".join(sorted(conds)), "rounds": len(rounds)}
        if whys:
            e["missing_rounds"] = whys
        out[fid] = e
    return out


def verdict(fig, this, rec):
    """(text, regressed) for one row."""
    _, _, unit, better, goal, guarded, _ = fig
    if "not_measured" in this:
        return "", False
    parts = []
    if goal is not None:
        parts.append("meets goal" if OPS[goal[0]](this["median"], goal[1]) else "misses goal")
    else:
        parts.append("comparison")
    regressed = False
    if rec is not None:
        worse = this["median"] < rec["min"] if better == "higher" else this["median"] > rec["max"]
        improved = this["median"] > rec["max"] if better == "higher" else this["median"] < rec["min"]
        if worse and guarded:
            parts.append("REGRESSED")
            regressed = True
        elif worse:
            parts.append("below recorded" if better == "higher" else "above recorded")
        elif improved:
            parts.append("better than recorded")
    return "; ".join(parts), regressed


def cell(e, unit):
    if e is None:
        return "-"
    if "not_measured" in e:
        return "not measured"
    s = f"{fmt(e['median'], unit)} [{fmt(e['min'], unit)}-{fmt(e['max'], unit)}] n={len(e['values'])}"
    return s


def recorded_for(record, fid, this):
    """The recorded entry for this figure at the same condition (sizes), or (None, why not)."""
    entries = (record or {}).get("figures", {}).get(fid) or {}
    if "not_measured" in this:
        return None, None
    if this["condition"] in entries:
        return entries[this["condition"]], None
    if entries:
        return None, "recorded only at " + ", ".join(sorted(entries))
    return None, "nothing recorded"


def table(this, record):
    """The table's lines and whether a guarded figure regressed."""
    w = [44, 10, 30, 30]
    head = (f"{'figure':<{w[0]}} | {'goal':<{w[1]}} | {'this run: median [min-max]':<{w[2]}} | "
            f"{'recorded: median [min-max]':<{w[3]}} | verdict")
    lines = [head, "-+-".join("-" * x for x in w) + "-+-" + "-" * 24]
    notes = []
    regressed = []
    for fig in FIGURES:
        fid, label, unit = fig[0], fig[1], fig[2]
        t = this[fid]
        rec, why_not = recorded_for(record, fid, t)
        v, bad = verdict(fig, t, rec)
        if bad:
            regressed.append(label.strip())
        if "not_measured" in t:
            v = f"not measured: {t['not_measured']}"
        rcell = cell(rec, unit) if rec else "-"
        lines.append(f"{label:<{w[0]}} | {goal_text(fig[4], unit):<{w[1]}} | {cell(t, unit):<{w[2]}} | "
                     f"{rcell:<{w[3]}} | {v}")
        if "not_measured" not in t:
            n = f"{label.strip()}: {t['condition']}"
            if rec:
                n += f"; recorded {rec.get('date', '?')} at {rec.get('commit', '?')}"
            elif why_not:
                n += f"; not compared: {why_not}"
            if t.get("missing_rounds"):
                n += f"; {len(t['values'])} of {t['rounds']} rounds ({t['missing_rounds'][0]})"
            notes.append(n)
    return lines, notes, regressed


# ---- the record ------------------------------------------------------------------------------

def git_commit():
    try:
        c = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, check=True).stdout.strip()
        # the benchmarks rewrite their results and pictures: not a change to what is measured
        d = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!bench/results", ":!docs/plots"], capture_output=True, text=True).stdout.strip()
        return c + ("-dirty" if d else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_record(p):
    if not p.exists():
        return None
    try:
        rec = json.loads(p.read_text())
    except ValueError as e:
        die(f"{p} is not JSON ({e}). HINT: git checkout it, or --record anew")
    if not isinstance(rec, dict) or not isinstance(rec.get("figures", {}), dict):
        die(f"{p} has no figures object. HINT: git checkout it, or --record anew")
    for fid, by_cond in rec.get("figures", {}).items():
        for cond, e in (by_cond or {}).items():
            if not (isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in ("median", "min", "max"))
                    and isinstance(e.get("values"), list)
                    and all(isinstance(v, (int, float)) for v in e["values"])):
                die(f"{p}: figure {fid} at {cond!r} lacks its values, median, min or max")
    return rec


def write_record(p, this, old, commit, date, add=False):
    """This run becomes the baseline of each figure it measured (at its condition); a figure it
    did not measure, or measured at other sizes, keeps what was recorded. With add, this run's
    rounds join the recorded ones instead (a spread over more rounds: fewer false alarms)."""
    rec = {"about": "bench/figures.py --record: per figure and condition (sizes), the recorded rounds' "
                    "values, their median and spread (min-max), the commit and date",
           "figures": dict((old or {}).get("figures", {}))}
    for fid, e in this.items():
        if "not_measured" in e:
            continue
        values, at = list(e["values"]), commit
        prev = (rec["figures"].get(fid) or {}).get(e["condition"])
        if add and prev:
            values = prev["values"] + values
            at = commit if prev.get("commit") == commit else f"{prev.get('commit')}+{commit}"
        entry = {"values": values, "median": statistics.median(values), "min": min(values), "max": max(values),
                 "commit": at, "date": date}
        rec["figures"][fid] = dict(rec["figures"].get(fid) or {}, **{e["condition"]: entry})
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


# ---- running the benchmarks ------------------------------------------------------------------

def run_round(n, out, a, extra):
    """Runs each benchmark that exists once; their JSONs go to out/. Returns the failures."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {"why": {}, "scripts": [], "failed": []}
    for name, script, js, full, quick in BENCHES:
        if a.only and name not in a.only:
            meta["why"][js[:-5]] = f"left out (--only {','.join(sorted(a.only))})"
            continue
        if not (ROOT / script).exists():
            continue  # load_round says so
        meta["scripts"].append(js)
        args = list(quick if a.quick else full) + extra.get(name, [])
        dest = RESULTS / js
        saved = dest.read_bytes() if dest.exists() else None
        cmd = [sys.executable, str(ROOT / script), "--build", a.build, *args]
        print(f"== round {n}: {' '.join(shlex.quote(c) for c in [script, *cmd[3:]])}", flush=True)
        t0 = time.time()
        try:
            with open(out / f"{name}.log", "w") as log:
                p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                last = ""
                for line in p.stdout:
                    log.write(line)
                    print("   " + line, end="", flush=True)
                    last = line.strip() or last
                rc = p.wait()
            fresh = dest.exists() and dest.stat().st_mtime >= t0 - 1  # not the JSON of an older run
            if rc == 0 and fresh:
                shutil.copyfile(dest, out / js)
            elif rc == 0:
                meta["why"][js[:-5]] = f"{script} exited 0 but did not write {dest}"
            else:
                meta["why"][js[:-5]] = f"{script} failed (exit {rc}): {last[:160]}; see {out / (name + '.log')}"
                meta["failed"].append(script)
        finally:  # interrupted too: bench/results keeps the runs committed there
            if not a.keep_results:
                if saved is None:
                    dest.unlink(missing_ok=True)
                else:
                    dest.write_bytes(saved)
    (out / "round.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta["failed"]


def parse_extra(items):
    names = {b[0] for b in BENCHES}
    extra = {}
    for it in items or []:
        name, sep, args = it.partition("=")
        if not sep or name not in names:
            die(f"--bench-args {it!r}: want NAME=ARGS with NAME one of "
                             f"{', '.join(sorted(names))}")
        extra.setdefault(name, []).extend(shlex.split(args))
    return extra


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every benchmark (default 3)")
    ap.add_argument("--quick", action="store_true", help="small sizes, to try it (its own recorded baseline)")
    ap.add_argument("--build", default=os.environ.get("BUILD_RELEASE", str(ROOT / "build-release")))
    ap.add_argument("--bench-args", action="append", metavar="NAME=ARGS",
                    help="more arguments to one benchmark, e.g. restore='--incrementals 2'")
    ap.add_argument("--only", help="run only these benchmarks (comma-separated names)")
    ap.add_argument("--from-results", nargs="+", metavar="DIR",
                    help="no run: each DIR is one round's result JSONs (bench/results: the last run)")
    ap.add_argument("--record", action="store_true", help="this run becomes the recorded baseline")
    ap.add_argument("--add-to-record", action="store_true",
                    help="this run's rounds join the recorded ones (same sizes) rather than replace them")
    ap.add_argument("--record-file", default=str(RECORD))
    ap.add_argument("--keep-results", action="store_true",
                    help="leave the last round's JSONs in bench/results (make bench); else they are put back")
    ap.add_argument("--rounds-dir", help="where a run keeps its rounds (default scratch/bench/figures/TIME)")
    ap.add_argument("--json-out", help="also write this run's figures (the table's data) to FILE")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    a.only = set(a.only.split(",")) if a.only else None
    if a.only and a.only - {b[0] for b in BENCHES}:
        ap.error(f"--only: unknown benchmark {', '.join(sorted(a.only - {b[0] for b in BENCHES}))}")
    extra = parse_extra(a.bench_args)
    record_path = pathlib.Path(a.record_file)
    record = read_record(record_path)

    failed = []
    if a.from_results:
        dirs = [pathlib.Path(d) for d in a.from_results]
        for d in dirs:
            if not d.is_dir():
                die(f"--from-results {d}: no such directory")
    else:
        a.build = os.path.abspath(a.build)
        if not os.access(f"{a.build}/src/cli/ombra", os.X_OK):
            die(f"{a.build}/src/cli/ombra is missing: build first (--build DIR)")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        base = pathlib.Path(a.rounds_dir or ROOT / "scratch" / "bench" / "figures" / stamp)
        dirs = [base / f"round-{i + 1}" for i in range(a.rounds)]
        for i, d in enumerate(dirs):
            failed += run_round(i + 1, d, a, extra)
        print(f"\nthe rounds' results: {base} (bench/figures.py --from-results {base}/round-*)")

    rounds = [load_round(d) for d in dirs]
    this = summarize(rounds)
    lines, notes, regressed = table(this, record)
    print()
    print("\n".join(lines))
    print()
    src = "read from " + ", ".join(map(str, dirs)) if a.from_results else f"{len(dirs)} round{'s' if len(dirs) > 1 else ''} run now"
    print(f"this run: {src}; median and spread (min-max) over the rounds, each round one run of each "
          f"benchmark; REGRESSED: this run's median beyond the recorded spread on the bad side")
    for n in notes:
        print(f"  {n}")
    commit = git_commit()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if a.json_out:
        pathlib.Path(a.json_out).write_text(json.dumps({"commit": commit, "date": date, "rounds": len(dirs),
                                                        "figures": this}, indent=1) + "\n")
    if a.record or a.add_to_record:
        short = [f for f, e in this.items() if "values" in e and len(e["values"]) < MIN_RECORD_ROUNDS]
        if short:
            print(f"bench/figures.py: not recorded: {', '.join(short)} measured in fewer than "
                  f"{MIN_RECORD_ROUNDS} rounds (a spread of fewer says nothing). HINT: --rounds "
                  f"{MIN_RECORD_ROUNDS}", file=sys.stderr)
            return 2
        if failed:
            print(f"bench/figures.py: not recorded: {', '.join(failed)} failed", file=sys.stderr)
            return 3
        write_record(record_path, this, record, commit, date, add=a.add_to_record)
        print(f"{'added to' if a.add_to_record else 'recorded as'} the baseline: {record_path} "
              f"(commit {commit}, {date})")
    if failed:
        print(f"FAILED: {', '.join(failed)} (see the logs in the rounds' folders)")
        return 3
    if regressed:
        print(f"REGRESSED: {', '.join(regressed)}. One run can be weather: run make bench again; a real "
              f"regression repeats")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
