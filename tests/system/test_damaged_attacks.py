"""Attacks on the list of damaged copies (docs/design.md, "Damaged copies are stored again"):
a copy listed by a transient fault while the fresh copy rots, both copies of a block damaged,
a crafted list. The rule that must hold: a restore exits 0 only with what was backed up, and
nothing deletes the only good copy of a block."""
import json
import shutil

import pytest

from test_damaged_blocks import damage_copy, full
from test_restore import restore_target
from test_synthetic_full import load, repo, restore_digest  # noqa: F401 (repo: the fixture)

# Under the sanitizers in make test-long only (make test runs them plain, and
# test_damaged_blocks under the sanitizers).
pytestmark = pytest.mark.slow_under_sanitizers


def copies(repo, block):
    """Every stored copy of block the index files name: (pack file, offset, stored, raw)."""
    out = []
    for ix in (repo / "index").glob("*.json"):
        j = json.loads(ix.read_text())
        for b in j["blocks"]:
            if b[0] == block:
                out.append((repo / "packs" / j["pack"][:2] / j["pack"], b[1], b[2], b[3]))
    return sorted(out)


def list_by_a_passing_fault(store, repo, packs):
    """verify while packs read as zeros (an administrator's copy half done, a mount that came
    back wrong): every copy in them is listed; then they read right again."""
    for pack in packs:
        shutil.move(pack, pack.with_name(pack.name + ".away"))
        pack.write_bytes(bytes(pack.with_name(pack.name + ".away").stat().st_size))
    assert store.ombra("verify", "--repo", repo, check=False).rc == 1
    for pack in packs:
        shutil.move(pack.with_name(pack.name + ".away"), pack)


def rotten_fresh_copy(store, repo):
    """db1 backed up; the copies in the first full's packs listed by a passing fault; a read-all
    full stores them again; the largest block's fresh copy rots unseen. The recorded digest, the
    first set, the block and its first (good, listed) copy."""
    store.ombra("db", "new", "db1")
    load(store, 300, 1)
    f1 = full(store, repo)["sets"][0]
    digest = store.digest("db1")
    packs = set((repo / "packs").glob("*/*"))
    list_by_a_passing_fault(store, repo, packs)
    assert full(store, repo, "--read-all")["blocks_stored_again"] >= 1
    twice = {}
    for ix in (repo / "index").glob("*.json"):
        for b in json.loads(ix.read_text())["blocks"]:
            twice[b[0]] = twice.get(b[0], 0) + 1
    block = max((b for b in twice if twice[b] == 2), key=lambda b: copies(repo, b)[0][2])
    [first] = [c for c in copies(repo, block) if c[0] in packs]
    [fresh] = [c for c in copies(repo, block) if c[0] not in packs]
    damage_copy(fresh)  # bit rot nobody has seen yet
    return digest, f1, block, first


@pytest.fixture(params=["plain", "encrypted"])
def any_repo(request, store, vssd):
    """A repository, plain or encrypted (its passphrase in the environment every command gets)."""
    r = store.tmp / "repo"
    if request.param == "encrypted":
        store.env = dict(store.env, OMBRA_REPO_PASSPHRASE="correct horse battery staple")
        store.ombra("repo", "init", r, "--encrypt")
    else:
        store.ombra("repo", "init", r)
    return r


def test_expire_keeps_a_listed_copy_when_the_fresh_copy_rotted(store, any_repo):
    """A copy listed while its pack read wrong is good; the fresh copy the next full stored rots
    before anyone reads it. expire must not delete the listed (good) copy for the rotten one:
    the newest set still restores to the recorded digest."""
    repo = any_repo
    digest, _, block, first = rotten_fresh_copy(store, repo)
    store.ombra("expire", "--repo", repo, "--keep-full", "1")
    assert any(c[0] != first[0] or c[1] != first[1] for c in copies(repo, block)), \
        "expire deleted the only good copy of a block"
    store.ombra("verify", "--repo", repo)  # the rotten copy listed, the good one serves
    assert restore_digest(store, repo) == digest


def test_a_restore_reads_a_listed_copy_when_every_copy_is_listed(store, repo):
    """Both copies of a block listed (one by a passing fault), the index's one rotten: the read
    falls back on the other copy, checked against the block's id, and the set restores."""
    digest, f1, _, _ = rotten_fresh_copy(store, repo)
    for to in ["db2", "db3"]:  # the first lists the rotten copy too; the second meets both listed
        restore_target(store, to)
        r = store.ombra("restore", "db1", "--repo", repo, "--set", f1["id"][:12], "--to", to,
                        "--mount", check=False)
        assert r.rc == 0, r.describe()
        assert store.digest(to) == digest
        store.ombra("db", "dismount", to)  # one recovery database mounted at a time


def test_both_copies_damaged_stay_named_through_expire_and_a_restore_is_one_line(store, repo):
    """Both copies of a block rot; a restore meets them (one line, exit 1), expire runs before
    any fresh copy exists: neither copy goes, verify still names the block, and once the
    database's next read-all full stores it again the older set restores exactly."""
    digest, f1, block, first = rotten_fresh_copy(store, repo)
    damage_copy(first)
    restore_target(store)
    r = store.ombra("restore", "db1", "--repo", repo, "--set", f1["id"][:12], "--to", "db2",
                    check=False)
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1 and block in r.err, r.describe()
    listed = {(b["block"], b["offset"]) for b in
              json.loads((repo / "damaged.json").read_text())["blocks"]}
    assert {(block, c[1]) for c in copies(repo, block)} <= listed, listed
    store.ombra("expire", "--repo", repo, "--keep-full", "1")
    assert len(copies(repo, block)) == 2, "expire deleted a copy no good one replaced"
    v = store.ombra("verify", "--repo", repo, check=False)
    assert v.rc == 1 and block in v.out, v.describe()
    assert full(store, repo, "--read-all")["blocks_stored_again"] == 1
    store.ombra("expire", "--repo", repo, "--keep-full", "2")
    assert len(copies(repo, block)) == 1, copies(repo, block)  # the damaged ones went
    store.ombra("verify", "--repo", repo)
    assert restore_digest(store, repo) == digest


def test_a_list_root_wrote_does_not_stop_the_repository_owner(store, repo):
    """An administrator runs verify as root once, on a repository its service user owns: the
    list root writes is root's. The owner's verify (and restore, which reads the list the same
    way) must not fail on it: the list is ignored with one line and written anew."""
    store.ombra("db", "new", "db1")
    load(store, 100, 1)
    f1 = full(store, repo)["sets"][0]
    packs = list((repo / "packs").glob("*/*"))  # one or more: the writers may start a pack each
    list_by_a_passing_fault(store, repo, packs)  # as root: damaged.json is root's
    listed = repo / "damaged.json"
    listed.chmod(0o600)
    store.tmp.chmod(0o711)
    shutil.chown(repo, "nobody")
    for f in repo.rglob("*"):
        if f != listed:
            shutil.chown(f, "nobody")
    v = store.ombra("verify", "--repo", repo, f1["id"][:12], user="nobody", check=False)
    assert "damaged.json" in v.out and "ignored" in v.out, v.describe()
    assert v.rc == 1 and "Permission denied" not in v.err, v.describe()
    assert listed.stat().st_uid != 0, "written anew by the owner"
    store.ombra("verify", "--repo", repo, f1["id"][:12], user="nobody")  # every block reads
