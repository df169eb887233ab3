"""Truncation across copies (issue 17, spec §8 "Log truncation in a DAG"): the active deletes a
generation only once every passive copy that needs it has it, so a suspended copy catches up
without a reseed; a copy that holds truncation back longer than the limit is marked Failed, the
store's log says so, truncation goes on, and a reseed brings the copy back."""
import re
import json
import os
import time

import pytest

from dag.test_replication import (close_generation, copy_of, drained, passive_digest, roll,
                                  setup_dag, wait_copy)


def store_line(line):
    """A line of ombra-store's log: "2026-12-05T10:00:00.000Z ombra-store[PID] level: ..."."""
    return re.match(r"\S+Z ombra-store\[\d+\] ", line) is not None


def shallow_checkpoints(s, depth=2):
    """Restarts s's store with --checkpoint-depth depth, so that the checkpoint (below which
    circular logging and backups may delete) moves every few generations."""
    s.daemon.write_text(s.daemon.read_text().replace('"$@"', f'"$@" --checkpoint-depth {depth}'))
    s.restart("store")


def gen_path(s, db, gen):
    info = s.db_show(db)
    return f"{info['logs']}/{info['base']}{gen:08X}.log"


def present(s, db, gen):
    return os.path.exists(gen_path(s, db, gen))


def wait_for(pred, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    pytest.fail(f"never happened within {seconds} s: {what}")


def suspended_behind(a, bed, db, server, generations):
    """The copy on server drained, suspended, then `generations` generations made without it:
    the first generation it needs (replayed + 1)."""
    roll(a, db, 1)
    drained(a, bed, db, server)
    a.ombra("db", "copy", "suspend", db, "--server", server, "--etcd", bed.etcd_url)
    st = wait_copy(a, bed, db, server, lambda c: c["state"] == "Suspended", what="suspending")
    need = st["replayed"] + 1
    roll(a, db, generations)
    return need


def pair(dag_bed, repld_args=()):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    shallow_checkpoints(a)
    setup_dag(bed, [a, b])
    if repld_args:
        a.term("repld")
        a.start_repld(args=repld_args)
    return bed, a, b


@pytest.mark.dag_long  # the short nemesis covers it end to end in make test
def test_a_suspended_copy_keeps_its_generations_under_circular_logging_and_catches_up(dag_bed):
    bed, a, b = pair(dag_bed)
    a.ombra("db", "new", "db1", "--circular-logging")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    need = suspended_behind(a, bed, "db1", "b", 8)
    time.sleep(2.5)  # a round of the floor after the last checkpoints
    info = a.db_show("db1")
    assert info["checkpoint_gen"] > need + 4, info  # circular logging would have deleted it
    assert info["gen_oldest"] <= need and info["truncation_floor"] == need, info
    assert all(present(a, "db1", g) for g in range(need, info["gen_current"])), info
    assert copy_of(a, bed, "db1", "b")["state"] == "Suspended"
    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    assert passive_digest(bed, b, "db1") == want
    # Caught up: circular logging deletes behind it again (the floor rose).
    wait_for(lambda: a.db_show("db1")["gen_oldest"] > need + 4, 15,
             f"circular logging deleting generation {need} once the copy has it")
    assert "reseed" not in copy_of(a, bed, "db1", "b")["last_error"]


@pytest.mark.dag_long
def test_a_full_backup_leaves_what_a_lagging_copy_needs_then_truncates_once_it_caught_up(dag_bed):
    bed, a, b = pair(dag_bed)
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    need = suspended_behind(a, bed, "db1", "b", 6)
    time.sleep(2.5)
    repo = a.dir / "repo"
    a.ombra("repo", "init", str(repo))
    r = a.ombra("backup", "--repo", str(repo), "--type", "full", "--provider", "held", "--json",
                "db1")
    assert json.loads(r.out)["sets"], r.out
    info = a.db_show("db1")
    assert info["checkpoint_gen"] > need + 2, info  # the backup would have deleted past need
    # Below the copy's need: deleted (the copy has them). From it on: kept.
    assert info["gen_oldest"] == need, info
    assert all(present(a, "db1", g) for g in range(need, info["gen_current"])), info
    assert "wait for passive copies that still need them" in a.stderr()
    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "b")
    # Caught up: what the backup allowed goes now, without waiting for another backup.
    wait_for(lambda: a.db_show("db1")["gen_oldest"] > need + 2, 15,
             "the backup's truncation once the copy replayed what it held")
    assert not present(a, "db1", need)
    # And the next backup truncates as ever.
    roll(a, "db1", 3)
    drained(a, bed, "db1", "b")
    time.sleep(2.5)
    a.ombra("backup", "--repo", str(repo), "--type", "full", "--provider", "held", "db1")
    info2 = a.db_show("db1")
    assert info2["gen_oldest"] > info["gen_oldest"] + 2, (info, info2)
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    assert passive_digest(bed, b, "db1") == want


@pytest.mark.dag_long
def test_a_copy_holding_truncation_past_the_limit_is_failed_and_a_reseed_brings_it_back(dag_bed):
    bed, a, b = pair(dag_bed, repld_args=("--truncation-hold-limit", "3"))
    a.ombra("db", "new", "db1", "--circular-logging")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    need = suspended_behind(a, bed, "db1", "b", 6)
    st = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Failed", seconds=20,
                   what="the copy failing after the hold limit")
    assert "held log truncation back" in st["last_error"] and "reseed" in st["last_error"], st
    # The store's log: one warning line naming the database, the copy and the generation.
    lines = [line for line in a.stderr().splitlines() if store_line(line)
             and "held log truncation back" in line and "db1" in line]
    assert len(lines) == 1 and "copy on b" in lines[0] and f"generation {need}" in lines[0], lines
    # Truncation goes on without it.
    wait_for(lambda: not present(a, "db1", need), 15, f"generation {need} deleted")
    # The status stays Failed (the copy does not flip back to Suspended on its own).
    time.sleep(3)
    out = a.ombra("db", "copy", "status", "db1", "--etcd", bed.etcd_url).out
    row = [line for line in out.splitlines() if line.split()[:2] == ["db1", "b"]]
    assert row and row[0].split()[2] == "Failed" and "held log truncation back" in row[0], out
    # A reseed replaces it.
    a.ombra("db", "copy", "reseed", "db1", "--server", "b", "--etcd", bed.etcd_url,
            "--wait-seconds", "60")
    assert copy_of(a, bed, "db1", "b")["state"] == "Healthy"
    want = a.digest("db1")
    close_generation(a, "db1")
    drained(a, bed, "db1", "b")
    assert passive_digest(bed, b, "db1") == want


def disk_pct(path):
    v = os.statvfs(path)
    used = v.f_blocks - v.f_bfree
    return 100 * used / (used + v.f_bavail)


@pytest.mark.dag_long
def test_a_copy_holding_truncation_while_the_log_disk_fills_is_failed_before_the_disk_is(dag_bed):
    bed, a, b = pair(dag_bed)  # the hold limit stays a day: the disk decides
    disk = a.small_log_disk(mb=48)
    # .edb and logs on one volume: the seed's shadow copy takes the .edb's volume only
    a.ombra("db", "new", "db1", "--circular-logging", "--edb", str(disk / "db1.edb"), "--logs",
            str(disk / "logs"))
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    need = suspended_behind(a, bed, "db1", "b", 0)
    for _ in range(40):  # each generation of mail grows the logs and the .edb by 1 MiB
        if disk_pct(disk) >= 90:
            break
        roll(a, "db1", 1)
    assert disk_pct(disk) >= 90
    assert present(a, "db1", need)  # held until now
    st = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Failed", seconds=10,
                   what="the copy failing at 90% of the log disk")
    assert "log disk" in st["last_error"], st
    lines = [line for line in a.stderr().splitlines() if store_line(line)
             and "held log truncation back" in line and "log disk" in line]
    assert len(lines) == 1 and f"generation {need}" in lines[0], lines
    wait_for(lambda: not present(a, "db1", need), 15, f"generation {need} deleted")
    assert disk_pct(disk) < 80
    roll(a, "db1", 2)  # mail goes on
