"""Backups from passive copies (issue 18): the replica writer's backup recorded by the active
(a log record that reaches every copy by replay), truncation on every server after it, a chain
of sets taken on different servers, failures that record and truncate nothing. Real servers in
namespaces, a real etcd, the real CLI on each server."""
import json
import os
import pathlib
import re
import shutil
import threading
import time

import pytest

from conftest import Paused
from dag.conftest import copies_match, copy_folder, copy_of, drained, roll, wait_copy  # noqa: F401
from dag.test_replication import setup_dag
from dag.test_truncation import shallow_checkpoints


def setup3(bed, tmp_path, shallow=False):
    """Three servers; db1 active on a, passive copies on b and c, both Healthy; an empty
    repository every server reaches. shallow: a's checkpoint moves every 2 generations (so a
    backup's truncation shows within a test)."""
    if shallow:
        shallow_checkpoints(bed.a)
    setup_dag(bed, [bed.a, bed.b, bed.c])
    a = bed.a
    a.ombra("db", "new", "db1")
    for s in ("b", "c"):
        a.ombra("db", "copy", "add", "db1", "--server", s, "--etcd", bed.etcd_url)
    roll(a, "db1", 1)
    for s in ("b", "c"):
        drained(a, bed, "db1", s)
    bed.repo = tmp_path / "repo"
    a.ombra("repo", "init", str(bed.repo))
    return bed


@pytest.fixture
def dag3b(dag_bed, tmp_path):
    return setup3(dag_bed(3), tmp_path)


def backup(s, bed, type_, *extra, check=True):
    r = s.ombra("backup", "--repo", str(bed.repo), "--type", type_, "--json", *extra, "db1",
                check=check)
    return json.loads(r.out) if r.rc == 0 else r


def paused_backup(s, bed, type_, stage):
    return Paused(s, ["netns", "exec", s.ns, s.real_cli, "backup", "--repo", bed.repo, "--type",
                      type_, "--from", "here", "--json", "db1"], "OMBRA_BACKUP_PAUSE", stage)


def listed(s, bed):
    return json.loads(s.ombra("backups", "list", "--repo", str(bed.repo), "--json").out)["sets"]


def active_info(a):
    return json.loads(a.ombra("db", "show", "db1", "--json").out)


def copy_gens(bed, s):
    """The generations in the log folder of s's passive copy of db1."""
    return sorted(int(m.group(1), 16) for p in (copy_folder(bed, s, "db1") / "logs").iterdir()
                  if (m := re.fullmatch(r"E00([0-9A-F]{8})\.log", p.name)))


def copy_header_slot(bed, s, slot):
    """The backup slot of the header of s's passive copy (what replay gave it)."""
    edb = copy_folder(bed, s, "db1") / "db1.edb"
    h = json.loads(s.ombra("dbutil", "header", str(edb), "--json").out)
    return h["backups"][slot]


def vssd_sessions(s):
    return sum(open(p, errors="replace").read().count(") begun by pid")
               for label, p in s.daemon_logs if label == "ombra-vssd")


class Mail:
    """Deliveries to db1 on the active, one after another on a thread, each one's latency kept
    with its start time (the whole CLI call: what a client sees)."""

    def __init__(self, a):
        self.a, self.stop, self.lat, self.errors = a, threading.Event(), [], []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            r = self.a.ombra("mail", "deliver", "db1", f"box{i % 4}", input=b"m" * 2000,
                             check=False)
            self.lat.append((t0, time.monotonic() - t0))
            if r.rc:
                self.errors.append(r.err)
            i += 1

    def between(self, t0, t1):
        return sorted(d for t, d in self.lat if t0 <= t <= t1)

    def end(self):
        self.stop.set()
        self.t.join(30)
        assert not self.errors, self.errors[:3]


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


SLOTS = {"full": "previous_full", "incremental": "previous_incremental",
         "differential": "previous_differential", "copy": "previous_copy"}


def copy_row(c):
    """A backup's copy: (database name, server, active|passive); the database is {id, name}."""
    assert set(c["database"]) == {"id", "name"}, c
    return c["database"]["name"], c["server"], c["copy"]


@pytest.mark.dag_long
def test_each_type_from_a_passive_while_mail_arrives_recorded_by_the_active_never_holding_it(
        dag3b):
    bed = dag3b
    a, b = bed.a, bed.b
    sessions_on_a = vssd_sessions(a)
    mail = Mail(a)
    time.sleep(1)
    t_before = time.monotonic()
    time.sleep(2)
    spans = []
    try:
        # each from one copy or the other: a differential from c continues the full from b
        for type_, srv in (("full", "b"), ("differential", "c"), ("incremental", "c"),
                           ("copy", "b")):
            roll(a, "db1", 1)
            t0 = time.monotonic()
            res = backup(b, bed, type_, "--from", srv)
            spans.append((t0, time.monotonic()))
            assert [copy_row(c) for c in res["copies"]] == \
                [("db1", srv, "passive")], res
            (st,) = res["sets"]
            # recorded by the active: its header's slot holds the set's generations
            slot = active_info(a)["backups"][SLOTS[type_]]
            assert slot and [slot["first_gen"], slot["last_gen"]] == st["log_range"], (slot, st)
            # and the slot reaches the copies by replay (the active rolled its log for it)
            for s in (b, bed.c):
                end = time.time() + 30
                while (copy_header_slot(bed, s, SLOTS[type_]) or {}).get("last_gen") != \
                        slot["last_gen"]:
                    assert time.time() < end, f"the {type_} slot did not reach {s.server}"
                    time.sleep(0.3)
    finally:
        mail.end()
    # the active's writer took part in none of it: no session on its shadow copy service
    assert vssd_sessions(a) == sessions_on_a
    during = sorted(d for t0, t1 in spans for d in mail.between(t0, t1))
    before = mail.between(t_before, spans[0][0])
    print(f"\ndelivery latency on the active (ms): before p50 {pct(before, .5) * 1e3:.0f} "
          f"p99 {pct(before, .99) * 1e3:.0f}; during backups from b and c ({len(during)} deliveries) "
          f"p50 {pct(during, .5) * 1e3:.0f} p99 {pct(during, .99) * 1e3:.0f} "
          f"max {during[-1] * 1e3:.0f}")
    assert len(during) >= 4, "too few deliveries during the backups to say anything"
    assert during[-1] < 2.0, f"a delivery took {during[-1]:.2f} s during a passive's backup"


def test_a_chain_across_servers_full_from_b_incremental_from_c_and_from_a(dag3b):
    bed = dag3b
    a, b, c = bed.a, bed.b, bed.c
    roll(a, "db1", 2)
    full = backup(b, bed, "full", "--from", "here")["sets"][0]
    roll(a, "db1", 2)
    inc_c = backup(c, bed, "incremental", "--from", "here")
    assert inc_c["copies"][0]["server"] == "c", inc_c
    inc_c = inc_c["sets"][0]
    roll(a, "db1", 2)
    inc_a = backup(a, bed, "incremental", "--from", "active")
    assert copy_row(inc_a["copies"][0]) == ("db1", "a", "active"), inc_a
    inc_a = inc_a["sets"][0]
    # one chain: each set begins where the one before it ended (the slots came by the log)
    assert inc_c["log_range"][0] == full["log_range"][1] + 1, (full, inc_c)
    assert inc_a["log_range"][0] == inc_c["log_range"][1] + 1, (inc_c, inc_a)
    sets = listed(a, bed)
    by_id = {x["id"]: x for x in sets}
    assert by_id[inc_c["id"]]["parent"] == full["id"], by_id[inc_c["id"]]
    assert by_id[inc_a["id"]]["parent"] == inc_c["id"], by_id[inc_a["id"]]
    want = a.digest("db1")  # what the chain holds: nothing delivered after the last set
    # Every copy lost: the active's files and both passives' folders.
    for s in (b, c):
        s.kill9("repld")
        shutil.rmtree(copy_folder(bed, s, "db1"))
    info = active_info(a)
    a.ombra("db", "dismount", "db1")
    os.unlink(info["edb"])
    shutil.rmtree(info["logs"])
    a.ombra("db", "set", "db1", "--allow-restore", "on")
    r = a.ombra("restore", "--repo", str(bed.repo), "db1", "--no-roll-forward", "--mount")
    assert a.digest("db1") == want, r.describe()
    # the passives come back by themselves, seeded from the restored active
    for s in (b, c):
        s.start_repld()
    for s in (b, c):  # seeded (a seed is a shadow copy of the active: no dismount meanwhile)
        drained(a, bed, "db1", s.server)
    copies_match(bed, a, "db1", [b, c])


@pytest.mark.dag_long
def test_backup_from_here_takes_this_servers_copy_and_says_when_it_is_not_the_one_asked(dag3b):
    bed = dag3b
    a, b = bed.a, bed.b
    assert copy_row(backup(b, bed, "copy", "--from", "here")["copies"][0]) == ("db1", "b", "passive")
    assert copy_row(backup(a, bed, "copy", "--from", "here")["copies"][0]) == ("db1", "a", "active")
    # --from active asked on b: the active's server runs it
    assert backup(b, bed, "copy", "--from", "active")["copies"][0]["server"] == "a"


@pytest.mark.dag_long
def test_incremental_from_a_passive_without_a_full_is_refused_by_the_active(dag3b):
    bed = dag3b
    r = backup(bed.b, bed, "incremental", "--from", "b", check=False)
    assert r.rc != 0 and r.err.count("\n") == 1, r.describe()
    assert "no full backup" in r.err and "-560" in r.err, r.err


def gens_everywhere(bed):
    a = bed.a
    info = active_info(a)
    return {"a": info["gen_oldest"], "b": copy_gens(bed, bed.b)[0], "c": copy_gens(bed, bed.c)[0]}


@pytest.mark.dag_long
def test_a_passive_killed_during_its_backup_records_and_truncates_nothing_then_the_next_works(
        dag3b):
    bed = dag3b
    a, b = bed.a, bed.b
    roll(a, "db1", 3)
    before = gens_everywhere(bed)
    p = paused_backup(b, bed, "full", "copied")
    assert p.reached, p.first
    b.kill9("repld")  # the replica writer goes with it: the coordinator aborts the session
    r = p.resume()
    assert r.rc != 0 and "Replica Writer" in r.err and "disconnected" in r.err, r.describe()
    assert active_info(a)["backups"]["previous_full"] is None
    roll(a, "db1", 2)
    b.start_repld()
    drained(a, bed, "db1", "b")
    drained(a, bed, "db1", "c")
    assert gens_everywhere(bed) == before, "a generation went after a failed backup"
    assert not listed(a, bed)
    res = backup(b, bed, "full", "--from", "b")
    assert res["sets"] and active_info(a)["backups"]["previous_full"]


@pytest.mark.dag_long
def test_the_active_killed_at_backupcomplete_of_a_passives_backup_fails_it_nothing_truncated(
        dag3b):
    bed = dag3b
    a, b = bed.a, bed.b
    roll(a, "db1", 3)
    before = gens_everywhere(bed)
    p = paused_backup(b, bed, "full", "committed")  # the set committed, BackupComplete next
    assert p.reached, p.first
    a.kill9("store")
    r = p.resume()
    assert r.rc != 0, r.describe()
    lines = [x for x in r.err.splitlines() if not x.startswith("paused")]
    assert len(lines) == 1 and "not recorded by the active" in lines[0], r.err
    assert not listed(a, bed), \
        "a set of a backup that did not complete is listed"
    a.restart("store")
    assert active_info(a)["backups"]["previous_full"] is None
    drained(a, bed, "db1", "b")
    drained(a, bed, "db1", "c")
    after = gens_everywhere(bed)
    assert after == before, (before, after)
    assert backup(b, bed, "full", "--from", "b")["sets"]


@pytest.mark.dag_long
def test_truncation_everywhere_after_a_full_from_a_passive_and_a_suspended_copy_holds_it(
        dag_bed, tmp_path):
    bed = setup3(dag_bed(3), tmp_path, shallow=True)
    a, b, c = bed.a, bed.b, bed.c
    a.ombra("db", "copy", "suspend", "db1", "--server", "c", "--etcd", bed.etcd_url)
    st = wait_copy(a, bed, "db1", "c", lambda x: x["state"] == "Suspended", what="suspending")
    held = st["replayed"] + 1  # the first generation c needs
    roll(a, "db1", 4)
    full = backup(b, bed, "full", "--from", "b")["sets"][0]
    roll(a, "db1", 1)
    drained(a, bed, "db1", "b")
    g = gens_everywhere(bed)
    # c needs what it has not replayed: the active keeps it, and so does b (it follows the active)
    assert g["a"] <= held and g["b"] <= held, (g, held, full)
    assert full["log_range"][1] > held + 1, (full, held)
    assert g["c"] <= held, (g, held)
    a.ombra("db", "copy", "resume", "db1", "--server", "c", "--etcd", bed.etcd_url)
    drained(a, bed, "db1", "c")
    roll(a, "db1", 1)  # the next floor round, the next replay
    end = time.time() + 60
    while True:
        g = gens_everywhere(bed)
        # now what the backup let go goes, on every server
        if all(v > held for v in g.values()):
            break
        assert time.time() < end, (g, held, full)
        time.sleep(0.5)
    assert all(v <= full["log_range"][1] for v in g.values()), (g, full)


@pytest.mark.dag_long
def test_the_default_picks_a_healthy_passive_on_another_server_and_says_which(dag3b):
    bed = dag3b
    a, b, c = bed.a, bed.b, bed.c
    # run on the active's server: the backup is taken from a passive copy, there
    r = a.ombra("backup", "--repo", str(bed.repo), "--type", "full", "db1")
    assert re.search(r"db1: backed up the passive copy on server [bc]\n", r.out), r.describe()
    # --json says which; the set records the server and the copy it came from
    res = backup(a, bed, "copy")
    (cp,) = res["copies"]
    assert cp["copy"] == "passive" and cp["server"] in ("b", "c"), res
    (st,) = [x for x in listed(a, bed) if x["id"] == res["sets"][0]["id"]]
    assert st["server"] == cp["server"], st
    # with b suspended and c's service stopped, no passive copy is Healthy: the active, said so
    a.ombra("db", "copy", "suspend", "db1", "--server", "b", "--etcd", bed.etcd_url)
    c.term("repld")
    wait_copy(a, bed, "db1", "c", lambda x: x["state"] == "ServiceDown", what="c down")
    wait_copy(a, bed, "db1", "b", lambda x: x["state"] == "Suspended", what="suspending")
    r = a.ombra("backup", "--repo", str(bed.repo), "--type", "full", "db1")
    assert "db1 has no Healthy passive copy: backing up its active copy on server a" in r.err, \
        r.describe()
    assert "db1: backed up the active copy on server a" in r.out, r.describe()
    r = a.ombra("backup", "--repo", str(bed.repo), "--type", "full", "--from", "passive", "db1",
                check=False)
    assert r.rc == 1 and r.err.count("\n") == 1 and "no Healthy passive copy" in r.err, r.describe()
    # --from a server that holds no copy is refused in one line
    r = b.ombra("backup", "--repo", str(bed.repo), "--type", "full", "--from", "zz", "db1",
                check=False)
    assert r.rc == 1 and r.err.count("\n") == 1 and "holds no copy" in r.err, r.describe()
    # --from c from b: c's service is down: one line naming it
    a.ombra("db", "copy", "resume", "db1", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db1", "b", lambda x: x["state"] == "Healthy", what="resuming")
    r = b.ombra("backup", "--repo", str(bed.repo), "--type", "incremental", "--from", "c",
                "db1", check=False)
    assert r.rc == 1 and r.err.count("\n") == 1 and "server c" in r.err, r.describe()
    # from b, --from b: its own copy; then from a, --from b: run on b for a
    assert backup(b, bed, "incremental", "--from", "b")["copies"][0]["server"] == "b"
    res = backup(a, bed, "incremental", "--from", "b")
    assert [copy_row(c) for c in res["copies"]] == \
        [("db1", "b", "passive")], res


class MailMany:
    """Deliveries to several databases on the active, round robin on a thread, each one's
    outcome kept with its start time."""

    def __init__(self, a, dbs):
        self.a, self.dbs, self.stop, self.done, self.errors = a, dbs, threading.Event(), [], []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            db = self.dbs[i % len(self.dbs)]
            r = self.a.ombra("mail", "deliver", db, f"box{i % 3}", input=b"m" * 3000, check=False)
            (self.errors if r.rc else self.done).append((t0, db, r.err))
            i += 1

    def end(self):
        self.stop.set()
        self.t.join(30)
        assert not self.errors, self.errors[:3]


def digest_at_set(bed, a, db, st, scratch):
    """The digest of set st of db laid down in a scratch folder, rolled forward over the active's
    own generations after the set's last: equal to the active's digest only when the set holds
    the database exactly as the active had it at the end of the set's log range."""
    edb, logs = scratch / f"{db}.edb", scratch / "logs"
    a.ombra("restore", "--repo", str(bed.repo), db, "--set", st["id"], "--edb", str(edb),
            "--logs", str(logs), "--no-replay")
    for p in (logs / "_restoredLogs").iterdir():  # the set's generations, where a restore puts them
        if p.suffix == ".log":
            shutil.move(p, logs / p.name)
    info = a.db_show(db)
    base, last = info.get("base", "E00"), st["log_range"][1]
    for p in pathlib.Path(info["logs"]).iterdir():
        m = re.fullmatch(base + r"([0-9A-F]{8})\.log", p.name)
        if (m and int(m.group(1), 16) > last) or p.name == f"{base}.log":
            shutil.copy(p, logs / p.name)
    return a.ombra("dbutil", "digest", str(edb), "--logs", str(logs), "--base", base).out.strip()


def all_bed(dag_bed, tmp_path):
    """Two servers; db1 to db4 active on a, each with a passive copy on b, Healthy but db4's,
    which is suspended (its replay stopped); a repository both reach."""
    bed = dag_bed(2)
    setup_dag(bed, [bed.a, bed.b])
    a = bed.a
    for n in ALL_DBS:
        a.ombra("db", "new", n)
        a.ombra("db", "copy", "add", n, "--server", "b", "--etcd", bed.etcd_url)
    for n in ALL_DBS:
        roll(a, n, 1)
    for n in ALL_DBS:
        drained(a, bed, n, "b")
    bed.repo = tmp_path / "repo"
    a.ombra("repo", "init", str(bed.repo))
    a.ombra("db", "copy", "suspend", "db4", "--server", "b", "--etcd", bed.etcd_url)
    wait_copy(a, bed, "db4", "b", lambda c: c["state"] == "Suspended", what="suspending")
    return bed


ALL_DBS = ["db1", "db2", "db3", "db4"]
SUSPENDED = "db4: not backed up: the passive copy on server b is Suspended, not Healthy"


def backup_all(b, bed, type_):
    return b.ombra("backup", "--repo", str(bed.repo), "--type", type_, "--all", "--from",
                   "passive", check=False)


def test_all_from_passive_backs_up_every_passive_copy_here_in_one_shadow_copy(dag_bed, tmp_path):
    bed = all_bed(dag_bed, tmp_path)
    a, b = bed.a, bed.b
    mail = MailMany(a, ALL_DBS)
    time.sleep(1)
    try:
        t0 = time.monotonic()
        r = backup_all(b, bed, "full")
        t1 = time.monotonic()
        time.sleep(0.5)
    finally:
        mail.end()
    # one line for the copy that is not Healthy, naming it and its state; the others backed up
    assert r.rc == 1 and r.err.count("\n") == 1 and SUSPENDED in r.err, r.describe()
    for n in ALL_DBS[:3]:
        assert f"{n}: backed up the passive copy on server b\n" in r.out, r.describe()
    # (by the line's start: a set id's hex may hold "db4")
    assert not [x for x in r.out.splitlines() if x.startswith("db4")], r.describe()
    # the actives took mail all along (every database, and during the backup)
    assert len([x for x in mail.done if t0 <= x[0] <= t1]) >= 3, r.describe()
    sets = {x["database"]["name"]: x for x in listed(a, bed)}
    assert sorted(sets) == ALL_DBS[:3], sets
    # one shadow copy: the same snapshot set in every set, each set its own database's
    docs = {n: json.loads(a.ombra("backups", "show", sets[n]["id"], "--repo", str(bed.repo),
                                  "--json").out) for n in sets}
    snap = {d["components_document"]["set"] for d in docs.values()}
    assert len(snap) == 1, snap
    assert all(d["copy"] == "passive" and d["server"] == "b" for d in docs.values()), docs
    # each set holds its database as the active had it at the end of the set's log range
    for n in sets:
        want = a.digest(n)
        a.ombra("db", "dismount", n)
        assert digest_at_set(bed, a, n, sets[n], tmp_path / n) == want, n


@pytest.mark.dag_long
def test_all_from_passive_a_copy_another_backup_holds_or_the_active_refuses_fails_alone(
        dag_bed, tmp_path):
    bed = all_bed(dag_bed, tmp_path)
    a, b = bed.a, bed.b
    # db1's copy is in another backup (paused): it is not backed up, alone
    other = paused_backup(b, bed, "copy", "copied")
    assert other.reached, other.first
    try:
        r = backup_all(b, bed, "full")
    finally:
        assert other.resume().rc == 0
    assert r.rc == 1 and r.err.count("\n") == 2 and SUSPENDED in r.err, r.describe()
    assert re.search(r"db1: not backed up: .* is already in session .*BackupInProgress", r.err), \
        r.describe()
    assert {x["database"]["name"] for x in listed(a, bed) if x["type"] == "full"} == \
        {"db2", "db3"}
    # an incremental of them all: db1 has no full, so the active refuses its copy at prepare;
    # the replica writer leaves it out of the shadow copy, alone, and backs up the others
    r = backup_all(b, bed, "incremental")
    assert r.rc == 1 and r.err.count("\n") == 2 and SUSPENDED in r.err, r.describe()
    assert re.search(r"db1: left out of the shadow copy: .*-560", r.err), r.describe()
    for n in ("db2", "db3"):
        assert f"{n}: backed up the passive copy on server b\n" in r.out, r.describe()
    incs = {x["database"]["name"] for x in listed(a, bed) if x["type"] == "incremental"}
    assert incs == {"db2", "db3"}, incs
