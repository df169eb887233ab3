"""The randomized restore campaign of issue 14: random histories of backups, then every point
they recorded restored, then the same repositories damaged one byte or one file at a time.

The rule checked for every restore: it exits 0 with exactly the mail digest the backups recorded
for that point, or it exits non-zero with exactly one line on stderr. Never exit 0 with another
state (a "silent wrong restore": the test fails on any). When a damaged repository's restore did
not give what the pristine repository gave, `ombra verify` must have reported damage (else it is
a "verify miss"). A restore refused because an earlier one left files in the target (every later
restore into it would be refused too) is counted and fails the test as well; the files are moved
away so the campaign goes on.

A history: `ombra db new`, mail between steps (`mail load`, `mail deliver`), backups of random
types (full, copy, incremental, differential) into one repository or two (plain or encrypted,
1 MiB or 64 KiB blocks), some killed at a random stage (OMBRA_BACKUP_PAUSE, then kill -9), some
paused and continued, some with the store killed and restarted while the backup was paused (the
backup must then fail). Only a backup that exits 0 is recorded: its digest (taken just before
it: nothing is delivered between that and the freeze), its set, log range and time. A backup
that fails records nothing, except that one whose header slots changed (it reached
BackupComplete before it was killed) may or may not be a set a restore uses: the model of the
default restore allows both.

The points restored into the recovery database (nothing rolls forward into it from the source's
log folder): the default (the newest state any whole chain of the repository reaches: a full
and the incrementals that continue it, or a full and one differential, all in that repository;
a copy is a point of its own, allowed as the default only when it is newer than every chain; a
set whose chain is not whole that is newer than that means the restore must refuse), --set ID
of every set, --until-gen N of every generation a set ends at (the state when that backup
froze), --until-time T of every time a set's listing prints (when no mail was being delivered
around T and the repository holds the state at T).

Environment: OMBRA_CAMPAIGN_SEED replays one campaign (printed on failure and in the figures);
OMBRA_CAMPAIGN_SECONDS is the budget (default 90: two thirds histories and their restores, one
third damage); OMBRA_CAMPAIGN_REPORT names a JSON file for the figures. pytest -s shows the one
line of figures, beginning "campaign:"."""
import itertools
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import time

import pytest

from conftest import Paused, Result, one_line_refusal

STAGES = ["prepared", "snapshot", "copying", "copied", "checked", "committed", "completed"]
AFTER_FREEZE = STAGES[STAGES.index("snapshot"):]
PASS = {"OMBRA_REPO_PASSPHRASE": "campaign passphrase"}
RESTORE_SECONDS = 90  # one restore; longer is a hang
MAX_MAYBES = 6  # sets that may or may not count, per repository: 2**6 models of the default
POOL = 24  # repositories kept for the damage campaign (a long run deletes older ones)


class Repo:
    def __init__(self, path, encrypted):
        self.path = pathlib.Path(path)
        self.encrypted = encrypted
        self.env = PASS if encrypted else None
        self.name = self.path.name


class Set:
    """A backup the test counts on (maybe: it was killed after BackupComplete, so restore may use
    it or not); parent: the set it continues, as the database's header says backups chain."""

    def __init__(self, seq, type_, repo, digest, parent, maybe=False, sid=None, log_range=None):
        self.seq, self.type, self.repo, self.digest = seq, type_, repo, digest
        self.parent, self.maybe, self.id, self.log_range = parent, maybe, sid, log_range

    def __repr__(self):
        what = f"{self.id[:12]} gens {self.log_range[0]}-{self.log_range[1]}" if self.id else "(killed)"
        return f"#{self.seq} {self.type} into {self.repo.name} {what}{' maybe' if self.maybe else ''}"


class Campaign:
    """The store, the random source, the clock, and every figure and finding of one campaign."""

    def __init__(self, store, seed, seconds):
        self.store = store
        self.seed = seed
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self.history_end = self.t0 + seconds * 2 / 3
        self.damage_end = self.t0 + seconds
        self.figures = dict(seed=seed, histories=0, backups=0, backups_ok=0, backups_refused=0,
                            backups_killed=0, store_restarts=0, restores=0, restores_exact=0,
                            restores_refused=0, damages=0, damages_encrypted=0, damage_restores=0,
                            silent_wrong_restores=0, verify_misses=0, unclear_failures=0, hangs=0,
                            slot_exhaustions=0, targets_left_unusable=0, restart_survivors=0)
        self.silent = []  # what went wrong, for the failure message
        self.unclear = []
        self.misses = []
        self.survivors = []
        self.stuck = []  # restores refused for what an earlier restore left in the target
        self.previous = None  # the last restore: label, exit, stderr
        self.pool = []  # (history, repo, points): what the damage campaign works on
        self.rec = store.tmp / "rec"
        store.ombra("db", "new-recovery", "rec", "--edb", self.rec / "rec.edb", "--logs", self.rec / "logs")

    # ---- the CLI, judged ----------------------------------------------------------------------

    def restart_store(self, kill=False):
        if kill:
            self.store.kill9()
        else:
            assert self.store.stop() == 0, self.store.stderr()
        self.store.start()
        assert self.store.writer_registered(), self.store.stderr()
        self.figures["store_restarts"] += 1

    def restore(self, repo, db, args, expect, label):
        """Restores a point into the recovery database and judges it: returns the digest it gave
        ("" for a refusal, None when the restore broke the rule)."""
        st = self.store
        for attempt in (1, 2):
            st.ombra("db", "dismount", "rec", check=False)
            st.ombra("db", "set", "rec", "--allow-restore", "on")
            self.figures["restores"] += 1
            try:
                r = st.ombra("restore", db, "--repo", repo.path, "--recovery", "rec", "--mount",
                             *args, check=False, env=repo.env, timeout=RESTORE_SECONDS)
            except subprocess.TimeoutExpired:
                self.figures["hangs"] += 1
                self.unclear.append(f"{label}: no end within {RESTORE_SECONDS} s")
                self.restart_store(kill=True)
                return None
            if r.rc != 0 and "-1011" in r.err and attempt == 1:
                # point 10 of the issue: failed restores kept their slots; counted, then cleared
                self.figures["slot_exhaustions"] += 1
                self.restart_store()
                continue
            left = self.rec / "logs" / "_restoredLogs"
            if r.rc != 0 and "-1814" in r.err and "_restoredLogs" in r.err and attempt == 1:
                # an earlier restore left files in the target: every later one would be refused;
                # counted, then moved away as the HINT says, so the campaign goes on
                self.figures["targets_left_unusable"] += 1
                p = self.previous or ("(none)", 0, "")
                self.stuck.append(f"{label}: refused, {sorted(x.name for x in left.iterdir())} left in "
                                  f"{left} by the restore before it: {p[0]} (exit {p[1]}: {p[2].strip()[:300]})")
                shutil.move(str(left), str(self.rec / f"moved-{self.figures['targets_left_unusable']}"))
                continue
            break
        self.previous = (label, r.rc, r.err)
        if r.rc == 0:
            d = st.ombra("mail", "digest", "rec", check=False)
            m = re.search(r"\b[0-9a-f]{32}\b", d.out)
            got = m.group(0) if d.rc == 0 and m else f"(no digest: {d.err.strip()})"
            if got in expect:
                self.figures["restores_exact"] += 1
                return got
            self.figures["silent_wrong_restores"] += 1
            said = "\n    ".join(r.out.strip().splitlines()[:8])
            self.silent.append(f"{label}: exit 0 with {got}, want {sorted(expect) or 'a refusal'}"
                               f"\n    {said}")
            return None
        if one_line_refusal(r):
            self.figures["restores_refused"] += 1
            return ""
        self.figures["unclear_failures"] += 1
        self.unclear.append(f"{label}: exit {r.rc}, stderr {r.err.strip()[:600]!r}")
        return None

    def report(self):
        f = self.figures
        line = ("campaign: seed {seed} histories {histories} backups {backups} (ok {backups_ok}, "
                "refused {backups_refused}, killed {backups_killed}, store restarts "
                "{store_restarts}) restores {restores} (exact {restores_exact}, refused "
                "{restores_refused}) damages {damages} (encrypted {damages_encrypted}, restores "
                "{damage_restores}) "
                "silent wrong restores {silent_wrong_restores} verify misses {verify_misses} "
                "unclear failures {unclear_failures} hangs {hangs} slot exhaustions "
                "{slot_exhaustions} targets left unusable {targets_left_unusable} backups surviving a "
                "store restart {restart_survivors}"
                ).format(**f)
        print("\n" + line)
        if os.environ.get("OMBRA_CAMPAIGN_REPORT"):
            with open(os.environ["OMBRA_CAMPAIGN_REPORT"], "w") as out:
                json.dump(dict(f, seconds=round(time.monotonic() - self.t0, 1),
                               silent=self.silent, unclear=self.unclear, verify_misses_seen=self.misses,
                               targets_left_unusable_seen=self.stuck,
                               restart_survivors_seen=self.survivors), out, indent=2)
        return line


class History:
    """One database and its one or two repositories, built by random steps."""

    def __init__(self, camp, n):
        self.c = camp
        self.st = camp.store
        rng = camp.rng
        self.db = f"h{n}"
        self.log = []  # what happened, for failure messages
        self.sets = []  # Set, recorded or maybe
        self.timeline = []  # (start, end, digest after): every change of the mail
        self.seq = 0
        self.last_full = self.last_full_or_inc = None
        self.seed = 1000 * n
        self.repos = [self.new_repo("A", rng)]
        if rng.random() < 0.4:
            self.repos.append(self.new_repo("B", rng))
        t = time.time()
        self.st.ombra("db", "new", self.db)
        self.edb = self.st.db_show(self.db)["edb"]
        self.timeline.append((t, time.time(), self.st.digest(self.db)))

    def new_repo(self, name, rng):
        path = self.st.tmp / "repos" / f"{self.db}-{name}"
        encrypted = rng.random() < 0.3
        opts = ["--encrypt"] if encrypted else []
        if rng.random() < 0.5:
            opts += ["--block-size", "64K"]  # the database file has more than 4 blocks: copying pauses
        self.st.ombra("repo", "init", path, *opts, env=PASS if encrypted else None)
        self.log.append(f"repository {name}: {' '.join(opts) or 'plain'}")
        return Repo(path, encrypted)

    # ---- steps ----------------------------------------------------------------------------------

    def mail(self, rng):
        self.seed += 1
        t = time.time()
        if rng.random() < 0.8:
            n, size = rng.randint(20, 400), rng.choice([300, 2000, 6000, 20000])
            self.st.ombra("mail", "load", self.db, "--mailboxes", str(rng.randint(1, 5)), "--messages",
                          str(n), "--size", str(size), "--seed", str(self.seed))
            what = f"mail load {n} x {size} B"
        else:
            body = rng.randbytes(rng.randint(1, 50000))
            self.st.ombra("mail", "deliver", self.db, f"user{rng.randint(0, 3):05d}", input=body)
            what = f"mail deliver {len(body)} B"
        self.timeline.append((t, time.time(), self.st.digest(self.db)))
        self.log.append(what)

    def header(self):
        r = self.st.ombra("dbutil", "header", self.edb, "--json", check=False)
        return json.loads(r.out).get("backups") if r.rc == 0 else r.err

    def backup(self, rng):
        c = self.c
        type_ = rng.choices(["full", "copy", "incremental", "differential"], [3, 1.5, 3.5, 2])[0]
        if type_ in ("incremental", "differential") and self.last_full is None and rng.random() < 0.8:
            type_ = "full"  # mostly after a full; sometimes without one, to be refused
        repo = self.repos[-1] if len(self.repos) > 1 and rng.random() < 0.35 else self.repos[0]
        mode = rng.choices(["plain", "kill", "continue", "restart"], [70, 14, 7, 9])[0]
        stage = rng.choice(STAGES if mode != "restart" else STAGES[:-1])
        args = ["backup", "--repo", repo.path, "--type", type_, "--json", self.db]
        digest = self.st.digest(self.db)  # the state at the freeze: nothing is delivered between
        before = self.header()
        c.figures["backups"] += 1
        label = f"{type_} into {repo.name}"
        p, r = self.start_backup(args, repo.env, None if mode == "plain" else stage)
        if p is not None and r is None:
            if mode == "kill":
                if stage in AFTER_FREEZE and rng.random() < 0.5:
                    self.mail(rng)
                r = p.kill9()
                c.figures["backups_killed"] += 1
                label += f" killed at {stage}"
            elif mode == "continue":
                if stage in AFTER_FREEZE and rng.random() < 0.5:
                    self.mail(rng)
                r = self.resume(p)
                label += f" paused at {stage}, continued"
            else:
                if stage in AFTER_FREEZE and rng.random() < 0.6:
                    self.mail(rng)
                d_before = self.st.digest(self.db)
                c.restart_store(kill=True)
                d_after = self.st.digest(self.db)
                assert d_after == d_before, f"mail lost in a store restart (seed {c.seed})"
                r = self.resume(p)
                label += f" paused at {stage}, store killed and restarted, continued"
                if r is not None and r.rc == 0:
                    c.figures["restart_survivors"] += 1
                    c.survivors.append(f"{self.db} {label}: exit 0")
        elif p is not None:
            label += f" (ended before {stage})"
        if r is None:
            self.log.append(f"{label}: did not end")
            return
        r = without_pauses(r)
        if r.rc == 0:
            res = json.loads(r.out)
            s = res["sets"][0]
            parent = self.last_full if type_ == "differential" else \
                self.last_full_or_inc if type_ == "incremental" else None
            one = Set(self.next_seq(), type_, repo, digest, parent, sid=s["id"], log_range=s["log_range"])
            self.sets.append(one)
            self.chain_moves(one)
            c.figures["backups_ok"] += 1
            self.log.append(f"{label}: {one}")
            return
        if r.rc > 0 and "killed" not in label and "restarted" not in label:
            if one_line_refusal(r):
                c.figures["backups_refused"] += 1
            else:
                c.figures["unclear_failures"] += 1
                c.unclear.append(f"{self.db} {label}: exit {r.rc}, stderr {r.err.strip()[:600]!r}")
        after = self.header()
        if after != before:
            # it reached BackupComplete: its set may count or not (the header says it happened)
            parent = self.last_full if type_ == "differential" else \
                self.last_full_or_inc if type_ == "incremental" else None
            one = Set(self.next_seq(), type_, repo, digest, parent, maybe=True)
            self.sets.append(one)
            self.chain_moves(one)
            label += " (the header records it)"
        self.log.append(f"{label}: exit {r.rc}: {r.err.strip().splitlines()[-1] if r.err.strip() else ''}")

    def next_seq(self):
        self.seq += 1
        return self.seq

    def chain_moves(self, s):
        if s.type == "full":
            self.last_full = self.last_full_or_inc = s
        elif s.type == "incremental":
            self.last_full_or_inc = s

    def start_backup(self, args, env, stage, seconds=30):
        """(Paused, None) when the backup stopped at stage, else (None or Paused, its Result); a
        backup refused because a killed one's session is still being ended is started again."""
        end = time.monotonic() + seconds
        while True:
            p = None
            try:
                if stage is None:
                    r = self.st.ombra(*args, check=False, env=env)
                else:
                    p = Paused(self.st, args, "OMBRA_BACKUP_PAUSE", stage, env=env)
                    r = None if p.reached else p.finish(120)
            except subprocess.TimeoutExpired:
                self.c.figures["hangs"] += 1
                self.c.unclear.append(f"{self.db} backup {' '.join(map(str, args[1:]))}: no end within 120 s")
                return None, None
            busy = r is not None and r.rc != 0 and ("-505" in r.err or "-9120" in r.err)
            if not busy or time.monotonic() > end:
                return p, r
            time.sleep(0.2)

    def resume(self, p):
        try:
            return p.resume(timeout=120)
        except subprocess.TimeoutExpired:
            self.c.figures["hangs"] += 1
            self.c.unclear.append(f"{self.db} a continued backup did not end within 120 s")
            return None

    def run(self, rng):
        for _ in range(rng.randint(3, 9)):
            if rng.random() < 0.9:
                self.mail(rng)
            self.backup(rng)
        self.mail(rng)  # later logs in the live folder: nothing rolls forward into the recovery database

    # ---- the points to restore --------------------------------------------------------------

    def state_at_time(self, t, margin=0.005):
        """The digest at wall time t: None when mail was being delivered around it."""
        d = None
        for start, end, digest in self.timeline:
            if start - margin <= t <= end + margin:
                return None
            if end < t:
                d = digest
        return d

    def default_expect(self, repo):
        """The digests a default restore of repo may give (empty: it must refuse), or None when
        too many sets may or may not count to say."""
        sets = [s for s in self.sets if s.repo is repo]
        maybes = [s for s in sets if s.maybe]
        if len(maybes) > MAX_MAYBES:
            return None
        ok = set()
        for mask in itertools.product([False, True], repeat=len(maybes)):
            present = {id(s) for s in sets if not s.maybe} | {id(m) for m, on in zip(maybes, mask) if on}

            def whole(s):
                while s is not None:
                    if id(s) not in present or s.repo is not repo:
                        return False
                    s = s.parent
                return True

            here = [s for s in sets if id(s) in present]
            chains = [s for s in here if s.type != "copy" and whole(s)]
            broken = [s for s in here if s.type != "copy" and not whole(s)]
            copies = [s for s in here if s.type == "copy"]
            for best in (max(chains, key=lambda s: s.seq, default=None),
                         max(copies, key=lambda s: s.seq, default=None)):
                if best is None or any(b.seq > best.seq for b in broken):
                    continue
                if best.type == "copy" and chains and max(s.seq for s in chains) > best.seq:
                    continue
                ok.add(best.digest)
        return ok

    def points(self, repo):
        """(label, args, digests a restore may give) of every point of repo."""
        recorded = [s for s in self.sets if s.repo is repo and not s.maybe]
        out = []
        d = self.default_expect(repo)
        if d is not None:
            out.append(("default", [], d))
        if recorded:
            listed = {x.get("id"): x for x in self.st.json("backups", "list", "--repo", repo.path)["sets"]} \
                if not repo.encrypted else \
                {x.get("id"): x for x in json.loads(self.st.ombra("backups", "list", "--repo", repo.path,
                                                                  "--json", env=repo.env).out)["sets"]}
        by_gen = {}
        for s in self.sets:  # any repository: one log stream
            if s.log_range:
                by_gen.setdefault(s.log_range[1], set()).add(s.digest)
        for s in recorded:
            rf = ["--no-roll-forward"] if self.c.rng.random() < 0.3 else []
            out.append((f"--set {s.id[:12]} ({s.type})", ["--set", s.id[:16]] + rf, {s.digest}))
            gen = s.log_range[1]
            if len(by_gen[gen]) == 1:
                out.append((f"--until-gen {gen}", ["--until-gen", str(gen)] + rf, {s.digest}))
            t = (listed.get(s.id) or {}).get("time")
            when = parse_time(t) if t else None
            if when is not None and self.state_at_time(when) == s.digest:
                out.append((f"--until-time {t}", ["--until-time", t] + rf, {s.digest}))
        seen, uniq = set(), []
        for p in out:
            if p[0] not in seen:
                seen.add(p[0])
                uniq.append(p)
        return uniq


def without_pauses(r):
    """r without the "paused <stage>" lines of the test hook (not the product's messages)."""
    err = "".join(l for l in r.err.splitlines(keepends=True) if not l.startswith("paused "))
    return Result(r.rc, r.out, err, r.argv)


def parse_time(t):
    """Seconds since the epoch of a set's printed time (ISO 8601, UTC unless it says)."""
    import datetime
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)?", t)
    if not m:
        return None
    zone = m.group(3) or "Z"
    zone = "+00:00" if zone == "Z" else zone if ":" in zone else zone[:3] + ":" + zone[3:]
    return datetime.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{zone}").timestamp()


# ---- damage ----------------------------------------------------------------------------------

def repo_files(root):
    return sorted(p for p in pathlib.Path(root).rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] in ("config.json", "index", "packs", "sets"))


def damage(rng, root):
    """One flipped byte or one truncated file, at random across the repository: what it did."""
    files = repo_files(root)
    f = rng.choice(files)
    size = f.stat().st_size
    rel = f.relative_to(root)
    if size and rng.random() < 0.75:
        at = rng.randrange(size)
        with open(f, "r+b") as h:
            h.seek(at)
            b = h.read(1)[0]
            h.seek(at)
            h.write(bytes([b ^ rng.randint(1, 255)]))
        return f"byte {at} of {rel} flipped"
    n = rng.randrange(size) if size else 0
    os.truncate(f, n)
    return f"{rel} truncated to {n} of {size} bytes"


def damage_trial(camp, history, repo, points, n):
    rng = camp.rng
    st = camp.store
    work = st.tmp / "damaged" / f"{n}"
    shutil.copytree(repo.path, work)
    try:
        what = damage(rng, work)
        camp.figures["damages"] += 1
        camp.figures["damages_encrypted"] += repo.encrypted
        damaged = Repo(work, repo.encrypted)
        damaged.name = f"{repo.name} ({what})"
        v = st.ombra("verify", "--repo", work, check=False, env=repo.env)
        if v.rc < 0 or v.rc == 0 and v.err.strip():
            camp.figures["unclear_failures"] += 1
            camp.unclear.append(f"verify of {damaged.name}: exit {v.rc}, stderr {v.err.strip()[:300]!r}")
        default = [p for p in points if p[0] == "default"]
        others = [p for p in points if p[0] != "default"]
        chosen = default + ([rng.choice(others)] if others else [])
        for label, args, expect, pristine in chosen:
            camp.figures["damage_restores"] += 1
            got = camp.restore(damaged, history.db, args, expect,
                               f"{history.db} {damaged.name} {label} (seed {camp.seed})")
            if got is None:
                continue
            if pristine and got != pristine and v.rc == 0:
                camp.figures["verify_misses"] += 1
                camp.misses.append(f"{history.db} {damaged.name} {label}: verify says no damage, "
                                   f"the restore {'refused' if got == '' else 'gave ' + got}, the pristine "
                                   f"repository gave {pristine}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- the test ----------------------------------------------------------------------------------

def test_random_histories_restore_exactly_or_refuse_in_one_line(store, vssd):
    seed = int(os.environ.get("OMBRA_CAMPAIGN_SEED") or random.SystemRandom().randrange(1 << 32))
    seconds = float(os.environ.get("OMBRA_CAMPAIGN_SECONDS") or 90)
    print(f"\ncampaign seed {seed} (OMBRA_CAMPAIGN_SEED={seed} replays it), {seconds:.0f} s")
    camp = Campaign(store, seed, seconds)
    histories = []
    n = 0
    while time.monotonic() < camp.history_end or n == 0:
        h = History(camp, n)
        n += 1
        h.run(camp.rng)
        camp.figures["histories"] += 1
        for repo in h.repos:
            points = []
            for label, args, expect in h.points(repo):
                got = camp.restore(repo, h.db, args, expect, f"{h.db} {repo.name} {label} (seed {seed})")
                points.append((label, args, expect, got))
            camp.pool.append((h, repo, points))
        while len(camp.pool) > POOL:
            gone = camp.pool.pop(camp.rng.randrange(len(camp.pool)))
            shutil.rmtree(gone[1].path, ignore_errors=True)
        histories.append(h)
        store.ombra("db", "dismount", h.db)  # the histories done stay in the repositories only
    trials = 0
    while camp.pool and (time.monotonic() < camp.damage_end or trials == 0):
        h, repo, points = camp.rng.choice(camp.pool)
        if points:
            damage_trial(camp, h, repo, points, trials)
        trials += 1
    line = camp.report()
    problems = []
    for what, seen in (("silent wrong restores (exit 0 with another state)", camp.silent),
                       ("failures that were not one clear line (or hung)", camp.unclear),
                       ("verify said no damage, and the damaged repository restored otherwise", camp.misses),
                       ("backups that exited 0 although the store restarted under them", camp.survivors),
                       ("restores refused for files an earlier restore left in the target", camp.stuck)):
        if seen:
            more = f"\n  ... and {len(seen) - 25} more" if len(seen) > 25 else ""
            problems.append(f"{what}: {len(seen)}\n  " + "\n  ".join(seen[:25]) + more)
    if not camp.figures["restores_exact"]:
        problems.append("no restore gave back a recorded state: the campaign proved nothing")
    if problems:
        involved = {p.split(" ")[0] for p in (camp.silent + camp.unclear + camp.misses + camp.survivors
                                              + camp.stuck)[:100]}
        logs = "\n".join(f"  {h.db}: " + "\n    ".join(h.log) for h in histories if h.db in involved)
        pytest.fail(f"{line}\n(replay: OMBRA_CAMPAIGN_SEED={seed})\n" + "\n".join(problems)
                    + f"\nthe histories involved:\n{logs}")
