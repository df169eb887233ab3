"""The configuration file (/etc/ombra/ombra.conf, --config, OMBRA_CONFIG): a repository named in
it is what backup, restore, backups list and expire use; the command line wins over the
environment, which wins over the file; a mistake in it is one line naming the file, the line and
the key, for the CLI and the daemons alike."""
import json
import os
import subprocess

from conftest import one_line_refusal


def write(path, text):
    path.write_text(text)
    return path


def test_a_repository_named_in_the_file_is_used_by_backup_restore_list_and_expire(store, vssd):
    tmp = store.tmp
    pw = write(tmp / "main.pass", "correct horse battery staple\n")
    pw.chmod(0o600)
    conf = write(tmp / "ombra.conf", f"""# the administrator's file
[ombra]
default-repo = main

[repo:main]
path = {tmp}/repo-main
passphrase-file = {pw}

[repo:other]
path = {tmp}/repo-other
""")
    store.ombra("repo", "init", "--encrypt", tmp / "repo-main", "--passphrase-file", pw)
    store.ombra("repo", "init", tmp / "repo-other")
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "2", "--messages", "40", "--size", "2000", "--seed", "1")
    # No --repo: the default repository, its passphrase from the file.
    b = json.loads(store.ombra("--config", conf, "backup", "--type", "full", "--json", "db1").out)
    assert b["json_version"] == 1
    sid = b["sets"][0]["id"]
    digest = store.digest("db1")
    # --repo NAME; the same through OMBRA_CONFIG.
    listed = json.loads(store.ombra("backups", "list", "--repo", "main", "--json",
                                    env={"OMBRA_CONFIG": str(conf)}).out)
    assert sid in json.dumps(listed)
    assert json.loads(store.ombra("--config", conf, "backups", "list", "--repo", "other",
                                  "--json").out) in ([], {"sets": [], "json_version": 1}) or \
        sid not in store.ombra("--config", conf, "backups", "list", "--repo", "other").out
    # The passphrase really comes from the file: without it the encrypted repository is refused.
    r = store.ombra("backups", "list", "--repo", tmp / "repo-main", check=False)
    assert r.rc == 1 and "passphrase" in r.err.lower(), r.describe()
    # Restore from the named repository gives back what was backed up (into a second database:
    # --to db2), and the same through the default repository.
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    store.ombra("--config", conf, "restore", "db1", "--repo", "main", "--to", "db2", "--mount")
    assert store.digest("db2") == digest
    store.ombra("mail", "load", "db1", "--mailboxes", "1", "--messages", "5", "--size", "2000", "--seed", "9")
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    store.ombra("--config", conf, "restore", "db1", "--set", sid[:12], "--no-roll-forward",
                "--mount")
    assert store.digest("db1") == digest
    # Expire on the named repository (no --repo: the default).
    r = store.ombra("--config", conf, "expire", "--keep-full", "1")
    assert "kept 1 sets" in r.out, r.describe()


def test_precedence_is_command_line_then_environment_then_file(store, vssd):
    tmp = store.tmp
    for name in ("a", "b", "c"):
        store.ombra("repo", "init", tmp / f"repo-{name}")
    conf = write(tmp / "ombra.conf", f"""[ombra]
default-repo = a
[repo:a]
path = {tmp}/repo-a
[repo:b]
path = {tmp}/repo-b
""")
    store.ombra("db", "new", "db1")
    store.ombra("mail", "load", "db1", "--mailboxes", "1", "--messages", "5", "--size", "2000", "--seed", "2")

    def backed_up_into():
        seen = [n for n in ("a", "b", "c")
                if store.ombra("backups", "list", "--repo", tmp / f"repo-{n}", "--json").out.count('"full"')]
        return seen

    # the file
    store.ombra("--config", conf, "backup", "--type", "full", "db1")
    assert backed_up_into() == ["a"]
    # the environment over the file
    store.ombra("--config", conf, "backup", "--type", "full", "db1", env={"OMBRA_REPO": "b"})
    assert backed_up_into() == ["a", "b"]
    # the command line over both
    store.ombra("--config", conf, "backup", "--type", "full", "--repo", tmp / "repo-c", "db1",
                env={"OMBRA_REPO": "b"})
    assert backed_up_into() == ["a", "b", "c"]
    # directories: OMBRA_RUNTIME_DIR (the fixture's) wins over the file's runtime-dir, so the
    # CLI still finds this store; the file's alone would send it elsewhere.
    elsewhere = write(tmp / "elsewhere.conf", f"[ombra]\nruntime-dir = {tmp}/nowhere\n")
    store.ombra("--config", elsewhere, "db", "list")
    env = {k: v for k, v in store.env.items() if k != "OMBRA_RUNTIME_DIR"}
    p = subprocess.run([str(store.cli), "--config", str(elsewhere), "db", "list"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and f"{tmp}/nowhere" in p.stderr, p.stderr


def test_a_mistake_in_the_file_is_one_line_with_file_line_and_key(store):
    tmp = store.tmp
    conf = write(tmp / "bad.conf", "[ombra]\nserver = a\n\n[repo:main]\npath = /srv/main\npasphrase-file = /x\n")
    r = store.ombra("--config", conf, "backups", "list", check=False)
    one_line_refusal(r)
    assert r.rc == 1
    assert f"{conf}:6: unknown key 'pasphrase-file' in [repo:main] (did you mean 'passphrase-file'?)" in r.err
    # The same as a JSON document with --json.
    r = store.ombra("--config", conf, "backups", "list", "--json", check=False)
    e = json.loads(r.out)["error"]
    assert e["name"] == "ConfigInvalid" and e["code"] == -9400 and e["exit"] == 1
    assert ":6: unknown key" in e["message"] and e["hint"]
    # A value of the wrong kind, a key twice, a relative path.
    for text, line, what in (("[repo:m]\npath = rel/path\n", 2, "not an absolute path"),
                             ("[ombra]\nserver = a\nserver = b\n", 3, "given twice"),
                             ("[schedule:s]\npersistent = perhaps\n", 2, "neither yes nor no")):
        write(conf, text)
        r = store.ombra("--config", conf, "db", "list", check=False)
        one_line_refusal(r)
        assert f"{conf}:{line}: " in r.err and what in r.err, r.describe()
    # A missing file named on the command line is an error, not silently no file.
    r = store.ombra("--config", tmp / "missing.conf", "db", "list", check=False)
    one_line_refusal(r)
    assert "missing.conf" in r.err and "--config" in r.err
    # --help and --version work while the file is broken.
    assert store.ombra("--config", conf, "--version").rc == 0


def test_a_section_without_its_required_keys_is_refused_at_its_header(store):
    """A [repo:NAME] without a path was taken for the default repository and then reported as
    "default-repo names 'main'" at line 0 (no default-repo in the file); a schedule without a
    calendar was found only by schedule write or the timer's run."""
    tmp = store.tmp
    conf = write(tmp / "req.conf", "[ombra]\nserver = a\n\n[repo:main]\nkeep-last = 3\n")
    for cmd in (("backups", "list"), ("backups", "list", "--repo", "main"), ("db", "list")):
        r = store.ombra("--config", conf, *cmd, check=False)
        one_line_refusal(r)
        assert r.rc == 1 and f"{conf}:4: [repo:main] has no path" in r.err, r.describe()
    write(conf, "[repo:m]\npath = /srv/m\n\n[schedule:nightly]\ndatabases = db1\ntype = full\n")
    r = store.ombra("--config", conf, "db", "list", check=False)
    one_line_refusal(r)
    assert f"{conf}:4: [schedule:nightly] has no calendar" in r.err, r.describe()


def test_retention_in_the_file_is_refused_where_expire_would_refuse_it(store):
    """keep-last = 200000 or keep-within = 999999d passed the file's check and then failed
    every scheduled expire as a usage error about an option nobody typed (--keep-last)."""
    tmp = store.tmp
    conf = tmp / "keep.conf"
    for value, line in (("keep-last = 200000", "keep-last"), ("keep-daily = 100001", "keep-daily"),
                        ("keep-within = 999999d", "keep-within"),
                        ("keep-within = 1y100001h", "keep-within")):
        write(conf, f"[repo:main]\npath = {tmp}/repo\n{value}\n")
        r = store.ombra("--config", conf, "expire", "--dry-run", check=False)
        one_line_refusal(r)
        assert r.rc == 1 and f"{conf}:3: {line} in [repo:main]" in r.err, r.describe()
    # The largest values both accept are accepted by both.
    store.ombra("repo", "init", tmp / "repo")
    write(conf, f"[repo:main]\npath = {tmp}/repo\nkeep-last = 100000\nkeep-within = 100000d\n")
    assert store.ombra("--config", conf, "expire", "--dry-run").rc == 0


def test_the_daemons_read_the_file_and_refuse_a_broken_one(build_dir, tmp_path):
    store_bin = build_dir / "src" / "daemons" / "ombra-store"
    for name in ("ombra-store", "ombra-vssd", "ombra-repld"):
        conf = write(tmp_path / f"{name}.conf", "[ombra]\ndata-dir = relative/dir\n")
        p = subprocess.run([str(build_dir / "src" / "daemons" / name), "--foreground", "--config",
                            str(conf)], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, OMBRA_CONFIG="/dev/null"))
        assert p.returncode == 1, (name, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{conf}:2: data-dir in [ombra]: 'relative/dir' is not an absolute path" in lines[0], p.stderr
    # A store configured only by the file: its data and runtime directories and its name.
    conf = write(tmp_path / "store.conf", f"""[ombra]
server = configured-name
data-dir = {tmp_path}/data
runtime-dir = {tmp_path}/run
""")
    env = {k: v for k, v in os.environ.items() if k not in ("OMBRA_HOME", "OMBRA_RUNTIME_DIR")}
    env["OMBRA_CONFIG"] = str(conf)
    proc = subprocess.Popen([str(store_bin), "--foreground"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        cli = str(build_dir / "src" / "cli" / "ombra")
        for _ in range(200):
            r = subprocess.run([cli, "db", "new", "db1"], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                break
            import time
            time.sleep(0.05)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "run" / "store.sock").exists()
        show = json.loads(subprocess.run([cli, "db", "show", "db1", "--json"], env=env,
                                         capture_output=True, text=True, check=True).stdout)
        assert str(tmp_path / "data") in json.dumps(show)
        st = subprocess.run([cli, "db", "list", "--json"], env=env, capture_output=True, text=True,
                            check=True).stdout
        assert "db1" in st
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_packaged_file_and_every_example_in_it_are_valid(store):
    """dist/ombra.conf as installed (all commented) and with every example line taken in."""
    dist = __import__("pathlib").Path(__file__).resolve().parents[2] / "dist" / "ombra.conf"
    store.ombra("--config", dist, "schedule", "list")
    lines = []
    for line in dist.read_text().splitlines():
        s = line.lstrip("#").strip()
        if line.startswith("#") and (s.startswith("[") or ("=" in s and " " not in s.split("=")[0].strip())):
            line = s
        lines.append(line)
    every = store.tmp / "every.conf"
    every.write_text("\n".join(lines) + "\n")
    assert "[schedule:daily]" in every.read_text() and "\nkeep-daily = 7" in every.read_text()
    r = store.ombra("--config", every, "schedule", "list", "--json")
    assert [s["name"] for s in json.loads(r.out)["schedules"]] == ["weekly-full", "daily"]


def test_expire_without_options_applies_the_repositorys_retention_from_the_file(store, vssd):
    tmp = store.tmp
    store.ombra("repo", "init", tmp / "repo")
    conf = write(tmp / "ombra.conf", f"[repo:main]\npath = {tmp}/repo\nkeep-last = 2\n")
    store.ombra("db", "new", "db1")
    for seed in range(4):
        store.ombra("mail", "load", "db1", "--mailboxes", "1", "--messages", "5", "--size", "900",
                    "--seed", str(seed))
        store.ombra("--config", conf, "backup", "--type", "full", "db1")
    dry = json.loads(store.ombra("--config", conf, "expire", "--dry-run", "--json").out)
    assert len(dry["removed"]) == 2 and len(dry["kept"]) == 2, dry
    assert all("last" in " ".join(k["reasons"]) for k in dry["kept"]), dry
    real = json.loads(store.ombra("--config", conf, "expire", "--json").out)
    assert sorted(real["sets_deleted"]) == sorted(s["id"] for s in dry["removed"])
    # the command line replaces the file's policy whole
    dry = json.loads(store.ombra("--config", conf, "expire", "--keep-last", "1", "--dry-run",
                                 "--json").out)
    assert len(dry["removed"]) == 1, dry
    # no rule anywhere: refused
    r = store.ombra("expire", "--repo", tmp / "repo", check=False)
    assert r.rc == 2 and "at least one rule" in r.err


def test_a_daemon_logs_where_the_files_log_section_says(build_dir, tmp_path):
    """[log] file and level: ISO lines in the file, nothing below the level; SIGHUP reopens it."""
    import re
    import signal
    import time
    logf = tmp_path / "log" / "ombra.log"
    logf.parent.mkdir()
    conf = write(tmp_path / "ombra.conf", f"""[ombra]
data-dir = {tmp_path}/data
runtime-dir = {tmp_path}/run
[log]
file = {logf}
level = warning
""")
    env = {k: v for k, v in os.environ.items() if k not in ("OMBRA_HOME", "OMBRA_RUNTIME_DIR")}
    env["OMBRA_CONFIG"] = str(conf)
    proc = subprocess.Popen([str(build_dir / "src" / "daemons" / "ombra-vssd"), "--foreground"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if (tmp_path / "run" / "vss.sock").exists():
                break
            time.sleep(0.05)
        assert (tmp_path / "run" / "vss.sock").exists()
        logf.rename(logf.with_suffix(".1"))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if logf.exists():
                break
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert logf.exists(), "SIGHUP reopened the configured file at its path"
    text = logf.with_suffix(".1").read_text() + logf.read_text()
    assert " info: " not in text, text  # level = warning
    # with level = info the same start writes ISO-stamped info lines into the file
    conf.write_text(conf.read_text().replace("level = warning", "level = info"))
    proc = subprocess.Popen([str(build_dir / "src" / "daemons" / "ombra-vssd"), "--foreground"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 30  # its first info line, not a fixed time: SIGTERM before the
    while time.monotonic() < end and " info: " not in logf.read_text():  # log is open kills it
        time.sleep(0.05)
    proc.terminate()
    proc.wait(timeout=30)
    lines = [l for l in logf.read_text().splitlines() if " info: " in l]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ombra-vssd\[\d+\] info: ", l)
                         for l in lines), lines


def test_repo_init_takes_a_configured_name_or_the_default(store):
    tmp = store.tmp
    pw = write(tmp / "p.pass", "a passphrase of the file\n")
    pw.chmod(0o600)
    conf = write(tmp / "ombra.conf", f"""[ombra]
default-repo = enc
[repo:enc]
path = {tmp}/enc
passphrase-file = {pw}
[repo:plain]
path = {tmp}/plain
""")
    r = store.ombra("--config", conf, "repo", "init", check=False)  # the default: encrypted
    assert r.rc == 2 and "[repo:enc] has a passphrase-file: add --encrypt" in r.err
    store.ombra("--config", conf, "repo", "init", "--encrypt")
    assert (tmp / "enc" / "config.json").exists()
    store.ombra("--config", conf, "repo", "init", "plain")
    assert (tmp / "plain" / "config.json").exists()
    info = json.loads(store.ombra("--config", conf, "repo", "stats", "--repo", "enc", "--json").out)
    assert info["json_version"] == 1
