"""Repository writers killed while others run on the same repository (docs/design.md, "Backup
repository", "Writers killed beside each other").

From a seed: a repository with a few databases and their chains (full, incremental,
differential, copy; small mail loads), each set's mail digest recorded; a stored copy of a block
damaged (so verify lists it in damaged.json and the next full stores it again). Then rounds: 2-3
of {a backup of some database (random type), verify (every set or one), expire (a policy that
drops something), a restore of a random set into the recovery database} started at the same
time, and one or more of them killed with SIGKILL after a random delay (sometimes all left to
finish); some rounds damage another copy first, so damaged.json is written again while the
others run.

After each round the repository's promises are checked:
- every process that was not killed exited 0 or non-zero with exactly one line on stderr;
- every set `ombra backups list` shows is restorable; two of them at random (every one at the
  end) restore into the recovery database to exactly the digest recorded for them, or exit
  non-zero with one line on stderr while verify names damage in their chain (a refusal of a
  whole chain is a finding; so is exit 0 with any other state);
- `ombra verify` passes, or names only the copies the test damaged;
- damaged.json, when there, is JSON of the list's format, and verify does not call it ignored;
- the next backup of every database whose backup was killed succeeds;
- nothing a killed process left makes later commands refuse: the next round's commands run, and
  at the end an expire alone succeeds and leaves no temporary file or pending set behind.
At the end every listed set is restored and every database backed up once more.

Two targeted tests keep the defects the rounds' design found: a restore that opened the
repository before a backup beside it published a set (its blocks were "not in any index"), and
an expire killed between two set removals (an incremental was left without its full).

Environment: OMBRA_REPO_KILL_SEED replays one run (printed on failure and in the figures);
OMBRA_REPO_KILL_SECONDS is the rounds' budget (default 8). pytest -s shows the one line of
figures, beginning "repo kill:"."""
import json
import os
import random
import re
import signal
import subprocess
import time

import pytest

from conftest import Paused, Result, one_line_refusal
from test_damaged_blocks import damage_copy
from test_restore import block_place

DBS = ("k1", "k2", "k3")
TYPES = ("full", "incremental", "differential", "copy")
CLI_SECONDS = 120  # one command of a round; longer is a hang
HINT_OF_DAMAGE = ("RepositoryCorrupt", "-9202", "damaged", "damage")


def seed_and_budget():
    seed = os.environ.get("OMBRA_REPO_KILL_SEED")
    seed = int(seed) if seed else random.SystemRandom().randrange(1 << 31)
    return seed, float(os.environ.get("OMBRA_REPO_KILL_SECONDS", "8"))


class Run:
    """The store, the repository, the random source, what is recorded and the figures."""

    def __init__(self, store, seed):
        self.st = store
        self.seed = seed
        self.rng = random.Random(seed)
        self.repo = store.tmp / "repo"
        self.digest = {}  # set id -> the mail digest it must restore to
        self.now = {}  # database -> its digest now (no mail arrives during a round)
        self.damaged = set()  # block ids whose copy the test damaged
        self.findings = []
        self.log = []  # what each round did, for failure messages
        self.loads = 0
        self.took = {}  # kind -> seconds its commands that were not killed took
        self.rec = store.tmp / "rec"
        self.f = dict(rounds=0, started=0, kills={}, finished=0, refusals=0, restores=0,
                      restores_exact=0, restores_refused=0, verifies=0, verify_damage=0,
                      damages=0, next_backups=0, expires_ok=0, packs_merged=0)

    # ---- helpers ------------------------------------------------------------------------------

    def ombra(self, *args, timeout=CLI_SECONDS):
        return self.st.ombra(*args, check=False, timeout=timeout)

    def find(self, what):
        self.findings.append(f"round {self.f['rounds']}: {what}")

    def judge(self, r, what):
        """r ended on its own: exit 0, or a refusal of one line."""
        if r.rc == 0:
            return True
        if one_line_refusal(r):
            self.f["refusals"] += 1
            return False
        self.find(f"{what}: exit {r.rc}, not one line on stderr:\n{r.describe()}")
        return False

    def load(self, db):
        self.loads += 1
        self.ombra("mail", "load", db, "--mailboxes", "3", "--messages", str(self.rng.randint(5, 40)),
                   "--size", "3000", "--seed", str(self.seed % 100000 + self.loads))
        self.now[db] = self.st.digest(db)

    def sets(self):
        r = self.ombra("backups", "list", "--repo", self.repo, "--json")
        assert r.rc == 0, r.describe()
        return json.loads(r.out)["sets"]

    def backup(self, db, type_, *more):
        r = self.ombra("backup", "--repo", self.repo, "--type", type_, "--json", *more, db)
        if r.rc == 0:
            for s in json.loads(r.out)["sets"]:
                self.digest[s["id"]] = self.now[db]
        return r

    def adopt(self, before):
        """Sets that appeared in a round (a backup killed after it published): the digest of
        their database at the round's start."""
        for s in self.sets():
            if s["id"] not in self.digest:
                name = s["database"]["name"] if isinstance(s.get("database"), dict) else s.get("database")
                self.digest[s["id"]] = before.get(name)

    # ---- the repository at the start ------------------------------------------------------------

    def build(self):
        st = self.st
        st.ombra("repo", "init", self.repo, "--pack-size", "1M")
        st.ombra("db", "new-recovery", "rec", "--edb", self.rec / "rec.edb", "--logs", self.rec / "logs")
        for db in DBS:
            st.ombra("db", "new", db)
            self.ombra("mail", "load", db, "--mailboxes", "3", "--messages", "120", "--size", "4000",
                       "--seed", str(self.seed % 1000 + len(self.digest)))
            self.now[db] = st.digest(db)
            for type_ in self.rng.choice([("full", "incremental", "incremental"),
                                          ("full", "differential", "copy"),
                                          ("full", "copy", "incremental"),
                                          ("full", "differential", "differential")]):
                r = self.backup(db, type_)
                assert r.rc == 0, r.describe()
                self.load(db)
        self.damage()

    def damage(self):
        """The stored copy of one block of a random set's files turned over (the copy the index
        files name first)."""
        ids = [i for i in self.digest if (self.repo / "sets" / f"{i}.json").exists()]
        if not ids:
            return
        doc = json.loads((self.repo / "sets" / f"{self.rng.choice(ids)}.json").read_bytes())
        # a synthetic full's .edb names regions (slices of stored blocks), not stored blocks
        blocks = [f["blocks"][i:i + 64] for f in doc["files"] if "regions_sha256" not in f
                  for i in range(0, len(f["blocks"]), 64)]
        block = self.rng.choice(blocks)
        damage_copy(block_place(self.repo, block))
        self.damaged.add(block)
        self.f["damages"] += 1

    # ---- a round --------------------------------------------------------------------------------

    def job(self, kind, sets):
        rng = self.rng
        if kind == "backup":
            db, type_ = rng.choice(DBS), rng.choice(TYPES)
            more = ["--read-all"] if type_ == "full" and rng.random() < 0.3 else []
            return ["backup", "--repo", self.repo, "--type", type_, "--json", *more, db]
        if kind == "verify":
            one = [rng.choice(sets)["id"][:12]] if sets and rng.random() < 0.4 else []
            return ["verify", "--repo", self.repo, "--json", *one]
        if kind == "expire":
            rule = rng.choice([["--keep-last", str(rng.randint(2, 4))], ["--keep-full", "1"],
                               ["--keep-full", "2"]])
            return ["expire", "--repo", self.repo, "--json", *rule]
        s = rng.choice(sets)
        name = s["database"]["name"] if isinstance(s.get("database"), dict) else s.get("database")
        return ["restore", name, "--repo", self.repo, "--recovery", "rec", "--set", s["id"][:12]]

    def round(self):
        rng, st = self.rng, self.st
        self.f["rounds"] += 1
        for db in rng.sample(DBS, rng.randint(0, 2)):
            self.load(db)
        if rng.random() < 0.2 and len(self.damaged) < 6:
            self.damage()
        before = dict(self.now)
        sets = self.sets()
        kinds = rng.sample(["backup", "backup", "verify", "expire", "restore"], rng.randint(2, 3))
        if "expire" in kinds and rng.random() < 0.5:
            kinds.remove("expire")  # first: it has the repository and the others wait for it
            kinds.insert(0, "expire")
        if "restore" in kinds:
            self.ombra("db", "dismount", "rec")
            st.ombra("db", "set", "rec", "--allow-restore", "on")
        jobs = []
        for kind in kinds:
            argv = [str(st.cli)] + [str(a) for a in self.job(kind, sets)]
            time.sleep(rng.uniform(0, 0.15) if jobs else 0)
            p = subprocess.Popen(argv, env=st.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            # killed somewhere in the time such a command took alone or beside others so far
            kill = rng.random() < 0.65
            took = sorted(self.took.get(kind, [0.5]))
            jobs.append((kind, argv, p, time.monotonic() + rng.uniform(0.005, 1.1) *
                         took[len(took) // 2] if kill else None, time.monotonic()))
            self.f["started"] += 1
        self.log.append(f"round {self.f['rounds']}: " + "; ".join(
            f"{' '.join(a[1:3])}..{a[-1][-12:]}{' kill' if k else ''}" for _, a, _, k, _ in jobs))
        killed_backups = set()
        for kind, argv, p, at, t0 in sorted(jobs, key=lambda j: j[3] or 1e18):
            if at is not None:
                time.sleep(max(0.0, at - time.monotonic()))
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    self.f["kills"][kind] = self.f["kills"].get(kind, 0) + 1
                    if kind == "backup":
                        killed_backups.add(argv[-1])
            try:
                out, err = p.communicate(timeout=CLI_SECONDS)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                self.find(f"{' '.join(argv[1:])}: no end within {CLI_SECONDS} s")
                continue
            r = Result(p.returncode, out, err, argv)
            if r.rc == -signal.SIGKILL:
                continue
            if at is None:
                self.took.setdefault(kind, []).append(time.monotonic() - t0)
            self.f["finished"] += 1
            ok = self.judge(r, kind)
            if kind == "backup" and ok:
                for s in json.loads(r.out)["sets"]:
                    self.digest[s["id"]] = before[argv[-1]]
            if kind == "expire" and ok:
                self.f["expires_ok"] += 1
                self.f["packs_merged"] += json.loads(r.out)["packs_merged"]
            if kind == "verify" and r.rc in (0, 1):
                self.verify_named(r)
        self.adopt(before)
        self.check(killed_backups)

    # ---- the promises ---------------------------------------------------------------------------

    def verify(self):
        """verify --json of every set: the ids of the sets it named damage in."""
        self.f["verifies"] += 1
        return self.verify_named(self.ombra("verify", "--repo", self.repo, "--json"))

    def verify_named(self, r):
        """The ids of the sets verify's --json output r named damage in; anything else it names
        is a finding."""
        try:
            doc = json.loads(r.out)
        except ValueError:
            self.find(f"verify printed no JSON:\n{r.describe()}")
            return set()
        if "error" in doc and "damage" not in doc:
            return set()  # a refusal (the set asked for was expired meanwhile): judged already
        if r.rc == 0:
            return set()
        self.f["verify_damage"] += 1
        named = set()
        for d in doc.get("damage", []):
            # a synthetic full's region names the stored block it slices in "what"
            ids = {d.get("block")} | set(re.findall(r"\b[0-9a-f]{64}\b", d.get("what", "")))
            if ids & self.damaged:
                named.add(d.get("set_id"))
            else:
                self.find(f"verify names damage the test did not make: {json.dumps(d)[:400]}")
        if r.rc != 1 or not named:
            self.find(f"verify exit {r.rc} without naming a damaged copy:\n{r.describe()}")
        return named

    def check_list(self):
        p = self.repo / "damaged.json"
        if not p.exists():
            return
        try:
            doc = json.loads(p.read_text())
            assert doc["format"] == "ombra-damaged-blocks" and isinstance(doc["blocks"], list)
        except (ValueError, KeyError, AssertionError) as e:
            self.find(f"damaged.json is not a list of damaged blocks ({e!r}): {p.read_text()[:300]!r}")

    def restore(self, s, damaged_sets):
        """Restores set s into the recovery database and judges it."""
        st = self.st
        self.ombra("db", "dismount", "rec")
        st.ombra("db", "set", "rec", "--allow-restore", "on")
        self.f["restores"] += 1
        name = s["database"]["name"] if isinstance(s.get("database"), dict) else s.get("database")
        r = self.ombra("restore", name, "--repo", self.repo, "--recovery", "rec", "--mount",
                       "--set", s["id"][:12])
        want = self.digest.get(s["id"])
        label = f"restore --set {s['id'][:12]} ({s.get('type')} of {name})"
        if r.rc == 0:
            got = st.digest("rec")
            if got == want:
                self.f["restores_exact"] += 1
            else:
                self.find(f"{label}: exit 0 with digest {got}, recorded {want}")
            return
        self.f["restores_refused"] += 1
        if not one_line_refusal(r):
            self.find(f"{label}: exit {r.rc}, not one line:\n{r.describe()}")
        elif s.get("restorable") and not damaged_sets & set(s.get("chain") or [s["id"]]):
            self.find(f"{label}: a whole chain refused:\n{r.describe()}")

    def next_backup(self, db):
        self.f["next_backups"] += 1
        r = self.backup(db, "full")
        if r.rc != 0:
            self.find(f"the next backup of {db} failed:\n{r.describe()}")

    def check(self, killed_backups):
        self.check_list()
        damaged_sets = self.verify()
        sets = self.sets()
        for s in sets:
            if not s.get("restorable"):
                self.find(f"set {s['id'][:12]} ({s.get('type')}) listed as not restorable: "
                          f"{s.get('why')}")
        restorable = [s for s in sets if s.get("restorable")]
        for s in self.rng.sample(restorable, min(2, len(restorable))):
            self.restore(s, damaged_sets)
        for db in sorted(killed_backups):
            self.next_backup(db)

    def finish(self):
        """Alone at the end: expire succeeds and leaves nothing behind; every set restores; every
        database backs up."""
        r = self.ombra("expire", "--repo", self.repo, "--keep-full", "2", "--json")
        if r.rc != 0:
            self.find(f"expire alone failed (a lock or a leftover of a killed process?):\n{r.describe()}")
        left = sorted(str(p.relative_to(self.repo)) for p in self.repo.rglob("*")
                      if p.name.endswith((".tmp", ".pending")))
        if left:
            self.find(f"expire alone left {left}")
        self.check_list()
        damaged_sets = self.verify()
        for s in self.sets():
            if s.get("restorable"):
                self.restore(s, damaged_sets)
        for db in DBS:
            self.next_backup(db)

    def report(self):
        f = self.f
        kills = " ".join(f"{k} {v}" for k, v in sorted(f["kills"].items())) or "none"
        line = (f"repo kill: seed {self.seed} rounds {f['rounds']} commands {f['started']} "
                f"(killed: {kills}; finished {f['finished']}, refused {f['refusals']}, expires "
                f"done {f['expires_ok']}, small packs merged {f['packs_merged']}) restores {f['restores']} (exact {f['restores_exact']}, "
                f"refused {f['restores_refused']}) verifies {f['verifies']} (naming damage "
                f"{f['verify_damage']}) copies damaged {f['damages']} next backups "
                f"{f['next_backups']} findings {len(self.findings)}")
        print("\n" + line)
        return line


# Rounds of kills: make test's sanitizer pass leaves them out (make test-long runs them there).
@pytest.mark.slow_under_sanitizers
def test_writers_killed_beside_each_other_keep_the_repositorys_promises(store, vssd):
    seed, seconds = seed_and_budget()
    run = Run(store, seed)
    # the rounds keep few sets: small packs are merged at almost every expire, killed or not
    store.env["OMBRA_EXPIRE_MERGE_MIN"] = "2"
    try:
        run.build()
        end = time.monotonic() + seconds
        while time.monotonic() < end and not run.findings:
            run.round()
        if not run.findings:
            run.finish()
    finally:
        line = run.report()
    assert not run.findings, (f"OMBRA_REPO_KILL_SEED={seed} ({line})\n" + "\n".join(run.log[-8:]) +
                              "\n\n" + "\n\n".join(run.findings))


def test_a_set_published_while_a_restore_opens_the_repository_restores(store, vssd):
    """A restore opened the repository (its index loaded) when a backup published a new full
    with new blocks; the restore reads the sets after that, so its newest chain is the new set:
    it must read the blocks that set names (the index files written since), not stop at "block
    ... is not in any index". The same order holds verify's. (Found reading the code for the
    rounds above, whose commands rarely meet in that window.)"""
    run = Run(store, 1)
    store.ombra("repo", "init", run.repo)
    store.ombra("db", "new-recovery", "rec", "--edb", run.rec / "rec.edb", "--logs", run.rec / "logs")
    store.ombra("db", "new", "k1")
    run.now["k1"] = store.digest("k1")
    assert run.backup("k1", "full").rc == 0
    run.load("k1")
    store.ombra("db", "dismount", "rec")
    store.ombra("db", "set", "rec", "--allow-restore", "on")
    p = Paused(store, ["restore", "k1", "--repo", run.repo, "--recovery", "rec", "--mount"],
               "OMBRA_RESTORE_PAUSE", "opened")
    assert p.reached, p.first
    b = run.backup("k1", "full", "--read-all")
    assert b.rc == 0, b.describe()
    r = p.resume()
    assert r.rc == 0, r.describe()
    assert store.digest("rec") == run.now["k1"]
    v = run.ombra("verify", "--repo", run.repo)
    assert v.rc == 0, v.describe()


def test_an_expire_killed_between_two_set_files_leaves_every_listed_set_restorable(store, vssd):
    """expire removes the sets it drops newest first: killed after the first one (found by the
    rounds above, seed 22: a full removed before its incremental left the incremental listed
    "not restorable: its parent ... is not in the repository"), what stays listed is whole
    chains, and the next expire finishes the work."""
    run = Run(store, 2)
    store.ombra("repo", "init", run.repo)
    store.ombra("db", "new", "k1")
    for type_ in ("full", "incremental", "incremental", "full"):
        run.load("k1")
        assert run.backup("k1", type_).rc == 0
    p = Paused(store, ["expire", "--repo", run.repo, "--keep-full", "1"], "OMBRA_EXPIRE_PAUSE",
               "deleting")
    assert p.reached, p.first
    assert p.kill9().rc == -signal.SIGKILL
    sets = run.sets()
    assert len(sets) == 3 and all(s["restorable"] for s in sets), sets
    rep = json.loads(run.ombra("expire", "--repo", run.repo, "--keep-full", "1", "--json").out)
    assert len(rep["sets_deleted"]) == 2, rep
    [s] = run.sets()
    assert s["type"] == "full" and s["restorable"], s
    r = run.ombra("verify", "--repo", run.repo)
    assert r.rc == 0, r.describe()
