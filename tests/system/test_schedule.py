"""ombra schedule: the configuration's [schedule:NAME] sections become systemd timers that
systemd-analyze accepts, are listed with their next run, removed, and run (the backup lands in
the repository the schedule names, then its retention). Files ombra did not write are never
replaced or removed."""
import json
import shutil

import pytest

from conftest import one_line_refusal

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (systemd)")


def conf_with(store, schedules):
    tmp = store.tmp
    conf = tmp / "ombra.conf"
    conf.write_text(f"""[ombra]
default-repo = main
[repo:main]
path = {tmp}/repo
keep-last = 2
{schedules}""")
    return conf


SCHEDULES = """
[schedule:weekly-full]
databases = db1 db2
type = full
calendar = Sun 01:00
randomized-delay = 30m

[schedule:daily]
databases = db1, db2
type = incremental
calendar = Mon..Sat *-*-* 01:00:00
persistent = no
"""


@needs_analyze
def test_timers_are_written_verified_listed_and_removed(store, tmp_path):
    conf = conf_with(store, SCHEDULES)
    units = tmp_path / "units"
    units.mkdir()
    out = json.loads(store.ombra("--config", conf, "schedule", "write", "--unit-dir", units,
                                 "--json").out)
    assert sorted(out["written"]) == ["daily", "weekly-full"] and out["calendars_checked"]
    names = sorted(p.name for p in units.iterdir())
    assert names == ["ombra-schedule-daily.service", "ombra-schedule-daily.timer",
                     "ombra-schedule-weekly-full.service", "ombra-schedule-weekly-full.timer"]
    timer = (units / "ombra-schedule-weekly-full.timer").read_text()
    assert "OnCalendar=Sun 01:00\n" in timer and "RandomizedDelaySec=1800\n" in timer
    assert "Persistent=true\n" in timer and "WantedBy=timers.target" in timer
    assert "Persistent=false\n" in (units / "ombra-schedule-daily.timer").read_text()
    service = (units / "ombra-schedule-daily.service").read_text()
    assert f'--config "{conf}" schedule run daily' in service and "Type=oneshot" in service
    # the same hardening as the package's ombra-backup@.service, line for line
    tmpl = (__import__("pathlib").Path(__file__).parents[2] / "dist/systemd/ombra-backup@.service.in")
    section = tmpl.read_text().split("[Service]")[1]
    hardening = [x for x in section.splitlines() if "=" in x and not x.startswith(("#", "ExecStart="))]
    assert len(hardening) > 15, hardening
    missing = [x for x in hardening if x + "\n" not in service]
    assert not missing, (missing, service)
    for unit in sorted(units.iterdir()):
        r = __import__("subprocess").run(["systemd-analyze", "verify", str(unit)],
                                         capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (unit, r.stderr)
    listed = json.loads(store.ombra("--config", conf, "schedule", "list", "--unit-dir", units,
                                    "--json").out)
    by = {s["name"]: s for s in listed["schedules"]}
    assert by["weekly-full"]["timer_written"] and by["weekly-full"]["next"].startswith("Sun ")
    assert by["daily"]["type"] == "incremental" and by["daily"]["repo"] == "main"
    # A schedule taken out of the file: write removes its pair.
    conf.write_text(conf.read_text().split("[schedule:daily]")[0])
    out = json.loads(store.ombra("--config", conf, "schedule", "write", "--unit-dir", units,
                                 "--json").out)
    assert out["removed"] == ["daily"]
    assert not (units / "ombra-schedule-daily.timer").exists()
    r = store.ombra("--config", conf, "schedule", "remove", "--unit-dir", units)
    assert "removed 2 unit files" in r.out
    assert list(units.iterdir()) == []


@needs_analyze
def test_a_calendar_systemd_refuses_is_never_written(store, tmp_path):
    conf = conf_with(store, "[schedule:bad]\ndatabases = db1\ntype = full\ncalendar = every tuesday\n")
    units = tmp_path / "units"
    units.mkdir()
    r = store.ombra("--config", conf, "schedule", "write", "--unit-dir", units, check=False)
    one_line_refusal(r)
    assert f"{conf}:9: calendar 'every tuesday' of [schedule:bad] is not a systemd calendar" in r.err
    assert list(units.iterdir()) == []
    # a schedule without a calendar
    conf = conf_with(store, "[schedule:s]\ndatabases = db1\ntype = full\n")
    r = store.ombra("--config", conf, "schedule", "write", "--unit-dir", units, check=False)
    one_line_refusal(r)
    assert "[schedule:s] has no calendar" in r.err


def test_files_ombra_did_not_write_are_left_alone(store, tmp_path):
    conf = conf_with(store, SCHEDULES)
    units = tmp_path / "units"
    units.mkdir()
    mine = units / "ombra-schedule-daily.timer"
    mine.write_text("[Timer]\nOnCalendar=hourly\n")  # the administrator's own
    target = tmp_path / "precious"
    target.write_text("keep me")
    (units / "ombra-schedule-weekly-full.service").symlink_to(target)  # a planted link
    r = store.ombra("--config", conf, "schedule", "write", "--unit-dir", units, check=False)
    one_line_refusal(r)
    assert "was not written by ombra schedule" in r.err
    assert mine.read_text() == "[Timer]\nOnCalendar=hourly\n"
    assert target.read_text() == "keep me"
    r = store.ombra("--config", conf, "schedule", "remove", "daily", "--unit-dir", units,
                    check=False)
    one_line_refusal(r)
    assert mine.exists() and target.read_text() == "keep me"


def test_a_run_backs_up_the_schedules_databases_then_applies_retention(store, vssd):
    conf = conf_with(store, SCHEDULES)
    store.ombra("repo", "init", store.tmp / "repo")
    for db in ("db1", "db2"):
        store.ombra("db", "new", db)
        store.ombra("mail", "load", db, "--mailboxes", "1", "--messages", "10", "--size", "2000",
                    "--seed", "3")
    for _ in range(3):
        r = store.ombra("--config", conf, "schedule", "run", "weekly-full")
        assert "schedule weekly-full: full backup of db1 db2 to main" in r.out, r.describe()
    sets = store.ombra("--config", conf, "backups", "list", "--json").out
    doc = json.loads(sets)
    rows = doc["sets"] if isinstance(doc, dict) else doc
    fulls = [s for s in rows if s["type"] == "full"]
    # keep-last = 2 for the repository: of three runs of two databases, two fulls of each stay
    assert len(fulls) == 4, rows
    # A failing run exits non-zero with the backup's status and says so.
    conf.write_text(conf.read_text().replace("databases = db1 db2", "databases = db1 nosuch"))
    r = store.ombra("--config", conf, "schedule", "run", "weekly-full", check=False)
    assert r.rc != 0 and "nosuch" in r.err, r.describe()
    assert "schedule weekly-full: the full backup of db1 nosuch failed" in r.err
    r = store.ombra("--config", conf, "schedule", "run", "monthly", check=False)
    one_line_refusal(r)
    assert r.rc == 1 and "has no [schedule:monthly]" in r.err, r.describe()


def test_units_never_say_more_than_the_configuration_means(store, tmp_path):
    """A configuration path with a newline cannot add directives; '$' and '%' stay themselves;
    write from one file leaves another file's timers alone."""
    units = tmp_path / "units"
    units.mkdir()
    evil = tmp_path / "x\n[Service]\nExecStartPre=/bin/touch /tmp/PWNED\n#"
    evil.mkdir(parents=True)
    conf = evil / "c.conf"
    conf.write_text(f"[repo:main]\npath = {tmp_path}/repo\n" + SCHEDULES)
    r = store.ombra("--config", conf, "schedule", "write", "--unit-dir", units, check=False)
    one_line_refusal(r)
    assert "control character" in r.err and list(units.iterdir()) == []
    odd = tmp_path / "a$HOME b%n" / "c.conf"
    odd.parent.mkdir()
    odd.write_text(conf.read_text())
    store.ombra("--config", odd, "schedule", "write", "--unit-dir", units)
    service = (units / "ombra-schedule-daily.service").read_text()
    assert '--config "' + str(odd).replace("$", "$$").replace("%", "%%") + '"' in service, service
    if shutil.which("systemd-analyze"):
        r = __import__("subprocess").run(["systemd-analyze", "verify", str(units / "ombra-schedule-daily.service")],
                                         capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    # a second configuration file with no schedules removes nothing of the first's
    other = tmp_path / "other.conf"
    other.write_text(f"[repo:main]\npath = {tmp_path}/repo\n")
    out = json.loads(store.ombra("--config", other, "schedule", "write", "--unit-dir", units,
                                 "--json").out)
    assert out["removed"] == [] and len(list(units.iterdir())) == 4
    store.ombra("--config", other, "schedule", "remove", "--unit-dir", units)
    assert len(list(units.iterdir())) == 4
    store.ombra("--config", odd, "schedule", "remove", "--unit-dir", units)
    assert list(units.iterdir()) == []
    r = store.ombra("--config", odd, "schedule", "remove", "../x", "--unit-dir", units, check=False)
    assert r.rc == 2


def test_a_run_passes_every_database_of_the_schedule_to_the_backup(store, vssd):
    """schedule run stopped adding names after its 64th: the rest of a long databases line was
    never backed up, and the run said it succeeded. Here the 71st name is one the store does
    not have: the run must fail naming it, not back up the first ones and exit 0."""
    store.ombra("repo", "init", store.tmp / "repo")
    store.ombra("db", "new", "a")
    names = " ".join(["a"] * 70 + ["zz"])  # a name given twice is backed up once
    conf = conf_with(store, f"[schedule:many]\ndatabases = {names}\ntype = full\ncalendar = daily\n")
    r = store.ombra("--config", conf, "schedule", "run", "many", "--json", check=False)
    assert r.rc == 1, r.describe()
    doc = json.loads(r.out)
    assert doc["exit"] == 1 and "'zz'" in doc["backup"]["error"]["message"], doc


@needs_analyze
def test_a_scheduled_run_under_systemd_gives_its_lines_the_journals_priorities(store, vssd):
    """Under systemd a scheduled run's stderr is journald's stream ($JOURNAL_STREAM names its
    device and inode): each line starts with its syslog priority ("<3>" error, "<6>" info), so
    `journalctl -p err` shows a failed scheduled backup; elsewhere the lines are as always."""
    import os
    import subprocess
    conf = conf_with(store, SCHEDULES.replace("databases = db1 db2", "databases = db1 nosuch"))
    store.ombra("repo", "init", store.tmp / "repo")
    store.ombra("db", "new", "db1")
    err = store.tmp / "journal-stream"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        env = dict(store.env, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        rc = subprocess.run([str(store.cli), "--config", str(conf), "schedule", "run", "weekly-full"],
                            env=env, stdout=subprocess.DEVNULL, stderr=f, timeout=120).returncode
    lines = err.read_text().splitlines()
    assert rc != 0 and lines, lines
    failed = [x for x in lines if "schedule weekly-full: the full backup of db1 nosuch failed" in x]
    assert failed and all(x.startswith("<3>ombra: error: ") for x in failed), lines
    assert all(x[:1] == "<" and x[1] in "3467" and x[2] == ">" for x in lines), lines
    # not journald's stream (a pipe): no prefix
    r = store.ombra("--config", conf, "schedule", "run", "weekly-full", check=False,
                    env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert r.rc != 0 and "<3>" not in r.err and "failed" in r.err, r.describe()
