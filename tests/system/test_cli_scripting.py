"""ombra for scripts (issue 20, docs/cli.md): `ombra help GROUP CMD` prints what `--help` does;
a mistyped group, command, option or database gets "did you mean"; every --json document is an
object that names a backup set's id "id" and a database {"id", "name"} the same way everywhere;
sizes shown to people are SI; the restore's log replay draws a progress bar on a terminal and
nothing when stderr is not one."""
import json
import os
import pty
import re
import select
import subprocess
import time

import pytest


def cli(build_dir, *args, env=None):
    p = subprocess.run([str(build_dir / "src/cli/ombra"), *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


# ---- help ----------------------------------------------------------------------------------

def commands(build_dir):
    """(group, command) of every command `ombra --help` and each group's help list."""
    _, out, _ = cli(build_dir, "--help")
    groups = re.findall(r"^  (\S+)\s", out.split("groups:")[1], re.M)
    assert "backup" in groups and "db" in groups, out
    found = []
    for g in groups + ["db copy"]:
        rc, gout, _ = cli(build_dir, *g.split(), "--help")
        assert rc == 0
        if "commands:" not in gout:  # a group that is one command (ombra backup)
            found.append((g, None))
            continue
        for c in re.findall(rf"^  ombra {g} (\S+)", gout, re.M):
            found.append((g, c))
    return found


@pytest.mark.slow_under_sanitizers  # every command: make test-long
def test_help_prints_what_dash_dash_help_prints_for_every_command(build_dir):
    cmds = commands(build_dir)
    assert ("db", "mount") in cmds and ("db copy", "status") in cmds and ("backup", None) in cmds
    for g, c in cmds:
        words = g.split() + ([c] if c else [])
        rc, out, err = cli(build_dir, "help", *words)
        want = cli(build_dir, *words, "--help")
        assert (rc, out, err) == want and rc == 0 and out.startswith("usage: ombra"), words
    # a group's help, and the whole command's
    assert cli(build_dir, "help", "db") == cli(build_dir, "db", "--help")
    assert cli(build_dir, "help") == cli(build_dir, "--help")
    assert "ombra help [GROUP [COMMAND]]" in cli(build_dir, "help")[1]


# ---- did you mean --------------------------------------------------------------------------

def test_a_mistyped_group_command_or_option_names_the_nearest(build_dir):
    rc, out, err = cli(build_dir, "backpu", "--repo", "/nowhere", "db1")
    assert rc == 2 and out == ""
    assert err == "ombra: unknown command 'backpu'. Did you mean 'backup'? See 'ombra --help'.\n"
    rc, _, err = cli(build_dir, "db", "mout", "mail1")
    assert rc == 2 and "unknown db command 'mout'. Did you mean 'mount'?" in err
    rc, _, err = cli(build_dir, "db", "cpoy", "status")
    assert rc == 2 and "Did you mean 'copy'?" in err
    rc, _, err = cli(build_dir, "hlep", "db")
    assert rc == 2 and "Did you mean 'help'?" in err
    rc, _, err = cli(build_dir, "backups", "list", "--repo", "/nowhere", "--jsno")
    assert rc == 2 and "unknown option '--jsno'. Did you mean '--json'?" in err
    assert err.count("\n") == 1
    # nothing near: no guess
    rc, _, err = cli(build_dir, "zzzzzzzz")
    assert rc == 2 and err == "ombra: unknown command 'zzzzzzzz'. See 'ombra --help'.\n"
    rc, _, err = cli(build_dir, "db", "mount", "--frobnicate-all", "x")
    assert rc == 2 and "Did you mean" not in err and "unknown option '--frobnicate-all'" in err


def test_a_mistyped_database_gets_the_nearest_name_from_the_store(store, vssd):
    store.ombra("db", "new", "mail1")
    store.ombra("db", "new", "archive")
    r = store.ombra("db", "show", "mial1", check=False)
    assert r.rc == 1 and r.err.count("\n") == 1, r.describe()
    assert r.err.startswith("ombra: no database named 'mial1'. HINT: did you mean 'mail1'?")
    assert r.err.rstrip().endswith("(-1203 DatabaseNotFound)"), r.describe()
    r = store.ombra("db", "dismount", "Archiv", check=False)
    assert r.rc == 1 and "did you mean 'archive'?" in r.err, r.describe()
    r = store.ombra("mail", "list", "mail2", "alice", check=False)
    assert r.rc == 1 and "did you mean 'mail1'?" in r.err, r.describe()
    # a backup and a restore of it: the same hint (after the one a backup already gives)
    store.ombra("repo", "init", store.tmp / "repo")
    r = store.ombra("backup", "--repo", store.tmp / "repo", "--type", "full", "mial1", check=False)
    assert r.rc == 1 and r.err.rstrip().endswith("or did you mean 'mail1'? (-1203 DatabaseNotFound)"), \
        r.describe()
    r = store.ombra("restore", "mial1", "--repo", store.tmp / "repo", check=False)
    assert r.rc == 1 and "HINT: did you mean 'mail1'? (ombra backups list" in r.err, r.describe()
    assert "SetNotFound" in r.err and r.err.count("\n") == 1, r.describe()
    # far from every name: the store's message as it was
    r = store.ombra("db", "show", "payroll", check=False)
    assert r.rc == 1 and "did you mean" not in r.err and "no database named 'payroll'" in r.err


def test_a_backup_or_restore_that_fails_as_a_whole_says_why_in_its_json_document(store, vssd):
    """backup --json printed its document (no sets, "failed": []) and exit 1, and no error at
    all: a script, or schedule run --json nesting it, could not tell a mistyped database from
    a missing repository; restore --json printed what it used and nothing of its failure."""
    store.ombra("db", "new", "mail1")
    store.ombra("repo", "init", store.tmp / "repo")
    for db, repo, name, hint in (("mial1", "repo", "DatabaseNotFound", "did you mean 'mail1'?"),
                                 ("mail1", "nowhere", "NotRepository", "ombra repo init")):
        r = store.ombra("backup", "--repo", store.tmp / repo, "--type", "full", db, "--json",
                        check=False)
        assert r.rc == 1 and r.err.count("\n") == 1, r.describe()
        doc = json.loads(r.out)  # one document
        assert doc["sets"] == [] and doc["json_version"] == 1, doc
        e = doc["error"]
        assert e["name"] == name and e["exit"] == 1 and hint in e["hint"], doc
        assert e["message"] in r.err, r.describe()
    store.ombra("backup", "--repo", store.tmp / "repo", "--type", "full", "mail1")
    r = store.ombra("restore", "mail1", "--repo", store.tmp / "repo", "--recovery", "nosuch",
                    "--json", check=False)
    assert r.rc == 1, r.describe()
    doc = json.loads(r.out)
    assert doc["sets"] and doc["error"]["exit"] == 1, doc
    assert "new-recovery nosuch" in doc["error"]["hint"], doc
    assert doc["target"] == "nosuch", doc  # the database it was to go to, not the source


# ---- one set of field names ----------------------------------------------------------------

def walk(doc, path=""):
    """(path, key, value) of every member of every object in doc."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from walk(v, f"{path}[{i}]")


def test_every_json_document_names_sets_and_databases_the_same_way(store, vssd):
    repo = store.tmp / "repo"
    docs = {}

    def j(*args):
        r = store.ombra(*args, "--json")
        d = json.loads(r.out)
        assert isinstance(d, dict), f"a bare {type(d).__name__}:\n{r.describe()}"
        docs[" ".join(map(str, args[:2]))] = d
        return d

    j("repo", "init", repo)
    db = j("db", "new", "mail1")
    assert set(db) >= {"id", "name"} and db["name"] == "mail1"
    db_id = db["id"]
    store.ombra("mail", "load", "mail1", "--mailboxes", "2", "--messages", "40", "--size", "3000")
    full = j("backup", "--repo", repo, "--type", "full", "mail1")
    store.ombra("mail", "load", "mail1", "--mailboxes", "2", "--messages", "40", "--size", "3000",
                "--seed", "2")
    inc = j("backup", "--repo", repo, "--type", "incremental", "mail1")
    listed = j("backups", "list", "--repo", repo)["sets"]
    shown = j("backups", "show", listed[0]["id"][:12], "--repo", repo)
    verified = j("verify", listed[1]["id"][:12], "--repo", repo)
    j("db", "list")
    j("db", "show", "mail1")
    store.ombra("mail", "deliver", "mail1", "alice", input="Subject: hi\n\nhello\n")
    j("mail", "list", "mail1", "alice")
    j("mail", "digest", "mail1")
    j("db", "dismount", "mail1")
    j("db", "set", "mail1", "--allow-restore", "on")
    restored = j("restore", "mail1", "--repo", repo)
    j("db", "mount", "mail1")
    j("vss", "writers")
    j("vss", "providers")
    j("vss", "shadows")
    j("expire", "--repo", repo, "--keep-full", "1")

    # A set's id is "id", the same value wherever the set appears.
    ids = [s["id"] for s in listed]
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids), listed
    assert [s["id"] for s in full["sets"] + inc["sets"]] == ids
    assert shown["id"] == ids[0]
    assert [s["id"] for s in restored["sets"]] == ids
    assert verified["set_id"].startswith(ids[1][:12]) and verified["ok"] is True
    # No backup set is named otherwise anywhere: "set" is only ever a shadow copy set's uuid (the
    # snapshot's, in vss shadows and a set's stored components document), never a backup set's.
    uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    for name, d in docs.items():
        for path, k, v in walk(d):
            assert k not in ("backup", "set_ids", "backup_id"), (name, path, k)
            assert k != "set" or re.fullmatch(uuid, str(v)), (name, path, k, v)
            if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) and v in ids:
                assert k in ("id", "set_id", "parent") or path.endswith(".chain"), (name, path, k)
    # A database is {"id", "name"} wherever a document refers to one.
    refs = [(name, path, v) for name, d in docs.items() for path, k, v in walk(d)
            if k == "database"]
    assert {n for n, _, _ in refs} >= {"backup --repo", "backups list", "backups show", "restore mail1",
                                       "mail digest"}
    for name, path, v in refs:
        assert isinstance(v, dict) and v.get("id") == db_id and v.get("name") == "mail1", \
            (name, path, v)
    for key in ("databases", "copies"):
        for x in full[key]:
            d = x if key == "databases" else x["database"]
            assert (d["id"], d["name"]) == (db_id, "mail1"), full
    # The documents that are databases carry id and name at their top.
    for name in ("db new", "db show", "db dismount", "db set", "db mount"):
        assert (docs[name]["id"], docs[name]["name"]) == (db_id, "mail1"), name
    assert [(d["id"], d["name"]) for d in docs["db list"]["databases"]] == [(db_id, "mail1")]
    # Lists live under a key that names them.
    assert isinstance(docs["vss writers"]["writers"], list)
    assert isinstance(docs["vss providers"]["providers"], list)
    assert docs["vss shadows"]["shadows"] == []
    assert isinstance(docs["mail list"]["messages"], list) and docs["mail list"]["messages"]
    # "version" is left to the version of ombra (cli_print_json): a format's is format_version
    assert docs["repo init"]["format_version"] == 2, docs["repo init"]
    for name, d in docs.items():
        assert isinstance(d.get("version", ""), str), (name, d.get("version"))
    # Times: ISO 8601 UTC for people, *_ns integers for arithmetic.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", listed[0]["time"])
    assert isinstance(listed[0]["committed_ns"], int)


def test_sizes_shown_to_people_are_si(store, vssd):
    repo = store.tmp / "repo"
    out = store.ombra("repo", "init", repo, "--block-size", "256K").out
    assert "block size:  262.1 kB (262144 bytes, 256K)" in out, out
    store.ombra("db", "new", "mail1")
    store.ombra("mail", "load", "mail1", "--mailboxes", "2", "--messages", "50", "--size", "4000")
    out = store.ombra("backup", "--repo", repo, "--type", "full", "mail1").out
    assert re.search(r"\d+(\.\d)? (B|kB|MB|GB) stored", out), out
    assert not re.search(r"KiB|MiB|GiB", out), out


# ---- the replay's progress bar -------------------------------------------------------------

def backed_up_chain(store):
    """mail1 with a full and two incrementals in a repository, dismounted and open to a
    restore: a restore replays several generations."""
    repo = store.tmp / "repo"
    store.ombra("repo", "init", repo)
    store.ombra("db", "new", "mail1")
    for seed, kind in ((1, "full"), (2, "incremental"), (3, "incremental")):
        store.ombra("mail", "load", "mail1", "--mailboxes", "3", "--messages", "150", "--size",
                    "5000", "--seed", str(seed))
        store.ombra("backup", "--repo", repo, "--type", kind, "mail1")
    store.ombra("db", "dismount", "mail1")
    store.ombra("db", "set", "mail1", "--allow-restore", "on")
    return repo


def run_on_a_pty(store, *args, seconds=120):
    """Runs ombra ARGS with stderr on a pseudo-terminal: (rc, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(store.cli), *map(str, args)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=store.env)
    os.close(slave)
    got = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the terminal's other side is gone
                break
            if not chunk:
                break
            got += chunk
        elif p.poll() is not None:
            break
    os.close(master)
    out = p.stdout.read().decode()
    p.stdout.close()
    return p.wait(30), out, got.decode(errors="replace")


def test_the_restore_draws_the_replay_progress_on_a_terminal(store, vssd):
    repo = backed_up_chain(store)
    rc, out, tty = run_on_a_pty(store, "restore", "mail1", "--repo", repo)
    assert rc == 0, tty
    m = re.search(r"restored mail1 into mail1: .*generations (\d+)-(\d+) replayed", out)
    assert m, out
    total = int(m.group(2)) - int(m.group(1)) + 1
    assert total >= 3, out
    # the bar of the files laid down, then the replay's, ending at every generation replayed
    assert "\rrestore" in tty, tty
    draws = re.findall(r"\rreplay\s+\[([#.]{30})\]\s+(\d+)%\s+(\d+)/(\d+) generations", tty)
    assert draws, tty
    assert draws[-1] == ("#" * 30, "100", str(total), str(total)), draws
    assert all(int(d[3]) == total for d in draws), draws


def test_the_restore_draws_no_progress_when_stderr_is_not_a_terminal(store, vssd):
    repo = backed_up_chain(store)
    r = store.ombra("restore", "mail1", "--repo", repo)
    assert "generations" in r.out and "replayed" in r.out, r.describe()
    assert "\r" not in r.err and "replay " not in r.err and "[###" not in r.err, r.describe()
    assert r.err == "", r.describe()



def test_the_store_reports_the_restore_it_replays_in_its_status(store, vssd):
    """The channel the bar reads: while a restore is under way, the store's status lists it
    (its session and target) and, once hard recovery has replayed a generation, how far. The
    restore's requester is stopped once its .edb is laid, before it asks for replay (its workers
    lay the rest meanwhile): the store holds the restore until PostRestore, whatever the timing.
    (Stopped later, at "replaying", the workers may lay every generation and the store replay
    them all and end the restore within the pause: seen under load.)"""
    from conftest import Paused
    repo = backed_up_chain(store)
    assert store.request({"op": "status"})["restores"] == []
    p = Paused(store, ["restore", "mail1", "--repo", repo], "OMBRA_RESTORE_PAUSE", "edb")
    assert p.reached, p.first
    try:
        time.sleep(0.5)
        (r,) = store.request({"op": "status"})["restores"]
        assert r["target"] == "mail1" and re.fullmatch(r"[0-9a-f-]{36}", r["session"]), r
        if "replay" in r:  # generations laid before the pause may be replayed already
            rp = r["replay"]
            assert rp["first_gen"] <= rp["gen"] < rp["last_gen"], r
    finally:
        res = p.resume()
    assert res.rc == 0, res.describe()
    assert store.request({"op": "status"})["restores"] == []


# ---- --json on every command that reports ---------------------------------------------------

def one_doc(r, keys):
    """The one JSON object r printed on stdout, with json_version and at least keys."""
    d = json.loads(r.out)  # raises on anything but one document (two would not parse)
    assert isinstance(d, dict) and d.get("json_version") == 1, r.describe()
    assert set(d) >= set(keys) | {"json_version"}, (sorted(d), keys, r.describe())
    return d


def one_error(r, name=None):
    """r failed with --json: stdout is one {"error"} document whose exit is r's exit code."""
    assert r.rc != 0, r.describe()
    d = one_doc(r, {"error"})
    assert set(d) == {"error", "json_version"}, r.describe()
    assert d["error"]["exit"] == r.rc and d["error"]["message"], r.describe()
    if name:
        assert d["error"]["name"] == name, r.describe()
    return d["error"]


def test_mail_dbutil_vss_and_schedule_commands_print_one_json_document(store, vssd):
    db_id = store.json("db", "new", "mail1")["id"]
    ref = {"id": db_id, "name": "mail1"}
    store.ombra("mail", "load", "mail1", "--mailboxes", "2", "--messages", "30", "--size", "2000")
    msg = json.loads(store.ombra("mail", "deliver", "mail1", "alice", "--json",
                                 input="Subject: hi\n\nhello\n").out)["id"]

    # mail delete, mail digest: the database {id, name}, what was deleted, the digest
    d = one_doc(store.ombra("mail", "delete", "mail1", "alice", msg, "--json"),
                {"database", "mailbox", "id", "deleted"})
    assert (d["database"], d["mailbox"], d["id"], d["deleted"]) == (ref, "alice", msg, True)
    assert store.ombra("mail", "delete", "mail1", "alice", msg + 1, check=False).out == ""
    one_error(store.ombra("mail", "delete", "mail1", "alice", msg, "--json", check=False))
    digest = one_doc(store.ombra("mail", "digest", "mail1", "--json"), {"database", "digest"})
    assert digest["database"] == ref and re.fullmatch(r"[0-9a-f]{32}", digest["digest"]), digest
    assert store.ombra("mail", "digest", "mail1").out == digest["digest"] + "\n"  # text unchanged
    one_error(store.ombra("mail", "digest", "mial1", "--json", check=False), "DatabaseNotFound")

    # dbutil checksum, recover, digest of the dismounted database's files
    show = store.json("db", "show", "mail1")
    edb, logs = show["edb"], show["logs"]
    store.ombra("db", "dismount", "mail1")
    d = one_doc(store.ombra("dbutil", "checksum", edb, logs, "--json"), {"files", "problems"})
    assert d["problems"] == 0 and d["files"][0]["file"] == edb, d
    kinds = [f["kind"] for f in d["files"]]
    assert kinds[0] == "database" and kinds[1:] and set(kinds[1:]) == {"log"}, d
    assert all(f["ok"] and f["error"] is None for f in d["files"]), d
    assert d["files"][0]["pages_checked"] > 0 and d["files"][0]["bad_pages"] == [], d
    assert all(isinstance(f["generation"], int) for f in d["files"][1:]), d
    one_error(store.ombra("dbutil", "checksum", store.tmp / "nosuch.edb", "--json", check=False),
              "FileNotFound")
    d = one_doc(store.ombra("dbutil", "recover", logs, "--edb", edb, "--json"),
                {"recovery", "file", "logs", "records", "transactions", "seconds", "state"})
    assert (d["recovery"], d["file"], d["state"]) == ("none", edb, "Clean Shutdown"), d
    one_error(store.ombra("dbutil", "recover", store.tmp / "nosuch", "--json", check=False))
    d = one_doc(store.ombra("dbutil", "digest", edb, "--logs", logs, "--json"),
                {"file", "logs", "base", "digest"})
    assert d["digest"] == digest["digest"] and d["file"] == edb, d  # what mail digest said
    one_error(store.ombra("dbutil", "digest", store.tmp / "nosuch.edb", "--logs", logs, "--json",
                          check=False), "FileNotFound")
    store.ombra("db", "mount", "mail1")

    # vss delete-shadows: a shadow copy that is not there is one error document
    e = one_error(store.ombra("vss", "delete-shadows", "--id", "nosuch", "--json", check=False),
                  "ObjectNotFound")
    assert "nosuch" in e["message"], e

    # schedule run: ONE document holding the backup's and expire's own documents
    conf = store.tmp / "ombra.conf"
    conf.write_text(f"[repo:main]\npath = {store.tmp}/repo\nkeep-last = 1\n\n"
                    "[schedule:nightly]\ndatabases = mail1\ntype = full\ncalendar = daily\n"
                    "[schedule:broken]\ndatabases = mail1 nosuch\ntype = full\ncalendar = daily\n")
    store.ombra("repo", "init", store.tmp / "repo")
    runs = [one_doc(store.ombra("--config", conf, "schedule", "run", "nightly", "--json"),
                    {"schedule", "backup", "expire", "exit"}) for _ in range(2)]
    for d in runs:
        assert (d["schedule"], d["exit"]) == ("nightly", 0), d
        assert [s["database"] for s in d["backup"]["sets"]] == [ref], d
        assert isinstance(d["expire"], dict) and "sets_deleted" in d["expire"], d
    # keep-last = 1: the second run's retention deletes the first run's set
    assert runs[1]["expire"]["sets_deleted"] == [runs[0]["backup"]["sets"][0]["id"]], runs
    r = store.ombra("--config", conf, "schedule", "run", "broken", "--json", check=False)
    d = one_doc(r, {"schedule", "backup", "expire", "exit"})
    assert r.rc != 0 and d["exit"] == r.rc and d["expire"] is None, r.describe()
    assert isinstance(d["backup"], dict) and "nosuch" in json.dumps(d["backup"]), d
    one_error(store.ombra("--config", conf, "schedule", "run", "nosuch", "--json", check=False))
    # without --json the text is as it was
    r = store.ombra("--config", conf, "schedule", "run", "nightly")
    assert r.out.startswith("schedule nightly: full backup of mail1 to main\n"), r.describe()
