"""Retention that people expect, through the CLI (issue 20): ombra expire with --keep-last,
--keep-daily/weekly/monthly, --keep-within and --db, its --dry-run (what would go and why) and
the real run deleting exactly those sets, never cutting a chain; backups list's --db, --type and
--last; repo stats against what the test counts itself. Sets with chosen times and parents are
written by tests/tools/repo_writer (REPO_WRITER_TIME, REPO_WRITER_PARENT), so many simulated days
take seconds and no daemon."""
import datetime
import os
import shutil
import subprocess

import pytest

from test_repo import Cli, cli  # noqa: F401  (cli is the fixture)

START = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)  # a Sunday


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class History:
    """Sets of chosen times: per database a chain of fulls and incrementals whose log ranges
    follow one another, as backups write them."""

    def __init__(self, cli, repo, tmp):
        self.cli, self.repo, self.tmp = cli, repo, tmp
        self.gen = {}
        self.last = {}
        self.sets = []  # (id, db, type, time, parent)

    def add(self, db, type_, when):
        gen = self.gen.get(db, 1)
        if type_ != "full":
            gen += 1
        self.gen[db] = gen
        d = self.tmp / f"{db}-{len(self.sets)}"
        d.mkdir()
        log = d / f"E00{gen:08X}.log"
        log.write_bytes((f"{db} generation {gen} " * 4000).encode())
        files = [log]
        if type_ == "full":
            edb = d / "mail.edb"
            edb.write_bytes(os.urandom(40_000) + b"\0" * 60_000)
            files.insert(0, edb)
        parent = self.last.get(db) if type_ != "full" else None
        env = dict(self.cli.env, REPO_WRITER_TIME=iso(when))
        if parent:
            env["REPO_WRITER_PARENT"] = parent
        p = subprocess.run([str(self.cli.writer), str(self.repo), type_, db] + [str(f) for f in files],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        sid = p.stdout.strip()
        self.last[db] = sid
        self.sets.append((sid, db, type_, when, parent))
        return sid


@pytest.fixture
def repo(cli, tmp_path):
    r = tmp_path / "repo"
    cli.run("repo", "init", r, "--block-size", "64K")
    return r


@pytest.fixture(scope="module")
def weeks_master(build_dir, tmp_path_factory):
    """mail1: a full every Sunday 01:00 and incrementals at 01:00 and 13:00 on the other days;
    mail2: a full every 10th day and an incremental at 22:00 on the others; 35 days. Written
    once for the module (about 5 s); each test gets a copy (weeks)."""
    tmp = tmp_path_factory.mktemp("weeks")
    c = Cli(build_dir, tmp)
    r = tmp / "repo"
    c.run("repo", "init", r, "--block-size", "64K")
    h = History(c, r, tmp)
    for day in range(35):
        t = START + datetime.timedelta(days=day)
        if day % 7 == 0:
            h.add("mail1", "full", t + datetime.timedelta(hours=1))
        else:
            h.add("mail1", "incremental", t + datetime.timedelta(hours=1))
            h.add("mail1", "incremental", t + datetime.timedelta(hours=13))
        h.add("mail2", "full" if day % 10 == 0 else "incremental", t + datetime.timedelta(hours=22))
    return h


@pytest.fixture
def weeks(cli, repo, tmp_path, weeks_master):
    """A copy of weeks_master's repository at repo, and its history (the test may add to it)."""
    shutil.rmtree(repo)
    shutil.copytree(weeks_master.repo, repo, symlinks=True)
    h = History(cli, repo, tmp_path)
    h.gen, h.last, h.sets = dict(weeks_master.gen), dict(weeks_master.last), list(weeks_master.sets)
    return h


def listed(cli, repo, *args):
    return cli.json("backups", "list", "--repo", repo, *args)["sets"]


def assert_every_chain_whole(cli, repo):
    sets = listed(cli, repo)
    broken = [(s["id"][:12], s.get("why")) for s in sets if not s.get("restorable")]
    assert not broken, broken
    ids = {s["id"] for s in sets}
    for s in sets:
        assert set(s["chain"]) <= ids


@pytest.mark.parametrize("policy", [
    ["--keep-daily", "7", "--keep-weekly", "3", "--keep-monthly", "2"],
    ["--keep-within", "10d", "--keep-last", "2"],
    ["--keep-last", "3", "--db", "mail2"],
])
def test_the_real_run_deletes_exactly_what_the_dry_run_listed(cli, repo, weeks, policy):
    before = [s["id"] for s in listed(cli, repo)]
    dry = cli.json("expire", "--repo", repo, "--dry-run", *policy)
    assert dry["dry_run"] is True
    assert dry["policies"][0]["databases"] == (["mail2"] if "--db" in policy else [])
    removed = [e["id"] for e in dry["removed"]]
    kept = [e["id"] for e in dry["kept"]]
    assert sorted(removed + kept) == sorted(before)
    assert len(removed) > 10, "the policy removes something on 35 days of backups"
    for e in dry["removed"]:
        assert e["reasons"] == ["no rule keeps it"] and e["type"] and e["time"].endswith("Z")
        assert e["database"]["name"] in ("mail1", "mail2")
    for e in dry["kept"]:
        assert e["reasons"] and "no rule keeps it" not in e["reasons"]
    # the dry run touched nothing, and its text says the same per set
    assert [s["id"] for s in listed(cli, repo)] == before
    text = cli.run("expire", "--repo", repo, "--dry-run", *policy).stdout
    lines = text.splitlines()
    assert sorted(l.split()[1] for l in lines if l.startswith("remove ")) == sorted(i[:12] for i in removed)
    assert f"would remove {len(removed)} sets and keep {len(kept)}" in lines[-1]
    assert [s["id"] for s in listed(cli, repo)] == before

    real = cli.json("expire", "--repo", repo, *policy)
    assert sorted(real["sets_deleted"]) == sorted(removed)
    assert [e["id"] for e in real["kept"]] == kept
    assert sorted(s["id"] for s in listed(cli, repo)) == sorted(kept)
    assert_every_chain_whole(cli, repo)
    cli.run("verify", "--repo", repo)
    if "--db" in policy:
        assert all(db == "mail2" for (sid, db, *_rest) in weeks.sets if sid in removed)


def test_a_kept_incremental_keeps_its_chain_and_the_dry_run_says_why(cli, repo, tmp_path):
    h = History(cli, repo, tmp_path)
    f1 = h.add("mail1", "full", START)
    i1 = h.add("mail1", "incremental", START + datetime.timedelta(days=1))
    i2 = h.add("mail1", "incremental", START + datetime.timedelta(days=2, hours=6))
    # an old full of its own and a newer one whose chain is not kept
    f0 = h.add("mail2", "full", START - datetime.timedelta(days=40))
    f2 = h.add("mail2", "full", START + datetime.timedelta(days=2))
    out = cli.run("expire", "--repo", repo, "--dry-run", "--keep-within", "1d", "--db", "mail1").stdout
    rows = {l.split()[1]: l for l in out.splitlines() if l.startswith(("keep ", "remove "))}
    assert "within 1d" in rows[i2[:12]] and rows[i2[:12]].startswith("keep ")
    assert f"chain of {i2[:12]}" in rows[i1[:12]] and f"chain of {i2[:12]}" in rows[f1[:12]]
    assert "database mail2 not selected" in rows[f0[:12]] and "not selected" in rows[f2[:12]]
    # a daily rule over both databases: mail1's newest set of the day keeps its whole chain
    dry = cli.json("expire", "--repo", repo, "--dry-run", "--keep-daily", "1")
    assert {e["id"] for e in dry["removed"]} == {f0}
    why = {e["id"]: e["reasons"] for e in dry["kept"]}
    assert why[i2] == ["daily 2026-11-03"] and why[f2] == ["daily 2026-11-03"]
    assert why[i1] == why[f1] == [f"chain of {i2[:12]}"]
    dry = cli.json("expire", "--repo", repo, "--dry-run", "--keep-daily", "2", "--db", "mail1")
    why = {e["id"]: e["reasons"] for e in dry["kept"]}
    assert why[i2] == ["daily 2026-11-03"] and why[i1] == ["daily 2026-11-02"]
    assert why[f1] == [f"chain of {i1[:12]}"] and dry["removed"] == []
    # keep-last 1 on mail1 keeps I2 and so I1 and F1: the full is never cut from under it
    real = cli.json("expire", "--repo", repo, "--keep-last", "1", "--db", "mail1")
    assert real["sets_deleted"] == []
    real = cli.json("expire", "--repo", repo, "--keep-last", "1")
    assert real["sets_deleted"] == [f0]
    assert_every_chain_whole(cli, repo)


def test_a_policy_that_keeps_nothing_or_names_nothing_is_refused(cli, repo, weeks):
    before = [s["id"] for s in listed(cli, repo)]
    r = cli.run("expire", "--repo", repo, rc=2)
    assert "at least one rule" in r.stderr
    r = cli.run("expire", "--repo", repo, "--dry-run", "--db", "mail1", rc=2)
    assert "at least one rule" in r.stderr
    for bad in ("7", "7x", "1d1d", "-2d", "0h", "7 d"):
        r = cli.run("expire", "--repo", repo, "--keep-within", bad, rc=2)
        assert "is not a duration" in r.stderr and "7d, 36h" in r.stderr, r.stderr
    cli.run("expire", "--repo", repo, "--keep-daily", "0", rc=2)
    cli.run("expire", "--repo", repo, "--keep-last", "many", rc=2)
    r = cli.run("expire", "--repo", repo, "--keep-last", "1", "--db", "mail3", rc=1)
    assert "no backup set of database mail3" in r.stderr and "mail1, mail2" in r.stderr
    assert [s["id"] for s in listed(cli, repo)] == before


def test_backups_list_filters(cli, repo, weeks):
    every = listed(cli, repo)
    mail2 = listed(cli, repo, "--db", "mail2")
    assert mail2 == [s for s in every if s["database"]["name"] == "mail2"] and mail2
    fulls = listed(cli, repo, "--type", "full")
    assert [s["id"] for s in fulls] == [sid for (sid, _db, t, *_r) in weeks.sets if t == "full"]
    last = listed(cli, repo, "--db", "mail1", "--type", "incremental", "--last", "3")
    want = [s["id"] for s in every if s["database"]["name"] == "mail1" and s["type"] == "incremental"]
    assert [s["id"] for s in last] == want[-3:]
    assert all(s["restorable"] for s in last), "the chain is worked out over every set"
    assert listed(cli, repo, "--db", "mail1,mail2") == every
    assert listed(cli, repo, "--db", "mail1", "--db", "mail2", "--last", "1") == every[-1:]
    text = cli.run("backups", "list", "--repo", repo, "--type", "full", "--last", "2").stdout.splitlines()
    assert text[0].startswith("ID") and [l.split()[0] for l in text[1:]] == [s["id"][:12] for s in fulls[-2:]]
    assert "match" in cli.run("backups", "list", "--repo", repo, "--db", "nobody").stdout
    assert listed(cli, repo, "--db", "nobody") == []
    cli.run("backups", "list", "--repo", repo, "--type", "fulls", rc=2)
    cli.run("backups", "list", "--repo", repo, "--last", "0", rc=2)


def test_repo_stats_match_what_the_test_counts(cli, repo, weeks):
    st = cli.json("repo", "stats", "--repo", repo)
    sets = listed(cli, repo)
    on_disk = sum(f.stat().st_size for f in (repo / "packs").rglob("*") if f.is_file())
    assert st["sets"] == len(sets) == len(weeks.sets) and st["damaged"] == 0
    assert st["chains"] == sum(1 for s in sets if s["type"] == "full")
    assert st["bytes"] == sum(s["bytes"] for s in sets)
    assert st["bytes_on_disk"] == on_disk > 0
    assert st["packs"] == sum(1 for f in (repo / "packs").rglob("*") if f.is_file())
    assert st["ratio"] == pytest.approx(st["bytes"] / on_disk)
    assert st["ratio"] > 1, "repeated, compressible logs and fulls deduplicate"
    by = {d["database"]["name"]: d for d in st["databases"]}
    assert sorted(by) == ["mail1", "mail2"]
    for name, d in by.items():
        mine = [s for s in sets if s["database"]["name"] == name]
        assert d["sets"] == len(mine)
        assert d["fulls"] == d["chains"] == sum(1 for s in mine if s["type"] == "full")
        assert d["bytes"] == sum(s["bytes"] for s in mine)
        assert d["bytes_stored"] == sum(s["bytes_stored"] for s in mine)
        newest = max(t for (_sid, db, _t, t, _p) in weeks.sets if db == name)
        assert d["newest"] == iso(newest)
    text = cli.run("repo", "stats", "--repo", repo).stdout
    assert f"sets:     {len(sets)} in {st['chains']} chains" in text
    assert " kB" in text or " MB" in text
    assert any(l.startswith("mail1 ") and iso(max(t for (_s, db, _t, t, _p) in weeks.sets if db == "mail1")) in l
               for l in text.splitlines())
    # expire shrinks both sides, and stats follow
    cli.run("expire", "--repo", repo, "--keep-last", "1")
    after = cli.json("repo", "stats", "--repo", repo)
    assert after["sets"] < st["sets"] and after["bytes_on_disk"] < st["bytes_on_disk"]
    assert after["bytes_on_disk"] == sum(f.stat().st_size for f in (repo / "packs").rglob("*") if f.is_file())
