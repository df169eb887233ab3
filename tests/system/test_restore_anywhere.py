"""Restore on any server (spec §6: databases are not tied to a server): a backup made on server
alpha restores on a new server beta — its own ombra-store --server beta, its own ombra-vssd, its
own OMBRA_HOME and OMBRA_RUNTIME_DIR, the same repository path — through beta's writer, into
the recovery database, into another database, and to new paths, each with alpha's mail digest."""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import Store, daemon_env


def start_vssd(st, build_dir):
    """ombra-vssd next to st (its runtime directory), as the vssd fixture starts it."""
    log = open(st.tmp / "vssd.log", "w")
    st.vssd = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground",
                                "--event-limit-ms", "20000"],
                               env=daemon_env(st.env), stdout=log, stderr=subprocess.STDOUT)
    st.vssd_log = log
    if not st.writer_registered():
        pytest.fail(f"the writer of {st.server} did not register with its ombra-vssd:\n"
                    + st.stderr())


@pytest.fixture
def servers(build_dir, request):
    """Two servers, alpha and beta, each a store and an ombra-vssd in its own directories, and a
    repository both reach at one path."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="ombra-ra-", dir="/tmp"))
    made = []
    try:
        for name in ("alpha", "beta"):
            (base / name).mkdir()
            st = Store(build_dir, base / name, server=name)
            made.append(st)
            st.start()
            start_vssd(st, build_dir)
        repo = base / "repo"
        made[0].ombra("repo", "init", repo)
        yield made[0], made[1], repo
    finally:
        for st in made:
            if getattr(st, "vssd", None):
                st.vssd.terminate()
                st.vssd.wait(20)
                st.vssd_log.close()
            if st.proc and st.proc.poll() is None:
                rc = st.stop()
                assert rc == 0, f"ombra-store {st.server} exited {rc}:\n{st.stderr()}"
        if getattr(request.node, "_ombra_failed", False) or os.environ.get("OMBRA_KEEP_TMP"):
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def attach(st, name, db_id, edb, logs):
    """Makes the database whose files a restore to new paths laid down one of st's databases
    (the store has no command that adopts existing files: its directory gets the entry while
    it is stopped), so the test can read its mail."""
    st.stop()
    d = json.loads((st.home / "directory.json").read_text())
    d["databases"].append({"name": name, "id": db_id, "server": st.server, "edb": str(edb),
                           "logs": str(logs), "base": "E00", "circular_logging": False,
                           "allow_restore": False, "recovery": False, "mounted": False})
    (st.home / "directory.json").write_text(json.dumps(d))
    st.start()
    assert st.writer_registered()
    st.ombra("db", "mount", name)


def load(st, db, n, seed):
    st.ombra("mail", "load", db, "--mailboxes", "3", "--messages", str(n), "--size", "5000",
             "--seed", str(seed))


def history_on_alpha(alpha, repo):
    """mail1 on alpha: a full and an incremental; alpha's id of it and its digest."""
    alpha.ombra("db", "new", "mail1")
    load(alpha, "mail1", 300, 1)
    alpha.ombra("backup", "--repo", repo, "--type", "full", "mail1")
    load(alpha, "mail1", 200, 2)
    alpha.ombra("backup", "--repo", repo, "--type", "incremental", "mail1")
    return alpha.db_show("mail1")["id"], alpha.digest("mail1")


def restore(st, repo, *args, check=True):
    return st.ombra("restore", "mail1", "--repo", repo, "--json", *args, check=check)


@pytest.mark.slow_under_sanitizers
def test_a_backup_made_on_alpha_restores_on_beta_through_betas_writer(servers):
    alpha, beta, repo = servers
    alpha_id, digest = history_on_alpha(alpha, repo)
    writers = {s.server: [w["instance_id"] for w in s.json("vss", "writers")["writers"]]
               for s in (alpha, beta)}
    assert set(writers["alpha"]).isdisjoint(writers["beta"]), writers
    # the recovery database
    beta.ombra("db", "new-recovery", "rec", "--edb", beta.tmp / "rec" / "rec.edb",
               "--logs", beta.tmp / "rec" / "logs")
    r = restore(beta, repo, "--recovery", "rec", "--mount")
    res = json.loads(r.out)
    assert res["target"] == "rec" and [s["type"] for s in res["sets"]] == ["full", "incremental"]
    assert beta.digest("rec") == digest
    # another database of beta, under a new name
    beta.ombra("db", "new", "newname")
    beta.ombra("db", "dismount", "newname")
    beta.ombra("db", "set", "newname", "--allow-restore", "on")
    r = restore(beta, repo, "--to", "newname", "--mount")
    assert json.loads(r.out)["target"] == "newname"
    assert beta.digest("newname") == digest
    # new paths: a clean database of alpha's id there, which beta then serves with alpha's mail
    edb, logs = beta.tmp / "np" / "mail1.edb", beta.tmp / "np" / "logs"
    restore(beta, repo, "--edb", edb, "--logs", logs)
    h = json.loads(beta.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] == "Clean Shutdown" and h["db_id"] == alpha_id, h
    assert not (logs / "_restoredLogs").exists()
    attach(beta, "attached", alpha_id, edb, logs)
    assert beta.digest("attached") == digest
    # and the repository's sets still name alpha as where the backups were made
    o = alpha.json("backups", "list", "--repo", repo)["sets"]
    sets = o["sets"] if isinstance(o, dict) else o
    assert {s["server"] for s in sets} == {"alpha"}, sets
    # alpha's database is untouched
    assert alpha.digest("mail1") == digest


def test_a_restore_with_no_store_writer_at_this_servers_vssd_is_one_clear_error(servers, build_dir):
    alpha, beta, repo = servers
    history_on_alpha(alpha, repo)
    beta.ombra("db", "new-recovery", "rec", "--edb", beta.tmp / "rec" / "rec.edb",
               "--logs", beta.tmp / "rec" / "logs")
    # beta's store, but an ombra-vssd that no writer has registered with
    run = beta.tmp / "run2"
    run.mkdir()
    (run / "store.sock").symlink_to(beta.sock)
    env = dict(beta.env, OMBRA_RUNTIME_DIR=str(run))
    log = open(beta.tmp / "vssd2.log", "w")
    v = subprocess.Popen([str(build_dir / "src/daemons/ombra-vssd"), "--foreground"], env=env,
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if (run / "vss.sock").exists():
                break
            time.sleep(0.05)
        r = beta.ombra("restore", "mail1", "--repo", repo, "--recovery", "rec", check=False,
                       env={"OMBRA_RUNTIME_DIR": str(run)})
        assert r.rc == 1 and len(r.err.strip().split("\n")) == 1, r.describe()
        assert "-9121 WriterNotResponding" in r.err and "Ombra Store Writer" in r.err, r.describe()
        assert "HINT" in r.err, r.describe()
    finally:
        v.terminate()
        v.wait(20)
        log.close()
    # through beta's own ombra-vssd it works
    restore(beta, repo, "--recovery", "rec", "--mount")
    assert beta.digest("rec") == alpha.digest("mail1")
