#!/usr/bin/env python3
"""How long each shadow copy provider holds a writer's writes (Freeze to Thaw) and how long the
whole snapshot step takes (PrepareSnapshot to PostSnapshot), with 1 GiB of files (a 1 GiB
data.edb plus logs), warm cache. reflink runs on a loop-mounted XFS image and btrfs on a
loop-mounted btrfs image (root only; skipped otherwise). Prints a table and writes
bench/results/vss_freeze.json.

    bench/vss_freeze.py [--build DIR] [--mb 1024] [--runs 3]
"""
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import uuid

from benchlib import ROOT, daemon, ombra_env, parser, utc_stamp, vss_requester


def mount(kind, tmp, mb):
    if os.geteuid() != 0 or not shutil.which(f"mkfs.{kind}"):
        return None, "needs root and mkfs." + kind
    img, mnt = f"{tmp}/{kind}.img", f"{tmp}/{kind}-mnt"
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate((mb * 3 + 512) << 20)
    subprocess.run([f"mkfs.{kind}", "-q", *(["-m", "reflink=1"] if kind == "xfs" else []), img],
                   check=True, capture_output=True)
    r = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
    return (mnt, "") if r.returncode == 0 else (None, r.stderr.strip())


def run_provider(build, provider, base, mb, runs):
    tmp = tempfile.mkdtemp(prefix="ombra-bv-", dir="/tmp")
    env = ombra_env(tmp)
    vssd = daemon(build, "ombra-vssd", env, subprocess.DEVNULL, "--commit-limit-ms", "600000", "--freeze-limit-ms",
                  "600000")
    inst = str(uuid.uuid4())
    wdir = f"{base}/w-{provider}"
    writer = subprocess.Popen([f"{build}/tests/tools/vss_test_writer", "--dir", wdir, "--name", "bench",
                               "--instance", inst, "--can-hold", "--no-digest", "--edb-mb", str(mb)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = writer.stdout.readline()  # "registered ..." once the files exist
        assert line.startswith("registered"), line
        out = []
        for _ in range(runs):
            r = vss_requester(build, env, "full", provider, f"{inst}:Test\\bench\\bench", 900)
            out.append((r["freeze_ms"], r["snapshot_ms"]))
        return out
    finally:
        writer.terminate()
        writer.wait(30)
        vssd.terminate()
        vssd.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(wdir, ignore_errors=True)


def main():
    ap = parser(__doc__)
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ombra-bvfs-", dir="/tmp")
    mounts, rows = [], {}
    try:
        for provider, kind in (("copy", None), ("held", None), ("reflink", "xfs"), ("btrfs", "btrfs")):
            base = tmp
            if kind:
                mnt, why = mount(kind, tmp, a.mb)
                if not mnt:
                    print(f"{provider:8} skipped: {why}")
                    continue
                mounts.append(mnt)
                base = mnt
            res = run_provider(a.build, provider, base, a.mb, a.runs)
            fz = statistics.median(r[0] for r in res)
            sn = statistics.median(r[1] for r in res)
            rows[provider] = {"freeze_ms": fz, "snapshot_ms": sn, "runs": res}
            print(f"{provider:8} writes held {fz:9.1f} ms   snapshot step {sn:9.1f} ms   "
                  f"(median of {len(res)}; {a.mb} MiB data file + 4 MiB of logs)")
    finally:
        for m in mounts:
            subprocess.run(["umount", m], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    with open(f"{ROOT}/bench/results/vss_freeze.json", "w") as f:
        json.dump({"mb": a.mb, "time": utc_stamp(), "providers": rows}, f,
                  indent=1)


if __name__ == "__main__":
    main()
