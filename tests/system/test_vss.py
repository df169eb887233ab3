"""ombra-vssd with real writer and requester processes (tests/tools/vss_test_writer.c,
vss_requester.c): the whole backup sequence with every provider, the shadow copy equal to the
files at freeze while the originals keep changing; faults at every step (a writer that fails,
sleeps past the limit or dies; a requester killed; a provider that fails), after each of which
the writers are stable or failed with the right state, no shadow copy is left, and the next backup
succeeds; two sessions in parallel after PostSnapshot, and a second one on the same component
refused."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import daemon_env

STEPS = ["gather", "prepare", "snapshot", "complete", "release"]
EVENTS = ["PrepareBackup", "PrepareSnapshot", "Freeze", "Thaw", "PostSnapshot"]


def wait_for(pred, seconds=10, what="condition"):
    end = time.time() + seconds
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Vss:
    """ombra-vssd in a private temp directory, writers and requesters pointed at it."""

    def __init__(self, build_dir, tmp, *args, env=None):
        self.b = build_dir
        self.tmp = tmp
        self.env = dict(os.environ, OMBRA_RUNTIME_DIR=f"{tmp}/run", OMBRA_HOME=f"{tmp}/home")
        self.env.update(env or {})
        self.log = open(f"{tmp}/vssd.log", "a")
        self.args = args
        self.writers = []
        self.start()

    def start(self):
        self.proc = subprocess.Popen([str(self.b / "src/daemons/ombra-vssd"), "--foreground", *self.args],
                                     env=daemon_env(self.env), stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ombra("vss", "writers").returncode == 0, 10, "ombra-vssd to listen")

    def ombra(self, *args, check=None):
        p = subprocess.run([str(self.b / "src/cli/ombra"), *map(str, args)], env=self.env,
                           capture_output=True, text=True, timeout=60)
        if check is not None:
            assert p.returncode == check, p.stdout + p.stderr
        return p

    def writer(self, name, *args, dir=None, can_hold=True):
        d = dir or f"{self.tmp}/{name}"
        inst = str(uuid.uuid4())
        argv = [str(self.b / "tests/tools/vss_test_writer"), "--dir", str(d), "--name", name,
                "--instance", inst, "--mutate", *args]
        if can_hold:
            argv.append("--can-hold")
        out = open(f"{self.tmp}/{name}-{inst[:8]}.out", "w+")
        p = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        w = {"proc": p, "name": name, "instance": inst, "dir": str(d), "out": out,
             "component": f"Test\\{name}\\{name}"}
        self.writers.append(w)
        wait_for(lambda: self.writer_state(w) is not None, 10, f"writer {name} to register")
        return w

    def writer_state(self, w):
        p = self.ombra("vss", "writers", "--json")
        if p.returncode:
            return None
        for x in json.loads(p.stdout)["writers"]:
            if x["instance_id"] == w["instance"] and x["connected"]:
                return x
        return None

    def events(self, w):
        w["out"].flush()
        with open(w["out"].name) as f:
            return [l.split()[1] for l in f if l.startswith("event ")]

    def requester(self, *components, provider="copy", args=(), pause_at=None):
        argv = [str(self.b / "tests/tools/vss_requester"), "--type", "full", "--provider", provider]
        for w in components:
            argv += ["--component", f"{w['instance']}:{w['component']}"]
        if pause_at:
            argv += ["--pause-at", pause_at]
        argv += list(args)
        return subprocess.Popen(argv, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def backup(self, *components, provider="copy", args=()):
        p = self.requester(*components, provider=provider, args=args)
        out, err = p.communicate(timeout=120)
        last = [l for l in out.splitlines() if l.startswith("{")]
        return p.returncode, json.loads(last[-1]) if last else None, err

    def shadows(self):
        return json.loads(self.ombra("vss", "shadows", "--json", check=0).stdout)["shadows"]

    def stop(self):
        for w in self.writers:
            if w["proc"].poll() is None:
                w["proc"].terminate()
                try:
                    w["proc"].wait(10)
                except subprocess.TimeoutExpired:
                    w["proc"].kill()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()


@pytest.fixture
def vss_factory(build_dir):
    made = []

    def make(*args, env=None, tmp=None):
        t = tmp or tempfile.mkdtemp(prefix="ombra-vss-", dir="/tmp")
        v = Vss(build_dir, t, *args, env=env)
        made.append(v)
        return v

    yield make
    for v in made:
        v.stop()
        if not os.environ.get("OMBRA_KEEP_TMP"):
            shutil.rmtree(v.tmp, ignore_errors=True)


@pytest.fixture
def vss(vss_factory):
    return vss_factory()


def digest(vss, d):
    p = subprocess.run([str(vss.b / "tests/tools/vss_test_writer"), "digest", str(d)], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)["files"]


def paused(p, step):
    line = p.stdout.readline()
    assert line.startswith(f"paused {step}"), line + p.stderr.read() if p.poll() is not None else line
    rest = line[len(f"paused {step}"):].strip()
    return json.loads(rest) if rest else None


def cont(p):
    p.stdin.write("\n")
    p.stdin.flush()


def assert_clean_after(vss, *writers, failed_event=None):
    """No shadow copy left; the writers stable, or the one that failed failed at its event."""
    wait_for(lambda: vss.shadows() == [], 15, "the shadow copies to be deleted")
    for w in writers:
        st = vss.writer_state(w)
        if st is None:
            continue
        if failed_event and w.get("faulty"):
            assert st["state"] == f"failed_at_{failed_event}", st
            assert st["last_error"], st
        else:
            assert st["state"] == "stable", st


# ---- the whole sequence, with each provider ----

def mount_image(kind, tmp):
    if os.geteuid() != 0:
        pytest.skip(f"{kind}: mounting a loop device needs root")
    mkfs = shutil.which(f"mkfs.{kind}")
    if not mkfs:
        pytest.skip(f"{kind}: mkfs.{kind} is not installed (apt-get install {'xfsprogs' if kind == 'xfs' else 'btrfs-progs'})")
    img, mnt = f"{tmp}/{kind}.img", f"{tmp}/{kind}-mnt"
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate(400 << 20)
    opts = ["-m", "reflink=1"] if kind == "xfs" else []
    subprocess.run([mkfs, "-q", *opts, img], check=True, capture_output=True)
    r = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"{kind}: cannot mount a loop device here: {r.stderr.strip()}")
    return mnt


@pytest.fixture
def fs_dir(request):
    """A directory on the filesystem the provider needs: a loop-mounted XFS image (reflink) or
    btrfs image (btrfs) when root, else the temp directory. Set up before vss_factory, so it is
    torn down after the daemons and writers have stopped."""
    provider = request.node.callspec.params["provider"]
    tmp = tempfile.mkdtemp(prefix="ombra-fs-", dir="/tmp")
    mnt = None
    if provider in ("reflink", "btrfs"):
        mnt = mount_image("xfs" if provider == "reflink" else "btrfs", tmp)
    yield mnt or tmp
    if mnt:
        subprocess.run(["umount", mnt], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("provider", ["copy", "held", "reflink", "btrfs"])
def test_full_sequence_shadow_equals_the_files_at_freeze(fs_dir, vss_factory, provider):
    v = vss_factory()
    w = v.writer("w1", dir=f"{fs_dir}/w1")
    p = v.requester(w, provider=provider, pause_at="complete")
    snap = paused(p, "complete")
    assert snap and snap["shadows"], snap
    sh = snap["shadows"][0]
    assert sh["provider"] == provider
    assert snap["freeze_ms"] >= 0 and snap["snapshot_ms"] >= snap["freeze_ms"]
    frozen = json.load(open(w["dir"] + ".freeze.json"))["files"]
    # the originals keep changing; the shadow copy does not
    wait_for(lambda: digest(v, w["dir"]) != frozen, 10, "the writer to change its files")
    time.sleep(0.3)
    assert digest(v, sh["exposed"]) == frozen
    listed = v.shadows()
    assert [s["id"] for s in listed] == [sh["id"]] and listed[0]["provider"] == provider
    st = v.writer_state(w)
    assert st["state"] == "waiting_for_backup_complete", st
    cont(p)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    res = json.loads(out.splitlines()[-1])
    doc = res["components_document"]
    assert doc["type"] == "full" and doc["components"][0]["component"] == w["component"]
    assert doc["components"][0]["succeeded"] is True
    assert_clean_after(v, w)
    ev = v.events(w)
    for e in ["Identify", "PrepareBackup", "PrepareSnapshot", "Freeze", "Thaw", "PostSnapshot",
              "BackupComplete", "BackupShutdown"]:
        assert e in ev, ev
    assert ev.index("Freeze") < ev.index("Thaw") < ev.index("PostSnapshot") < ev.index("BackupComplete")
    v.stop()


# ---- faults at every step ----

@pytest.mark.parametrize("event", EVENTS)
def test_a_writer_that_fails_an_event_aborts_the_backup_and_the_next_one_succeeds(vss, event):
    w = vss.writer("w1", "--fail", f"{event}:retryable:1")
    w["faulty"] = True
    rc, res, err = vss.backup(w)
    assert rc == 1, (res, err)
    assert "-9110 WriterErrorRetryable" in err and event in err, err
    assert_clean_after(vss, w, failed_event=event)
    assert "Abort" in vss.events(w)
    rc, res, err = vss.backup(w)
    assert rc == 0, err
    assert_clean_after(vss, w)


def test_a_writer_failing_backup_complete_fails_the_backup_and_is_reported(vss):
    w = vss.writer("w1", "--fail", "BackupComplete:non_retryable:1")
    rc, res, err = vss.backup(w)
    # the writer recorded nothing: the backup did not succeed end to end (spec §6)
    assert rc == 1 and "failed BackupComplete" in err, err
    st = vss.writer_state(w)
    assert st["state"] == "failed_at_BackupComplete" and st["failure"] == "non_retryable", st
    wait_for(lambda: vss.shadows() == [], 10, "the shadow copies to be deleted")


@pytest.mark.parametrize("event", EVENTS)
def test_a_writer_that_sleeps_past_the_limit_times_out(vss_factory, event):
    v = vss_factory("--event-limit-ms", "1000")
    w = v.writer("w1", "--sleep", f"{event}:2500")
    w["faulty"] = True
    rc, res, err = v.backup(w)
    assert rc == 1 and "-9112 WriterErrorTimeout" in err and event in err, err
    assert_clean_after(v, w, failed_event=event)
    w2 = v.writer("w2")  # the coordinator is not stuck on the slow writer
    rc, res, err = v.backup(w2)
    assert rc == 0, err


@pytest.mark.parametrize("event", EVENTS + ["BackupComplete"])
def test_a_writer_killed_during_an_event_fails_the_backup_and_a_new_one_succeeds(vss, event):
    w = vss.writer("w1", "--die", event)
    rc, res, err = vss.backup(w)
    assert rc == 1 and "-9121 WriterNotResponding" in err, err
    wait_for(lambda: vss.shadows() == [], 10, "the shadow copies to be deleted")
    w2 = vss.writer("w2")
    rc, res, err = vss.backup(w2)
    assert rc == 0, err
    assert_clean_after(vss, w2)


@pytest.mark.parametrize("step", STEPS)
def test_a_requester_killed_at_any_step_leaves_nothing_behind(vss, step):
    w = vss.writer("w1")
    p = vss.requester(w, pause_at=step)
    paused(p, step)
    p.kill()
    p.wait()
    assert_clean_after(vss, w)
    if step in ("snapshot", "complete", "release"):
        wait_for(lambda: "Abort" in vss.events(w) or "BackupShutdown" in vss.events(w), 10, "Abort")
    rc, res, err = vss.backup(w)
    assert rc == 0, err


@pytest.mark.parametrize("step", STEPS[:4])
def test_a_requester_that_aborts_at_any_step_leaves_nothing_behind(vss, step):
    w = vss.writer("w1")
    rc, res, err = vss.backup(w, args=("--abort-at", step))
    assert_clean_after(vss, w)
    rc, res, err = vss.backup(w)
    assert rc == 0, err


@pytest.mark.parametrize("pstep", ["prepare", "commit", "expose"])
def test_a_provider_that_fails_aborts_the_backup(vss_factory, pstep):
    v = vss_factory(env={"OMBRA_VSSD_TEST_FAIL_PROVIDER": f"{pstep}:1"})
    w = v.writer("w1")
    rc, res, err = v.backup(w)
    assert rc == 1 and "-9102 ProviderVeto" in err and pstep in err, err
    assert_clean_after(v, w)
    assert "Abort" in v.events(w)
    rc, res, err = v.backup(w)
    assert rc == 0, err


def test_a_commit_past_the_limit_is_hold_writes_timeout(vss_factory):
    v = vss_factory("--commit-limit-ms", "1")
    w = v.writer("w1")
    rc, res, err = v.backup(w, provider="copy")
    assert rc == 1 and "-9105 HoldWritesTimeout" in err, err
    assert_clean_after(v, w)
    ev = v.events(w)
    assert "Thaw" not in ev and ev.index("Abort") > ev.index("Freeze"), ev  # Abort thawed it
    assert v.writer_state(w)["state"] == "stable"


# ---- sessions side by side ----

def test_two_sessions_on_different_writers_run_in_parallel_and_a_second_on_one_component_is_refused(vss):
    w1, w2 = vss.writer("w1"), vss.writer("w2")
    a = vss.requester(w1, pause_at="complete")
    paused(a, "complete")  # a is between PostSnapshot and BackupComplete
    rc, res, err = vss.backup(w2)
    assert rc == 0, err
    rc, res, err = vss.backup(w1)
    assert rc == 1 and "-505 BackupInProgress" in err, err
    session_a = [s["session"] for s in vss.shadows()]
    assert session_a and session_a[0] in err, (session_a, err)
    cont(a)
    out, err = a.communicate(timeout=60)
    assert a.returncode == 0, err
    assert_clean_after(vss, w1, w2)
    rc, res, err = vss.backup(w1)
    assert rc == 0, err


def test_vss_commands_show_writers_providers_and_shadows(vss):
    w = vss.writer("w1")
    r = vss.ombra("vss", "writers", check=0)
    assert "writer name: 'w1'" in r.stdout and w["instance"] in r.stdout and "state: stable" in r.stdout
    r = vss.ombra("vss", "providers", check=0)
    for name in ("held", "reflink", "btrfs", "copy"):
        assert name in r.stdout
    p = vss.requester(w, pause_at="complete", args=("--persistent",))
    paused(p, "complete")
    r = vss.ombra("vss", "shadows", check=0)
    assert "provider: copy, persistent" in r.stdout and "created:" in r.stdout and "files" in r.stdout
    cont(p)
    p.communicate(timeout=60)
    sh = vss.shadows()
    assert len(sh) == 1 and sh[0]["persistent"] and sh[0]["session"] == ""
    assert os.path.isdir(sh[0]["exposed"])
    r = vss.ombra("vss", "delete-shadows", "--set", sh[0]["set_id"], check=0)
    assert "1 shadow copy deleted" in r.stdout
    assert vss.shadows() == [] and not os.path.exists(sh[0]["exposed"])


def test_delete_shadows_json_says_what_was_asked_and_how_many_went(vss):
    p = vss.requester(vss.writer("w1"), pause_at="complete", args=("--persistent",))
    paused(p, "complete")
    cont(p)
    p.communicate(timeout=60)
    sh = vss.shadows()
    assert len(sh) == 1, sh
    r = vss.ombra("vss", "delete-shadows", "--id", sh[0]["id"], "--json", check=0)
    assert r.returncode == 0 and json.loads(r.stdout) == {
        "id": sh[0]["id"], "set": None, "deleted": 1, "json_version": 1}, r.stdout + r.stderr
    assert vss.shadows() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid (nobody)")
def test_a_client_of_another_uid_is_refused(vss):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    sock = f"{vss.tmp}/run/vss.sock"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
    for d in (vss.tmp, f"{vss.tmp}/run"):
        os.chmod(d, 0o755)
    os.chmod(sock, 0o666)  # past the socket's mode, the daemon's SO_PEERCRED check refuses
    p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        str(vss.b / "src/cli/ombra"), "vss", "writers"], env=vss.env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and "-1032 FileAccessDenied" in p.stderr and "65534" in p.stderr, p.stderr
    assert len(p.stderr.strip().split("\n")) == 1
    vss.ombra("vss", "writers", check=0)  # root still served


def restore(vss, run_json, *args):
    f = f"{vss.tmp}/backup-{uuid.uuid4().hex[:6]}.json"
    with open(f, "w") as fh:
        json.dump(run_json, fh)
    p = subprocess.run([str(vss.b / "tests/tools/vss_requester"), "--restore", f, *args], env=vss.env,
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def test_restore_brings_the_saved_documents_to_the_writer(vss):
    w = vss.writer("w1")
    rc, res, err = vss.backup(w)
    assert rc == 0, err
    md = res["components_document"]["components"][0]["backup_metadata"]
    assert md and md["writer"] == "vss_test_writer", res["components_document"]
    rc, err = restore(vss, res, "--additional")
    assert rc == 0, err
    ev = vss.events(w)
    assert ev.index("PreRestore") < ev.index("PostRestore"), ev
    got = json.load(open(w["dir"] + ".PostRestore.json"))
    c = got["components"][0]
    assert c["name"] == w["component"] and c["backup_metadata"] == md, got
    assert c["additional_restores"] is True and c["restore_options"]["from"].endswith(".json")
    assert vss.writer_state(w)["state"] == "stable"


def test_a_restore_the_writer_refuses_fails_with_its_reason_and_a_backup_still_works(vss):
    w = vss.writer("w1", "--fail", "PreRestore:non_retryable:1")
    rc, res, err = vss.backup(w)
    assert rc == 0, err
    rc, err = restore(vss, res)
    assert rc == 1 and "-9111 WriterErrorNonRetryable" in err and "PreRestore" in err, err
    st = vss.writer_state(w)
    assert st["state"] == "failed_at_PreRestore" and "PreRestore" in st["last_error"], st
    assert "PostRestore" not in vss.events(w)
    rc, err = restore(vss, res)
    assert rc == 0, err
    rc, res, err = vss.backup(w)
    assert rc == 0, err


def test_a_restore_of_a_component_being_backed_up_is_refused(vss):
    w = vss.writer("w1")
    rc, res, err = vss.backup(w)
    assert rc == 0, err
    a = vss.requester(w, pause_at="complete")
    paused(a, "complete")
    rc, err = restore(vss, res)
    assert rc == 1 and "-505 BackupInProgress" in err, err
    cont(a)
    a.communicate(timeout=60)
    assert a.returncode == 0


def test_after_the_coordinator_is_killed_writers_register_again_and_its_shadows_are_cleaned(vss):
    w = vss.writer("w1")
    keep = vss.requester(w, pause_at="complete", args=("--persistent",))
    paused(keep, "complete")
    cont(keep)
    keep.communicate(timeout=60)
    kept = vss.shadows()
    assert len(kept) == 1 and kept[0]["persistent"]
    p = vss.requester(w, pause_at="complete")
    snap = paused(p, "complete")
    left = snap["shadows"][0]["exposed"]
    assert os.path.isdir(left)
    vss.proc.send_signal(signal.SIGKILL)
    vss.proc.wait()
    cont(p)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "closed the session" in err, err  # died with the coordinator
    vss.start()
    wait_for(lambda: vss.writer_state(w) is not None, 15, "the writer to register again")
    assert [s["id"] for s in vss.shadows()] == [kept[0]["id"]]  # the persistent one stays
    assert not os.path.exists(left) and os.path.isdir(kept[0]["exposed"])
    wait_for(lambda: "lostabort" in open(w["out"].name).read() or "Abort" in vss.events(w), 10,
             "the writer to drop the dead session")
    rc, res, err = vss.backup(w)
    assert rc == 0, err
