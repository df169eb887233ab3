"""Attacks on the list of damaged copies (docs/design.md, "Damaged copies are stored again"):
a copy listed by a transient fault while the fresh copy rots, both copies of a block damaged,
a crafted list. The rule that must hold: a restore exits 0 only with what was backed up, and
nothing deletes the only good copy of a block."""
import json
import shutil

from test_damaged_blocks import blocks_of, full
from test_restore import restore_target
from test_synthetic_full import load, repo, restore_digest  # noqa: F401 (repo: the fixture)


def copies(repo, block):
    """Every stored copy of block the index files name: (pack file, offset, stored, raw)."""
    out = []
    for ix in (repo / "index").glob("*.json"):
        j = json.loads(ix.read_text())
        for b in j["blocks"]:
            if b[0] == block:
                out.append((repo / "packs" / j["pack"][:2] / j["pack"], b[1], b[2], b[3]))
    return sorted(out)


def damage_copy(place):
    """Eight bytes in the middle of one stored copy turned over."""
    pack, off, stored, _ = place
    at = off + 56 + stored // 2
    with open(pack, "r+b") as p:
        p.seek(at)
        b = p.read(8)
        p.seek(at)
        p.write(bytes(x ^ 0xFF for x in b))


def list_by_a_passing_fault(store, repo, pack):
    """verify while a pack reads as zeros (an administrator's copy half done, a mount that
    came back wrong): every copy in it is listed; then the pack reads right again."""
    away = pack.with_name(pack.name + ".away")
    shutil.move(pack, away)
    pack.write_bytes(bytes(away.stat().st_size))
    assert store.ombra("verify", "--repo", repo, check=False).rc == 1
    shutil.move(away, pack)


def rotten_fresh_copy(store, repo):
    """db1 backed up; the copies of the first full's pack listed by a passing fault; a read-all
    full stores them again; the fresh copy of the database's second block rots unseen. The
    recorded digest, the first set, the block and its first (good, listed) copy."""
    store.ombra("db", "new", "db1")
    load(store, 300, 1)
    f1 = full(store, repo)["sets"][0]
    digest = store.digest("db1")
    _, ids = blocks_of(repo, f1["id"], "edb/")
    [first] = copies(repo, ids[1])
    list_by_a_passing_fault(store, repo, first[0])
    assert full(store, repo, "--read-all")["blocks_stored_again"] >= 1
    fresh = [c for c in copies(repo, ids[1]) if c[0] != first[0]]
    assert len(fresh) == 1, copies(repo, ids[1])
    damage_copy(fresh[0])  # bit rot nobody has seen yet
    return digest, f1, ids[1], first


def test_expire_keeps_a_listed_copy_when_the_fresh_copy_rotted(store, repo):
    """A copy listed while its pack read wrong is good; the fresh copy the next full stored rots
    before anyone reads it. expire must not delete the listed (good) copy for the rotten one:
    the newest set still restores to the recorded digest."""
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
