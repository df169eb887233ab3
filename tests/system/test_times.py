"""Times (spec §6): every time the tools print names its zone (ISO 8601, 'Z'), and a printed time
pasted back into restore --until-time means the same instant under any TZ — including the
instant's precision: a set's freeze is nanoseconds, its printed time milliseconds, and a restore
to the time printed for a set gives that set's state (base/time.h: a time covers the whole
millisecond it names)."""
import datetime
import json
import re

import pytest

ISO_Z = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\b")
UNZONED = re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?(?![\d.Z+-])")
ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


def load(store, db, n, seed):
    store.ombra("mail", "load", db, "--mailboxes", "3", "--messages", str(n), "--size", "4000",
                "--seed", str(seed))


def backup(store, repo, t):
    return json.loads(store.ombra("backup", "--repo", repo, "--type", t, "--json", "db1").out)


def printed_time(text, what):
    m = ISO_Z.findall(text)
    assert len(m) == 1, f"not one ISO 8601 time with Z in {what}:\n{text}"
    return m[0]


def restore_at(store, repo, t, tz):
    """Restores db1's backups to time t into db2 under TZ=tz; db2's digest."""
    store.ombra("restore", "db1", "--repo", repo, "--until-time", t, "--to", "db2", "--mount",
                env={"TZ": tz})
    d = store.digest("db2")
    store.ombra("db", "dismount", "db2")
    return d


@pytest.fixture
def history(store, vssd):
    """db1: full A, mail, full B, mail, incremental C; the digests and set ids; db2 ready for a
    restore."""
    repo = store.tmp / "repo"
    store.ombra("repo", "init", repo)
    store.ombra("db", "new", "db1")
    load(store, "db1", 200, 1)
    a = backup(store, repo, "full")["sets"][0]["id"]
    d_a = store.digest("db1")
    load(store, "db1", 150, 2)
    b = backup(store, repo, "full")["sets"][0]["id"]
    d_b = store.digest("db1")
    db_show_b = {tz: store.ombra("db", "show", "db1", env={"TZ": tz}).out for tz in ZONES}
    load(store, "db1", 150, 3)
    c = backup(store, repo, "incremental")["sets"][0]["id"]
    d_c = store.digest("db1")
    assert len({d_a, d_b, d_c}) == 3
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    return {"repo": repo, "sets": (a, b, c), "digests": (d_a, d_b, d_c), "db_show_b": db_show_b}


@pytest.mark.slow_under_sanitizers  # a restore per time zone
def test_a_time_printed_by_backups_list_restores_that_set_under_any_tz(store, history):
    repo, (a, b, c), (d_a, d_b, d_c) = history["repo"], history["sets"], history["digests"]
    lists = {tz: store.ombra("backups", "list", "--repo", repo, env={"TZ": tz}).out
             for tz in ZONES}
    assert len(set(lists.values())) == 1, "backups list prints the same under every TZ"
    text = lists["America/New_York"]
    assert not UNZONED.search(text), f"a time without its zone:\n{text}"
    rows = {s: next((ln for ln in text.splitlines() if ln.startswith(s[:12])), "") for s in (a, b, c)}
    t_b = printed_time(rows[b], f"the row of set {b[:12]}")
    # the freeze is nanoseconds; the printed time is that instant truncated to the millisecond
    mark = json.loads(store.ombra("backups", "show", b, "--repo", repo, "--json").out)["mark_time_ns"]
    utc = datetime.datetime.fromtimestamp(mark // 10**9, datetime.timezone.utc)
    assert t_b == utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{mark // 10**6 % 1000:03d}Z"
    # pasted back under each TZ: set B's state. Read as local time it named another instant
    # (New York: after C, so C's state; Kolkata: before A); taken as the truncated instant it
    # fell before B's freeze (A's state, or no chain)
    for tz in ZONES:
        assert restore_at(store, repo, t_b, tz) == d_b, f"--until-time {t_b} under TZ={tz}"
    # an older full's printed time gives that full's state, with a newer full and its
    # incremental after it
    t_a = printed_time(rows[a], f"the row of set {a[:12]}")
    assert restore_at(store, repo, t_a, "America/New_York") == d_a, f"--until-time {t_a}"
    # the same instant written with an offset
    base = datetime.datetime.strptime(t_b[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)
    for off, tz in ((datetime.timedelta(hours=5, minutes=30), "UTC"),
                    (datetime.timedelta(hours=-5), "Asia/Kolkata")):
        local = base.astimezone(datetime.timezone(off))
        sign = "+" if off >= datetime.timedelta(0) else "-"
        hhmm = f"{abs(int(off.total_seconds())) // 3600:02d}{abs(int(off.total_seconds())) // 60 % 60:02d}"
        t = local.strftime("%Y-%m-%d %H:%M:%S.") + t_b[20:23] + f"{sign}{hhmm[:2]}:{hhmm[2:]}"
        assert restore_at(store, repo, t, tz) == d_b, f"--until-time {t} under TZ={tz}"


@pytest.mark.slow_under_sanitizers  # a restore per time zone
def test_a_backup_time_printed_by_db_show_restores_that_backup_under_any_tz(store, history):
    repo, d_b = history["repo"], history["digests"][1]
    shown = history["db_show_b"]
    assert len(set(shown.values())) == 1, "db show prints the same under every TZ"
    line = next(ln for ln in shown["Asia/Kolkata"].splitlines() if "previous full" in ln)
    t = printed_time(line, "db show's previous full")
    for tz in ZONES:
        assert restore_at(store, repo, t, tz) == d_b, f"--until-time {t} under TZ={tz}"


def test_a_time_without_a_zone_is_refused_naming_it(store, history):
    repo = history["repo"]
    for t in ("2026-12-04 08:45:19.668", "2026-12-04T08:45:19"):
        r = store.ombra("restore", "db1", "--repo", repo, "--until-time", t, "--to", "db2",
                        check=False, env={"TZ": "America/New_York"})
        assert r.rc == 2, r.describe()
        assert len(r.err.strip().split("\n")) == 1, r.describe()
        assert f"'{t}'" in r.err and "no time zone" in r.err and "HINT: add Z" in r.err, r.describe()
    r = store.ombra("restore", "db1", "--repo", repo, "--until-time", "2026-12-04T08:45:19.1234567891Z",
                    "--to", "db2", check=False)
    assert r.rc == 2 and "fraction digits" in r.err, r.describe()
    # nothing was restored into db2 by the refusals: it is still the empty database
    m = store.ombra("db", "mount", "db2")
    assert m.rc == 0
