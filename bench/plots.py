#!/usr/bin/env python3
"""The benchmark results as pictures: reads bench/results/*.json, writes for each plot a gnuplot
data file and script into docs/plots/ and runs gnuplot on it, which writes docs/plots/<name>.svg.
`make plots` runs it; `make bench` runs that at its end. A result file that is missing leaves its
plot as it was (with a line saying so): the pictures follow whatever was measured last.

    bench/plots.py [--results DIR] [--out DIR] [--gnuplot PATH]

Plots (docs/design.md "Benchmark pictures" says what each shows and what it lacks):
  backup_restore.svg       MB/s of a full backup and of a restore, Ombra beside tar|zstd, restic
                           and pgBackRest (backup.json, restore.json)
  freeze.svg               how long writes are held, by shadow copy provider and database size
                           (vss_freeze.json, store_backup.json)
  replication_lag.svg      generations closed on the active but not yet replayed on a passive
                           copy: over time when replication.json has the series (lag_series),
                           else its quantiles per number of copies (older results)
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TERM = ("set terminal svg size 860,460 dynamic noenhanced font 'Helvetica,12' background '#ffffff'")


def load(results, name):
    p = results / f"{name}.json"
    if not p.exists():
        print(f"bench/plots.py: {p} is missing: its plot is left as it was", file=sys.stderr)
        return None
    with open(p) as f:
        return json.load(f)


def val(x):
    """A number for gnuplot ("NaN" for what was not measured: no bar is drawn)."""
    return "NaN" if x is None else f"{x:.3f}"


def write(out, name, data, script):
    (out / f"{name}.dat").write_text(data)
    (out / f"{name}.gp").write_text(
        f"# Written by bench/plots.py from bench/results; `make plots` writes it again.\n"
        f"{TERM}\nset output '{name}.svg'\n{script}")


def backup_restore(out, results):
    b, r = load(results, "backup"), load(results, "restore")
    if not b or not r:
        return None
    br, rr = b["results"], r["results"]
    # Backup: Ombra's full, tar | zstd, restic's full, pgBackRest's full of the same data.
    # Restore: Ombra's (laying down and replay), zstd -d | tar -x, pgBackRest's; restic's restore
    # was not measured (NaN: no bar).
    rows = [
        ("Ombra", br.get("ombra_full_mb_s"), rr.get("restore_mb_s")),
        ("tar | zstd", br.get("tar_zstd_mb_s"), rr.get("tar_zstd_x_mb_s")),
        ("restic", br.get("restic_full_mb_s"), None),
        ("pgBackRest", br.get("pgbackrest_mb_s"), rr.get("pgbackrest_mb_s")),
    ]
    top = max(x for _, a, b in rows for x in (a, b) if x is not None) * 1.3
    data = "# tool backup_MB/s restore_MB/s\n" + "".join(
        f'"{n}" {val(x)} {val(y)}\n' for n, x, y in rows)
    script = f"""set title "Backup and restore of {b.get('mb', '?')} MB of data (MB/s, higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "MB/s (1 MB = 1,000,000 bytes)"
set yrange [0:{top:.0f}]
set grid ytics
set key top left
set xlabel "restic's restore was not measured (no bar).  backup.json: {b.get('time', '?')}, restore.json: {r.get('time', '?')}" font ',10'
plot 'backup_restore.dat' using 2:xtic(1) title "full backup" lc rgb '#3465a4', \\
     '' using 3 title "restore" lc rgb '#f57900'
"""
    write(out, "backup_restore", data, script)
    return "backup_restore"


def freeze(out, results):
    v, s = load(results, "vss_freeze"), load(results, "store_backup")
    if not v:
        return None
    mb = v.get("mb", 1024)
    data = "# provider size_MB freeze_ms (median of the runs)\n"
    plots = []
    colours = {"held": "#4e9a06", "reflink": "#3465a4", "btrfs": "#75507b", "copy": "#cc0000"}
    for i, (name, p) in enumerate(sorted(v["providers"].items())):
        data += f"# {name}\n{mb} {val(p['freeze_ms'])}\n\n\n"
        plots.append(f"'freeze.dat' index {i} using 1:2 with points pt 7 ps 1.4 "
                     f"lc rgb '{colours.get(name, '#555753')}' title '{name} (ombra vss, test writer)'")
    if s:
        k = len(v["providers"])
        pts = sorted((int(size), x["freeze_ms"]) for size, x in s["sizes"].items())
        data += "# held: the store's writer, a live database under deliveries\n" + "".join(
            f"{size} {val(ms)}\n" for size, ms in pts) + "\n\n"
        plots.append(f"'freeze.dat' index {k} using 1:2 with linespoints pt 5 ps 1.2 lw 2 "
                     f"lc rgb '#4e9a06' dt 2 title 'held (the store writer, live database)'")
    script = f"""set title "Writes held during a shadow copy, by provider and data size (ms, log scale)"
set logscale y
set logscale x
set ylabel "freeze (ms): writes held"
set xrange [50:4000]
set yrange [0.5:5000]
set grid
set key top left font ',10'
set xlabel "data in the shadow copy (MB)\\ncopy: writes held while every byte is copied; reflink, btrfs: a clone; held: page writes deferred" font ',10'
plot {", ".join(plots)}
"""
    write(out, "freeze", data, script)
    return "freeze"


def replication(out, results):
    r = load(results, "replication")
    if not r:
        return None
    series = {(k, srv): p["lag_series"] for k, c in r["ombra"].items() if isinstance(c, dict)
              for srv, p in c.get("passives", {}).items() if p.get("lag_series")}
    if series:
        data, plots = "", []
        for i, ((k, srv), pts) in enumerate(sorted(series.items())):
            data += f"# {k} {srv}: seconds generations_not_replayed\n" + "".join(
                f"{t:.2f} {n}\n" for t, n in pts) + "\n\n"
            plots.append(f"'replication_lag.dat' index {i} using 1:2 with steps lw 2 "
                         f"title '{k}: copy on {srv}'")
        script = f"""set title "Replication lag under a steady delivery load ({r.get('time', '?')})"
set xlabel "seconds into the load"
set ylabel "log generations closed on the active, not replayed on the copy"
set yrange [0:*]
set grid
set key top left
plot {", ".join(plots)}
"""
    else:
        rows = []
        top = 1
        for k in ("copies1", "copies2"):
            for srv, p in sorted(r["ombra"].get(k, {}).get("passives", {}).items()):
                rows.append((f"{k[-1]} cop{'y' if k[-1] == '1' else 'ies'}: {srv}",
                             p.get("not_replayed_p50"), p.get("not_replayed_p99"),
                             p.get("replay_queue_max")))
        top = max([top] + [x for row in rows for x in row[1:] if x is not None]) * 1.35
        data = "# copy p50 p99 max (log generations not replayed)\n" + "".join(
            f'"{n}" {val(a)} {val(b)} {val(c)}\n' for n, a, b, c in rows)
        script = f"""set title "Replication lag under a steady delivery load ({r.get('time', '?')})"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel "log generations not replayed"
set yrange [0:{top:.0f}]
set grid ytics
set key top left horizontal
set xlabel "This run kept no time series (bench/replication.py records lag_series from now on):\\nquantiles over {r['params'].get('seconds', '?')} s x {r['params'].get('rounds', '?')} rounds of deliveries, sampled every 0.2 s" font ',10'
plot 'replication_lag.dat' using 2:xtic(1) title "median" lc rgb '#3465a4', \\
     '' using 3 title "99th percentile" lc rgb '#f57900', \\
     '' using 4 title "max (replay queue)" lc rgb '#cc0000'
"""
    write(out, "replication_lag", data, script)
    return "replication_lag"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=ROOT / "bench" / "results", type=pathlib.Path)
    ap.add_argument("--out", default=ROOT / "docs" / "plots", type=pathlib.Path)
    ap.add_argument("--gnuplot", default=shutil.which("gnuplot") or "gnuplot")
    a = ap.parse_args()
    if not shutil.which(a.gnuplot) and not os.access(a.gnuplot, os.X_OK):
        sys.exit("bench/plots.py: gnuplot is missing. HINT: scripts/install-deps --bench")
    a.out.mkdir(parents=True, exist_ok=True)
    made = [n for n in (backup_restore(a.out, a.results), freeze(a.out, a.results),
                        replication(a.out, a.results)) if n]
    for n in made:
        p = subprocess.run([a.gnuplot, f"{n}.gp"], cwd=a.out, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"bench/plots.py: gnuplot {a.out}/{n}.gp failed:\n{p.stderr}")
        print(f"wrote {a.out / n}.svg")


if __name__ == "__main__":
    main()
