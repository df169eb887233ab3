"""The replica writer of ombra-repld (issue 18, its first piece): a passive copy offered to the
server's ombra-vssd as `Replica\\<server>\\<db id>` while Healthy and not otherwise, a prepare
refused for a copy that stopped being Healthy, a freeze that holds the copy's replay while mail
goes on arriving on the active, and BackupComplete recorded by the active (after which replay
catches up). Real servers in namespaces, a real etcd, the requester SDK
through tests/tools/vss_requester."""
import json
import re
import subprocess
import time

import pytest

from dag.conftest import copy_of, drained, roll, wait_copy  # noqa: F401
from dag.test_replication import setup_dag

WRITER = "Ombra Replica Writer"


def replica_writer(s, seconds=20):
    """The replica writer as `ombra vss writers` lists it on server s, once connected."""
    end = time.time() + seconds
    ws = []
    while time.time() < end:
        ws = json.loads(s.ombra("vss", "writers", "--json").out)["writers"]
        mine = [w for w in ws if w["name"] == WRITER and w["connected"]]
        if mine:
            return mine[0]
        time.sleep(0.2)
    pytest.fail(f"no connected {WRITER} on {s.server}: {ws}\n{s.stderr()}")


def requester(bed, s, db_id, *extra, type_="full", provider="held"):
    w = replica_writer(s)
    argv = [str(bed.build_dir / "tests/tools/vss_requester"), "--type", type_, "--provider",
            provider, "--component", f"{w['instance_id']}:Replica\\{s.server}\\{db_id}", *extra]
    return subprocess.Popen(argv, env=s.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def paused(p, step):
    line = p.stdout.readline()
    assert line.startswith(f"paused {step} "), (line, p.stderr.read() if p.poll() is not None else "")
    return json.loads(line.split(" ", 2)[2])


def finish(p):
    out, err = p.communicate(input="\n", timeout=120)  # the line a paused requester waits for
    return p.returncode, json.loads(out.strip().splitlines()[-1]), err


def offered(bed, s, db_id):
    """The replica writer's components on s as a gather shows them (a session aborted before
    prepare): the component names under Replica\\<server>."""
    p = requester(bed, s, db_id, "--abort-at", "prepare")
    rc, res, err = finish(p)
    assert rc == 0, err
    w = [x for x in res["writers"] if x["name"] == WRITER]
    assert len(w) == 1, res["writers"]
    return {(c["logical_path"], c["name"]) for c in w[0]["metadata"]["components"]}


@pytest.fixture
def dag2(dag_bed):
    bed = dag_bed(2)
    setup_dag(bed, [bed.a, bed.b])
    a = bed.a
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", bed.etcd_url)
    roll(a, "db1", 1)
    drained(a, bed, "db1", "b")
    return bed


@pytest.mark.dag_long
def test_a_healthy_copy_is_offered_a_suspended_one_is_not_and_its_prepare_is_refused(dag2):
    bed = dag2
    a, b = bed.a, bed.b
    db_id = copy_of(a, bed, "db1", "b")["database"]["id"]
    w = replica_writer(b)
    assert w["can_hold"] and w["state"] != "disconnected", w
    comps = offered(bed, b, db_id)
    assert comps == {("Replica\\b", db_id), (f"Replica\\b\\{db_id}", "Logs")}, comps
    # the active's server holds no passive copy: its replica writer offers nothing
    assert offered(bed, a, db_id) == set()

    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Suspended", what="suspending")
    assert offered(bed, b, db_id) == set()

    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Healthy", what="resuming")
    assert ("Replica\\b", db_id) in offered(bed, b, db_id)
    # gathered while Healthy, suspended before PrepareBackup: the writer refuses, saying why
    p = requester(bed, b, db_id, "--pause-at", "prepare")
    paused(p, "prepare")
    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Suspended", what="suspending")
    rc, res, err = finish(p)
    assert rc == 1 and res["failed_step"] == "prepare", res
    assert "is Suspended, not Healthy" in res["error"] and "ombra db copy resume db1" in res["error"], res


@pytest.mark.dag_long
def test_a_freeze_holds_replay_while_mail_arrives_and_replay_catches_up_after(dag2):
    bed = dag2
    a, b = bed.a, bed.b
    db_id = copy_of(a, bed, "db1", "b")["database"]["id"]
    p = requester(bed, b, db_id, "--pause-at", "complete")
    snap = paused(p, "complete")  # frozen, shadow copy made, held until the session ends
    assert snap["components_document"], snap
    # the generation the copy was frozen at, as the replica writer logged it (the copy's row in
    # the DAG may show the replay before it for a while: its replayed column is published
    # after the replay step)
    deadline = time.monotonic() + 10
    while not (m := re.search(r"copy of db1 frozen at generation (\d+)", b.stderr())):
        assert time.monotonic() < deadline, b.stderr()
        time.sleep(0.1)
    frozen = int(m.group(1))
    before = wait_copy(a, bed, "db1", "b", lambda c: c["replayed"] >= frozen, what="the row")
    assert before["replayed"] == frozen, (frozen, before)
    # mail goes on arriving on the active: the copy copies it, and replays none of it
    roll(a, "db1", 3)
    c = wait_copy(a, bed, "db1", "b", lambda c: c["copied"] >= frozen + 3, what="copying while frozen")
    time.sleep(1.5)  # replay would have run by now (it follows each copied generation)
    c = copy_of(a, bed, "db1", "b")
    assert c["replayed"] == frozen and c["replay_queue"] >= 3, (frozen, c)
    assert c["state"] == "Healthy", c
    # BackupComplete: the active records the backup (its header's previous full)
    rc, res, err = finish(p)
    assert rc == 0, (res, err)
    full = json.loads(a.ombra("db", "show", "db1", "--json").out)["backups"]["previous_full"]
    assert full and full["last_gen"] >= before["replayed"], full
    # the session is over: the copy lock went with it, replay catches up
    drained(a, bed, "db1", "b")
    assert copy_of(a, bed, "db1", "b")["replayed"] >= c["copied"]


@pytest.mark.dag_long
def test_a_copy_too_far_behind_in_replay_is_not_backed_up(dag_bed):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    b.term("repld")
    b.start_repld(args=("--backup-replay-queue", "2"))
    a.ombra("db", "new", "db1")
    # a lagged copy: copied and inspected at once, replayed only an hour later
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--replay-lag", "3600", "--etcd",
            bed.etcd_url)
    roll(a, "db1", 4)
    c = wait_copy(a, bed, "db1", "b", lambda c: c["state"] == "Healthy" and c["replay_queue"] >= 3,
                  what="a replay queue of 3 generations")
    p = requester(bed, b, c["database"]["id"])
    rc, res, err = finish(p)
    assert rc == 1 and res["failed_step"] == "prepare", (res, err)
    assert "generations copied but not replayed, more than the 2 a backup allows" in res["error"], res
    assert "replay lag" in res["error"], res
