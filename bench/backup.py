#!/usr/bin/env python3
"""Full backups side by side, one run, warm cache: `ombra backup --type full` of a store database
(held provider, default zstd level) against `tar -cf - FILES | zstd -1 -T0` of the same files
(the .edb and the logs), and a second full backup after 5% new mail (messages, a twentieth of
the first load's, into the same mailboxes): bytes Ombra stores beside restic's second backup of
the same files, as a share of the database and the second full's time over the first's (a
synthetic full: the pages the change map names, the rest the first full's blocks). Prints a table and
writes bench/results/backup.json. pgBackRest's full backup (zst level 1, process-max 2) of a
PostgreSQL database of about the same size (bench/pgbackrest_full.sh; root, postgresql and
pgbackrest installed; pgbench's data compresses far better than mail). Then an incremental
backup after about 100 MB of new mail (its log).

    bench/backup.py [--build DIR] [--mb 1024]
"""
import json
import os
import shutil
import tempfile
import time

from benchlib import MSG, ROOT, ombra_env, parser, sh, stop_all, store_daemons, utc_stamp


def main():
    ap = parser(__doc__)
    ap.add_argument("--mb", type=int, default=1024)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ombra-bb-", dir="/tmp")
    env = ombra_env(tmp, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=f"{tmp}/restic")
    log = open(f"{tmp}/daemons.log", "w")
    daemons = store_daemons(a.build, env, log)
    ombra = f"{a.build}/src/cli/ombra"
    out = {}
    try:
        time.sleep(1)
        sh(f"{ombra} db new db1", env)
        n = a.mb * 1000 * 1000 // MSG
        sh(f"{ombra} mail load db1 --mailboxes 200 --messages {n} --size {MSG}", env)
        info = json.loads(sh(f"{ombra} db show db1 --json", env)[1])
        info = info.get("db", info)
        sh(f"{ombra} repo init {tmp}/repo", env)
        # a first full backup truncates the load's logs (as in a store in service), not measured
        sh(f"{ombra} repo init {tmp}/warm", env)
        sh(f"{ombra} backup --repo {tmp}/warm --type full db1", env)
        shutil.rmtree(f"{tmp}/warm")
        files = f"{info['edb']} {info['logs']}"
        size = int(sh(f"du -cb {files} | tail -1 | cut -f1", env)[1])
        sh(f"cat {files}/* {info['edb']} > /dev/null", env)  # warm the cache
        secs, o = sh(f"{ombra} backup --repo {tmp}/repo --type full db1 --json", env)
        r1 = json.loads(o)
        tsecs, _ = sh(f"tar -cf - {files} 2>/dev/null | zstd -1 -T0 -q > {tmp}/tar.zst", env)
        tar_bytes = os.path.getsize(f"{tmp}/tar.zst")
        sh("restic init -q", env)
        rsecs, _ = sh(f"restic backup -q {files}", env)
        # 5% new mail: a twentieth of the messages again, into the same mailboxes (new pages, and
        # the mailboxes' index pages they touch)
        sh(f"{ombra} mail load db1 --mailboxes 200 --messages {n // 20} --size {MSG} --seed 7", env)
        secs2, o = sh(f"{ombra} backup --repo {tmp}/repo --type full db1 --json", env)
        r2 = json.loads(o)
        before = json.loads(sh("restic stats --mode raw-data --json", env)[1])["total_size"]
        rsecs2, _ = sh(f"restic backup -q {files}", env)
        after = json.loads(sh("restic stats --mode raw-data --json", env)[1])["total_size"]
        load_mb = 100
        sh(f"{ombra} mail load db1 --mailboxes 200 --messages {load_mb * 1000 * 1000 // MSG} --size {MSG} --seed 8", env)
        isecs, o = sh(f"{ombra} backup --repo {tmp}/repo --type incremental db1 --json", env)
        ri = json.loads(o)
        pg = None
        if os.geteuid() == 0 and shutil.which("pgbackrest") and os.path.isdir("/usr/lib/postgresql"):
            pg = json.loads(sh(f"SCALE={max(1, a.mb * 70 // 1024)} {ROOT}/bench/pgbackrest_full.sh", env)[1])
        mb = size / 1e6
        out = {
            "incremental_s": ri["seconds"], "incremental_bytes_read": ri["bytes_read"],
            "pgbackrest": pg,
            "pgbackrest_mb_s": pg["pg_bytes"] / 1e6 / pg["seconds"] if pg else None,
            "files_bytes": size,
            "ombra_full_s": r1["seconds"], "ombra_full_mb_s": r1["bytes_read"] / 1e6 / r1["seconds"],
            "ombra_stored_bytes": r1["bytes_stored"], "ombra_freeze_ms": r1["freeze_ms"],
            "tar_zstd_s": tsecs, "tar_zstd_mb_s": mb / tsecs, "tar_zstd_bytes": tar_bytes,
            "restic_full_s": rsecs, "restic_full_mb_s": mb / rsecs,
            "ratio_ombra_over_tar": (r1["bytes_read"] / 1e6 / r1["seconds"]) / (mb / tsecs),
            "second_full_ombra_stored": r2["bytes_stored"], "second_full_restic_added": after - before,
            "second_full_ombra_s": r2["seconds"], "second_full_restic_s": rsecs2,
            # issue 21's two figures: stored / database size and time / the first full's time
            "second_full_stored_over_db": r2["bytes_stored"] / size,
            "second_full_time_over_first": r2["seconds"] / r1["seconds"],
            "second_full_changemap": r2["sets"][0].get("changemap"),
        }
        print(f"full backup of {mb:.0f} MB: Ombra {out['ombra_full_mb_s']:.0f} MB/s "
              f"({r1['bytes_stored'] / 1e6:.0f} MB stored, writes held {r1['freeze_ms']:.1f} ms); "
              f"tar | zstd -1 -T0 {out['tar_zstd_mb_s']:.0f} MB/s ({tar_bytes / 1e6:.0f} MB); "
              f"restic {out['restic_full_mb_s']:.0f} MB/s; ratio Ombra/tar {out['ratio_ombra_over_tar']:.2f}")
        if pg:
            print(f"pgBackRest full backup of a {pg['pg_bytes'] / 1e6:.0f} MB PostgreSQL database: "
                  f"{out['pgbackrest_mb_s']:.0f} MB/s ({pg['repo_bytes'] / 1e6:.0f} MB stored); ratio Ombra/pgBackRest "
                  f"{out['ombra_full_mb_s'] / out['pgbackrest_mb_s']:.2f}")
        print(f"incremental backup after {load_mb} MB of new mail: {ri['seconds']:.2f} s, "
              f"{ri['bytes_read'] / 1e6:.0f} MB of log read")
        print(f"second full after 5% new mail: Ombra stored {r2['bytes_stored'] / 1e6:.1f} MB in "
              f"{r2['seconds']:.1f} s; restic added {(after - before) / 1e6:.1f} MB in {rsecs2:.1f} s")
        cm = r2["sets"][0].get("changemap") or {}
        print(f"second full: stored / database size {out['second_full_stored_over_db'] * 100:.1f}% (goal <= 7%), "
              f"time / first full's time {out['second_full_time_over_first']:.2f} (goal <= 0.3); "
              + ("read every page: " + cm.get("reason", "?") if cm.get("read_all") else
                 f"synthetic: {cm.get('pages_checked_now')} pages read, {cm.get('pages_reused')} reused"))
    finally:
        stop_all(daemons)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    with open(f"{ROOT}/bench/results/backup.json", "w") as f:
        json.dump({"time": utc_stamp(), "mb": a.mb, "results": out}, f,
                  indent=1)


if __name__ == "__main__":
    main()
