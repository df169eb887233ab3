#!/usr/bin/env python3
"""Restore side by side, one run, warm cache: `ombra restore` of a store database (about --mb MB)
from a full backup and three incrementals (about --incr-mb MB of new mail each) into another
database, with its log replay, against `zstd -d -T0 | tar -x` of the same files (the full's .edb
and every log generation the restore lays down) and pgBackRest's restore of a PostgreSQL
database of about the same size (bench/pgbackrest_restore.sh; root, postgresql, pgbackrest and
bc installed). The restore is verified: the target's mail digest equals the source's at the last
incremental. Prints a table and writes bench/results/restore.json.

    bench/restore.py [--build DIR] [--mb 1024] [--incr-mb 100] [--incrementals 3] [--rounds 3] [--no-pg] [--encrypt]
                     [--json FILE] [--dir /tmp]

--dir puts the store, the repository and both sides' targets elsewhere: /dev/shm (tmpfs) is storage
that keeps up with both sides, where the software decides the ratio, not the disk.
"""
import ctypes
import errno
import itertools
import json
import mmap
import os
import shutil
import tempfile
import threading
import time

from benchlib import (GEN, MSG, PG_BIN, ROOT, disk_counters, disk_delta, fmt, fstype, median, need_build, ombra_env,
                      parser, ratio, sh, stop_all, store_daemons, utc_stamp)


def files_size(paths):
    return sum(os.path.getsize(p) for p in paths)


def direct_write(path, n, threads=2, chunk=8 << 20):
    """Seconds to write n bytes (rounded up to 4 KiB) of random data to path, the way the restore
    writes its .edb (threads writers of chunk-sized O_DIRECT writes), then fdatasync; None where
    O_DIRECT is refused (tmpfs on older kernels)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as e:
        if e.errno == errno.EINVAL:
            return None
        raise
    try:
        bufs = []
        for _ in range(threads):
            # In huge pages, as the restore's buffers (src/base/mem.h): a direct write from 4 KiB
            # pages is much slower on this VM's disk, so that would be no floor. 2 MiB more
            # mapped, to cut a 2 MiB-aligned view out of; the advice before the first touch.
            huge = 2 << 20
            m = mmap.mmap(-1, chunk + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                m.madvise(mmap.MADV_HUGEPAGE)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            off = -addr % huge
            v = memoryview(m)[off:off + chunk]
            v[:] = os.urandom(chunk)
            bufs.append((m, v))
        n = (n + 4095) // 4096 * 4096
        nchunks = (n + chunk - 1) // chunk
        take = itertools.count()
        errors = []

        def writer(buf):
            try:
                while (i := next(take)) < nchunks:
                    ln = min(chunk, n - i * chunk)
                    os.pwrite(fd, buf[:ln], i * chunk)
            except OSError as e:
                errors.append(e)

        t0 = time.monotonic()
        ts = [threading.Thread(target=writer, args=(v,)) for _, v in bufs]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise errors[0]
        os.fdatasync(fd)
        return time.monotonic() - t0
    finally:
        os.close(fd)


def disk_floor(untar, path, n):
    """The disk's floor for n bytes in a new file, as a restore that keeps the target's database
    until the new one is whole and checked must write them: the faster of tar's extracted files
    from the page cache through the cache and fdatasync, and random data in two writers of 8 MiB
    O_DIRECT writes and fdatasync. The files of the round before are removed (and that synced)
    untimed. Overwriting a file in place is faster on some storage (nothing allocated: on this
    VM's disk about 1.5x); a restore that did so would destroy the target before it knew the
    backup whole, so it is not the floor."""
    t = {}
    for how in ("cached", "direct"):
        f = f"{path}.{how}"
        if os.path.exists(f):
            os.unlink(f)
        sh(f"sync -f {os.path.dirname(f)}")
        if how == "cached":
            t[how], _ = sh(f"cat {untar}/* | head -c {n} | dd of={f} bs=8M iflag=fullblock "
                           f"conv=fdatasync status=none")
        else:
            t[how] = direct_write(f, n)
    return min(x for x in t.values() if x is not None)


def ombra_run(a, tmp, env):
    """Builds the chain, lays its files down for tar (not timed), then --rounds times: the restore
    (verified) and tar's extraction, taking turns going first. Returns the figures (medians)."""
    ombra = f"{a.build}/src/cli/ombra"
    r = {}
    sh(f"{ombra} db new db1", env)
    n = a.mb * 1000 * 1000 // MSG
    t, _ = sh(f"{ombra} mail load db1 --mailboxes 200 --messages {n} --size {MSG}", env)
    print(f"loaded {n} messages of {MSG} bytes in {t:.1f} s", flush=True)
    # a first full backup truncates the load's logs (as in a store in service), not measured
    sh(f"{ombra} repo init {tmp}/warm{' --encrypt' if a.encrypt else ''}", env)
    sh(f"{ombra} backup --repo {tmp}/warm --type full db1", env)
    shutil.rmtree(f"{tmp}/warm")
    repo = f"{tmp}/repo"
    sh(f"{ombra} repo init {repo}{' --encrypt' if a.encrypt else ''}", env)
    full = json.loads(sh(f"{ombra} backup --repo {repo} --type full db1 --json", env)[1])
    incs = []
    digest = None
    for i in range(a.incrementals):
        sh(f"{ombra} mail load db1 --mailboxes 200 --messages {a.incr_mb * 1000 * 1000 // MSG} "
           f"--size {MSG} --seed {11 + i}", env)
        if i == a.incrementals - 1:  # no mail after this: the state the restore must give back
            digest = sh(f"{ombra} mail digest db1", env)[1].strip()
        incs.append(json.loads(sh(f"{ombra} backup --repo {repo} --type incremental db1 --json", env)[1]))
    if digest is None:
        digest = sh(f"{ombra} mail digest db1", env)[1].strip()
    print(f"chain: full ({full['bytes_read'] / 1e6:.0f} MB read) + {len(incs)} incrementals "
          f"({', '.join(str(x['sets'][0]['log_range']) for x in incs)})", flush=True)
    # The end state without its logs: a full backup of the same final state (no mail since the
    # last incremental) in a repository of its own, restored the same way. It lays the final .edb
    # and one generation and replays next to nothing: what this restore's way of laying costs for
    # the bytes that must be on the disk when it answers, i.e. what the chain's restore would come
    # to if its logs cost nothing (replayed into the pages before they are written, say). Not a
    # bound on every design: the laying itself could come nearer the disk's floor.
    final = f"{tmp}/final"
    sh(f"{ombra} repo init {final}{' --encrypt' if a.encrypt else ''}", env)
    sh(f"{ombra} backup --repo {final} --type full db1", env)

    # The files the restore lays down, laid down alone (no replay, new paths): tar's input, and a
    # second view of the laying-down rate.
    lay = f"{tmp}/lay"
    sh("sync")
    nr = json.loads(sh(f"{ombra} restore db1 --repo {repo} --edb {lay}/db1.edb --logs {lay}/logs "
                       f"--no-replay --json", env)[1])
    logdir = f"{lay}/logs/_restoredLogs"
    if not os.path.isdir(logdir):  # where the writer put them: the log folder itself
        logdir = f"{lay}/logs"
    logs = sorted(f for f in os.listdir(logdir) if f.endswith(".log"))
    files = [f"{lay}/db1.edb"] + [f"{logdir}/{f}" for f in logs]
    r["files_bytes"] = files_size(files)
    r["log_files"] = len(logs)
    tz = f"{tmp}/x.tar.zst"
    sh(f"tar -cf - -C {lay} db1.edb -C {logdir} {' '.join(logs)} | zstd -1 -T0 -q > {tz}")
    r["tar_zst_bytes"] = os.path.getsize(tz)
    shutil.rmtree(lay)

    # The target: another database, dismounted, allowing a restore over it.
    sh(f"{ombra} db new db2", env)
    sh(f"{ombra} db dismount db2", env)
    sh(f"{ombra} db set db2 --allow-restore on", env)
    untar = f"{tmp}/untar"
    # Each side replaces what it restored before, as a restore over a database does: the restore
    # db2's files, tar the files of its last extraction (GNU tar unlinks an existing file before
    # it extracts one). Freeing the old files' blocks is part of both (on a disk mounted with
    # discard it takes a while). Round 1 finds what an untimed restore and extraction left.
    sh(f"{ombra} restore db1 --repo {repo} --to db2", env)
    sh(f"{ombra} db dismount db2", env)  # as each round leaves it
    os.makedirs(untar)
    sh(f"zstd -d -T0 -q < {tz} | tar -xf - -C {untar} && sync")
    # The disk's floor: as many bytes as the restored database's .edb (what must be on the disk
    # when the restore answers; the generations it lays for its replay need not be), written to
    # a new file and fdatasync'd (disk_floor): the least a restore that answers with the database
    # durable needs here. Once untimed (as each side), then timed after both sides each round.
    edb = json.loads(sh(f"{ombra} db show db2 --json", env)[1])["edb"]
    r["floor_bytes"] = os.path.getsize(edb)
    floor = f"{tmp}/floor"
    disk_floor(untar, floor, r["floor_bytes"])
    rounds = []
    sides = ("ombra", "tar", "final")
    for i in range(a.rounds):  # the sides take turns going first (see bench/README.md, Noise)
        o = {}
        for side in sides[i % 3:] + sides[:i % 3]:
            if side in ("ombra", "final"):
                src = repo if side == "ombra" else final
                sh(f"find {src} -type f -exec cat {{}} + > /dev/null")  # warm
                sh("sync")
                d0 = disk_counters(tmp)
                wall, out = sh(f"{ombra} restore db1 --repo {src} --to db2 --json", env)
                if side == "ombra":
                    o["disk"] = disk_delta(d0, disk_counters(tmp))
                    o["res"], o["wall"] = json.loads(out), wall
                else:
                    o["final"] = wall
                sh(f"{ombra} db mount db2", env)
                got = sh(f"{ombra} mail digest db2", env)[1].strip()
                if got != digest:
                    raise RuntimeError(f"round {i + 1}: the database restored from {src} has the digest "
                                       f"{got}, not the source's {digest}")
                sh(f"{ombra} db dismount db2", env)
            else:
                sh(f"cat {tz} > /dev/null")  # warm
                sh("sync")
                d0 = disk_counters(tmp)
                o["tar"], _ = sh(f"zstd -d -T0 -q < {tz} | tar -xf - -C {untar}")
                o["tar_disk"] = disk_delta(d0, disk_counters(tmp))
                # what tar leaves dirty (Ombra's restore fsyncs every file it writes)
                o["tar_sync"], _ = sh(f"sync -f {untar}")
                ext = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(untar) for f in fs)
                if ext != r["files_bytes"]:
                    raise RuntimeError(f"tar extracted {ext} bytes, not {r['files_bytes']}")
        o["floor"] = disk_floor(untar, floor, r["floor_bytes"])
        if os.path.getsize(f"{floor}.cached") != r["floor_bytes"]:
            raise RuntimeError(f"{floor}.cached has {os.path.getsize(floor + '.cached')} bytes, "
                               f"not {r['floor_bytes']}")
        res, wall = o["res"], o["wall"]
        if res["bytes"] != r["files_bytes"]:
            print(f"restore.py: the restore laid down {res['bytes']} bytes, tar's input has "
                  f"{r['files_bytes']}: the comparison is not of the same files", flush=True)
        rp = res.get("replay") or {}
        replay_s = rp["ns"] / 1e9 if rp.get("ns") else None
        if res.get("lay_seconds"):  # the CLI's own figure (laying down may overlap the replay)
            lay_s, lay_how = res["lay_seconds"], "lay_seconds"
        else:  # laying down, then replay: the rest of the restore's seconds
            lay_s, lay_how = (res["seconds"] - replay_s if replay_s else None), "seconds - replay"
        if lay_s is not None and lay_s <= 0:
            lay_s = None  # not distinguishable
        gens = rp["last_gen"] - rp["first_gen"] + 1 if rp else None
        x = {"restore_wall_s": wall, "restore_s": res["seconds"], "restore_mb_s": res["bytes"] / 1e6 / wall,
             "laydown_s": lay_s, "laydown_mb_s": res["bytes"] / 1e6 / lay_s if lay_s else None,
             "replay_s": replay_s,
             "replay_gens_per_s": gens / replay_s if replay_s else None,
             "replay_log_mb_s": gens * GEN / 1e6 / replay_s if replay_s else None,
             "replay_transactions_per_s": rp["transactions"] / replay_s if replay_s else None,
             "replay_records_per_s": rp["records"] / replay_s if replay_s else None,
             "tar_zstd_x_s": o["tar"], "tar_zstd_x_mb_s": r["files_bytes"] / 1e6 / o["tar"],
             "tar_sync_s": o["tar_sync"], "round_ratio_ombra_over_tar": wall / o["tar"],
             "disk_floor_s": o["floor"], "disk_floor_mb_s": r["floor_bytes"] / 1e6 / o["floor"],
             "final_full_s": o["final"],
             # seconds the disk had a request in flight during the restore (None on tmpfs): near
             # its wall, less the start before the first write, the restore waits on the disk
             "restore_device_busy_s": o["disk"]["busy_s"] if o["disk"] else None,
             "laydown_from": lay_how,
             # the device's own count during each side (diskstats; None on tmpfs): what the
             # restore wrote, and what freeing blocks cost a disk mounted with discard
             "restore_disk": o["disk"], "tar_disk": o["tar_disk"],
             "first": (sides[i % 3:] + sides[:i % 3])[0]}
        rounds.append(x)
        dk = o["disk"]
        disk = (f", the device wrote {dk['written']:.0f} MB, discarded {dk['discarded']:.0f} MB and was "
                f"busy {dk['busy_s']:.2f} s during it" if dk else "")
        print(f"round {i + 1}: Ombra {x['restore_mb_s']:.0f} MB/s (verified; {wall:.2f} s, replay "
              f"{replay_s or 0:.2f} s{disk}), tar | zstd {x['tar_zstd_x_mb_s']:.0f} MB/s ({o['tar']:.2f} s)",
              flush=True)

    r.update({k: median([x[k] for x in rounds]) for k in rounds[0]
              if k not in ("first", "laydown_from", "restore_disk", "tar_disk")})
    r.update({
        "full_bytes_read": full["bytes_read"], "full_s": full["seconds"],
        "incrementals": [{"log_range": x["sets"][0]["log_range"], "bytes_read": x["bytes_read"],
                          "seconds": x["seconds"]} for x in incs],
        "sets": [s["type"] for s in res.get("sets", [])],
        "restore_bytes": res["bytes"], "replay": rp or None, "laydown_from": lay_how,
        "replay_generations": gens,
        "no_replay_s": nr["seconds"], "no_replay_mb_s": nr["bytes"] / 1e6 / nr["seconds"],
        "digest": digest, "verified": True, "rounds": rounds,
    })
    return r


def pg_run(a):
    """pgBackRest's restore of a PostgreSQL database of about the same size, or why not."""
    if a.no_pg:
        return None, "--no-pg"
    if os.geteuid() != 0:
        return None, "needs root (PostgreSQL runs as the postgres user)"
    missing = [x for x in ("pgbackrest", "bc", "runuser") if not shutil.which(x)]
    if not os.path.isdir(PG_BIN):
        missing.append("postgresql 15")
    if missing:
        return None, f"missing: {', '.join(missing)} (scripts/install-deps --bench)"
    try:
        t, o = sh(f"ROUNDS={a.rounds} SCALE={max(1, a.mb * 70 // 1024)} {ROOT}/bench/pgbackrest_restore.sh")
        return json.loads(o.strip().splitlines()[-1]), None
    except (RuntimeError, ValueError, IndexError) as e:
        return None, str(e).strip().splitlines()[-1][:300] if str(e).strip() else repr(e)


def main():
    ap = parser(__doc__)
    ap.add_argument("--mb", type=int, default=1024, help="database size (MB of mail)")
    ap.add_argument("--incr-mb", type=int, default=100, help="new mail before each incremental")
    ap.add_argument("--incrementals", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="timed restores of each side (the median)")
    ap.add_argument("--no-pg", action="store_true", help="skip pgBackRest")
    ap.add_argument("--encrypt", action="store_true",
                    help="an encrypted repository (AES-256-GCM; each file then checked by its XXH3-128)")
    ap.add_argument("--json", default=f"{ROOT}/bench/results/restore.json")
    ap.add_argument("--dir", default="/tmp", help="where the store, the repository and both sides' targets "
                    "go (e.g. /dev/shm: storage that keeps up with both)")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    if a.rounds < 1 or a.incrementals < 1 or a.mb < 1 or a.incr_mb < 1:
        raise SystemExit("restore.py: --rounds, --incrementals, --mb and --incr-mb must be at least 1")
    need_build(a.build, "restore.py")
    for x in ("zstd", "tar"):
        if not shutil.which(x):
            raise SystemExit(f"restore.py: {x} is missing (scripts/install-deps --bench)")
    tmp = tempfile.mkdtemp(prefix="ombra-br-", dir=a.dir)
    env = ombra_env(tmp, **({"OMBRA_REPO_PASSPHRASE": "bench passphrase"} if a.encrypt else {}))
    log = open(f"{tmp}/daemons.log", "w")
    daemons = store_daemons(a.build, env, log)
    fs = fstype(tmp)
    try:
        time.sleep(1)
        r = ombra_run(a, tmp, env)
    except Exception:
        log.flush()
        with open(f"{tmp}/daemons.log") as f:
            tail = f.read()[-3000:]
        if tail:
            print("restore.py: the daemons' last words:\n" + tail)
        raise
    finally:
        stop_all(daemons)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    pg, why = pg_run(a)
    if why:
        print(f"pgBackRest not run: {why}")
    elif not pg.get("verified", True):
        print("pgBackRest: the restored cluster did not start or lacks rows (figure kept)")
    pg_mb_s = pg["pg_bytes"] / 1e6 / pg["seconds"] if pg else None

    rows = [  # metric, Ombra, tar | zstd, pgBackRest
        ("restore MB/s (bytes / wall seconds)", r["restore_mb_s"], r["tar_zstd_x_mb_s"], pg_mb_s),
        ("restore seconds (lower is better)", r["restore_wall_s"], r["tar_zstd_x_s"],
         pg["seconds"] if pg else None),
        ("MB restored", r["restore_bytes"] / 1e6, r["files_bytes"] / 1e6, pg["pg_bytes"] / 1e6 if pg else None),
        (f"laying down MB/s ({r['laydown_from']})", r["laydown_mb_s"], None, None),
        ("log replay: generations (MiB)/s", r["replay_gens_per_s"], None, None),
        ("log replay: MB/s of log", r["replay_log_mb_s"], None, None),
        ("log replay: transactions/s", r["replay_transactions_per_s"], None, None),
        ("log replay: records/s", r["replay_records_per_s"], None, None),
    ]
    w = 40
    print()
    print(f"{'metric':<{w}} | {'Ombra':>10} | {'tar|zstd':>10} | {'pgBackRest':>10} | {'O/tar':>6} | {'O/pgBR':>6}")
    print(f"{'-' * w}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 6}-+-{'-' * 6}")
    for name, o, t, p in rows:
        nd = 2 if name.startswith("restore seconds") else 0
        print(f"{name:<{w}} | {fmt(o, nd):>10} | {fmt(t, nd):>10} | {fmt(p, nd):>10} | "
              f"{fmt(ratio(o, t), 2):>6} | {fmt(ratio(o, p), 2):>6}")
    rp = r["replay"] or {}
    print()
    print(f"chain: {' + '.join(r['sets'])}; {r['restore_bytes'] / 1e6:.0f} MB laid down "
          f"(.edb + {r['log_files']} log generations), replay of generations "
          f"{rp.get('first_gen')}-{rp.get('last_gen')}: {rp.get('records')} records, "
          f"{rp.get('transactions')} transactions in {fmt(r['replay_s'], 2)} s; the CLI's own "
          f"seconds {r['restore_s']:.2f} of {r['restore_wall_s']:.2f} wall")
    rr = [x["round_ratio_ombra_over_tar"] for x in r["rounds"]]
    walls = ", ".join(f"{x['restore_wall_s']:.2f}" for x in r["rounds"])
    tars = ", ".join(f"{x['tar_zstd_x_s']:.2f}" for x in r["rounds"])
    print(f"{len(rr)} rounds (medians above): Ombra/tar per round {min(rr):.2f} to {max(rr):.2f}; "
          f"seconds per round: Ombra {walls}; tar | zstd {tars}")
    floors = ", ".join(f"{x['disk_floor_s']:.2f}" for x in r["rounds"])
    print(f"the disk's floor: the restored .edb's {r['floor_bytes'] / 1e6:.0f} MB written to a new file and "
          f"fdatasync'd (the faster of through the cache and 2 x O_DIRECT), nothing else: "
          f"{floors} s per round ({r['disk_floor_mb_s']:.0f} MB/s median); floor / tar per round "
          f"{min(x['disk_floor_s'] / x['tar_zstd_x_s'] for x in r['rounds']):.2f} to "
          f"{max(x['disk_floor_s'] / x['tar_zstd_x_s'] for x in r['rounds']):.2f}")
    finals = ", ".join(f"{x['final_full_s']:.2f}" for x in r["rounds"])
    print(f"the end state without its logs: a full of the same final state restored the same way: "
          f"{finals} s per round; over tar per round "
          f"{min(x['final_full_s'] / x['tar_zstd_x_s'] for x in r['rounds']):.2f} to "
          f"{max(x['final_full_s'] / x['tar_zstd_x_s'] for x in r['rounds']):.2f} (median "
          f"{median([x['final_full_s'] / x['tar_zstd_x_s'] for x in r['rounds']]):.2f})")
    print(f"laying down alone (--no-replay to new paths): {r['no_replay_mb_s']:.0f} MB/s in "
          f"{r['no_replay_s']:.2f} s; Ombra fsyncs every file, tar does not: sync -f afterwards took "
          f"{r['tar_sync_s']:.2f} s ({r['files_bytes'] / 1e6 / (r['tar_zstd_x_s'] + r['tar_sync_s']):.0f} MB/s "
          f"with it); tar.zst {r['tar_zst_bytes'] / 1e6:.0f} MB")
    if pg:
        print(f"pgBackRest: {pg['pg_bytes'] / 1e6:.0f} MB PostgreSQL database (pgbench scale "
              f"{max(1, a.mb * 70 // 1024)}), repository {pg['repo_bytes'] / 1e6:.0f} MB, restore only "
              f"(no WAL replayed; PostgreSQL replays at start), seconds per round "
              f"{', '.join(f'{x:.2f}' for x in pg.get('runs', []))}; restored cluster verified: {pg['verified']}")
    print(f"machine: {os.cpu_count()} CPUs, {fs} on {a.dir}; warm cache")

    results = dict(r)
    results.update({
        "pgbackrest": pg, "pgbackrest_why_not": why, "pgbackrest_mb_s": pg_mb_s,
        "ratio_ombra_over_tar": ratio(r["restore_mb_s"], r["tar_zstd_x_mb_s"]),
        "ratio_ombra_over_pgbackrest": ratio(r["restore_mb_s"], pg_mb_s),
    })
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"time": utc_stamp(), "mb": a.mb,
                   "incr_mb": a.incr_mb, "machine": {"nproc": os.cpu_count(), "fstype": fs, "dir": a.dir},
                   "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
