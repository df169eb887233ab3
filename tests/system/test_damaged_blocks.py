"""A stored copy of a block damaged in the repository (bit rot in a pack) is stored again
(docs/design.md, "Damaged copies are stored again"): verify names it and lists it in
damaged.json, saying which database's next full stores it again; the next full — one that reads
every page, and a synthetic one, which reads again the regions that would slice the damaged
block — stores a fresh copy; then the new set and the older one that named the damaged copy both
restore to the recorded digest, and verify passes. A block nothing stores again (a log the next
full no longer holds) stays damaged and named. A garbled damaged.json is one line, never a
crash, and verify writes it anew."""
import json

import pytest

from test_restore import block_place, restore_target
from test_synthetic_full import load, repo, restore_digest  # noqa: F401 (repo: the fixture)


def full(store, repo, *args):
    """backup --json's whole document."""
    r = store.ombra("backup", "--repo", repo, "--type", "full", "--json", *args, "db1")
    return json.loads(r.out)


def damage(repo, block):
    """Eight bytes in the middle of the block's stored copy turned over."""
    damage_copy(block_place(repo, block))


def damage_copy(place):
    """Eight bytes in the middle of one stored copy (pack, offset, stored, raw) turned over."""
    pack, off, stored, _ = place
    at = off + 56 + stored // 2
    with open(pack, "r+b") as p:
        p.seek(at)
        b = p.read(8)
        p.seek(at)
        p.write(bytes(x ^ 0xFF for x in b))


def blocks_of(repo, set_id, prefix):
    """The first file of the set whose name starts with prefix, and its block ids."""
    doc = json.loads((repo / "sets" / f"{set_id}.json").read_bytes())
    f = sorted((f for f in doc["files"] if f["name"].startswith(prefix)), key=lambda f: f["name"])
    assert f, [f["name"] for f in doc["files"]]
    return f[0], [f[0]["blocks"][i:i + 64] for i in range(0, len(f[0]["blocks"]), 64)]


def verify_lists(store, repo, block):
    """verify fails, names the block, lists it in damaged.json and says what to do."""
    r = store.ombra("verify", "--repo", repo, "--json", check=False)
    assert r.rc == 1, r.describe()
    doc = json.loads(r.out)
    hit = [d for d in doc["damage"] if d.get("block") == block]
    assert hit and hit[0]["listed_damaged"], doc
    listed = doc["listed_damaged"]
    assert [b["block"] for b in listed["blocks"]] == [block], listed
    assert listed["databases"] == ["db1"] and "next full backup of database db1" in listed["hint"]
    on_disk = json.loads((repo / "damaged.json").read_text())
    assert [b["block"] for b in on_disk["blocks"]] == [block], on_disk
    t = store.ombra("verify", "--repo", repo, check=False)
    assert t.rc == 1 and f"listed as damaged in {repo}/damaged.json: block {block}" in t.out
    assert "1 damaged block waits for a fresh copy. HINT: the next full backup of database db1" \
        in t.out, t.describe()


@pytest.mark.parametrize("kind", ["read-all", "synthetic"])
def test_the_next_full_stores_a_damaged_block_again_and_the_older_set_restores(store, repo, kind):
    store.ombra("db", "new", "db1")
    load(store, 600, 1)
    f1 = full(store, repo)["sets"][0]
    digest = store.digest("db1")
    _, ids = blocks_of(repo, f1["id"], "edb/")
    assert len(ids) >= 3, ids
    damage(repo, ids[1])  # a region a synthetic full would slice: no page of it changes
    verify_lists(store, repo, ids[1])
    f2 = full(store, repo, *(["--read-all"] if kind == "read-all" else []))
    s2 = f2["sets"][0]
    assert f2["blocks_stored_again"] == 1 and s2["blocks_stored_again"] == 1, f2
    if kind == "synthetic":
        cm = s2["changemap"]
        assert not cm["read_all"] and cm["regions_read_again_damaged"] == 1, cm
    else:
        assert s2["changemap"]["read_all"], s2
    _, ids2 = blocks_of(repo, s2["id"], "edb/")
    assert ids2[1] == ids[1], "the region read again is the same block, so it serves the older set"
    store.ombra("verify", "--repo", repo)  # every set: the older one reads the fresh copy
    assert json.loads((repo / "damaged.json").read_text())["blocks"][0]["block"] == ids[1]
    text = store.ombra("backup", "--repo", repo, "--type", "full", "db1").out
    assert "stored again" not in text, text  # once stored, nothing is stored again
    # expire keeps the fresh copy (all three sets stay: the damaged copy's pack is mostly used)
    store.ombra("expire", "--repo", repo, "--keep-full", "3")
    store.ombra("verify", "--repo", repo)
    assert restore_digest(store, repo, "--set", f1["id"][:12]) == digest  # the older set
    assert restore_digest(store, repo, "--set", s2["id"][:12]) == digest  # the one that repaired it


def test_a_restore_that_meets_a_damaged_block_lists_it_and_the_next_full_mends_the_set(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 300, 1)
    f1 = full(store, repo)["sets"][0]
    digest = store.digest("db1")
    _, ids = blocks_of(repo, f1["id"], "edb/")
    damage(repo, ids[1])
    restore_target(store)
    r = store.ombra("restore", "db1", "--repo", repo, "--to", "db2", check=False)
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.describe()
    [e] = json.loads((repo / "damaged.json").read_text())["blocks"]
    assert e["block"] == ids[1] and e["by"] == "restore", e
    assert full(store, repo, "--read-all")["blocks_stored_again"] == 1
    assert restore_digest(store, repo, "--set", f1["id"][:12]) == digest


def test_a_block_nothing_stores_again_stays_damaged_and_named(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 200, 1)
    f1 = full(store, repo)["sets"][0]
    logf, lids = blocks_of(repo, f1["id"], "logs/")
    damage(repo, lids[0])  # the first full's log generation: the next full holds later ones
    assert store.ombra("verify", "--repo", repo, check=False).rc == 1
    load(store, 20, 2)
    f2 = full(store, repo)
    assert f2["blocks_stored_again"] == 0, f2
    s2 = f2["sets"][0]["id"]
    store.ombra("verify", "--repo", repo, s2[:12])  # the new set is whole
    r = store.ombra("verify", "--repo", repo, "--json", check=False)
    doc = json.loads(r.out)
    assert r.rc == 1 and {(d["set_id"], d["file"]) for d in doc["damage"] if d.get("block")} == \
        {(f1["id"], logf["name"])}, doc
    assert [b["block"] for b in doc["listed_damaged"]["blocks"]] == [lids[0]], doc


def test_a_garbled_damaged_list_is_one_line_and_verify_writes_it_anew(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 100, 1)
    full(store, repo)
    listed = repo / "damaged.json"
    for text in ["{garbage", '{"format": "ombra-damaged-blocks", "version": 1, "blocks": []}',
                 "\x00" * 64]:
        listed.write_text(text)
        b = store.ombra("backup", "--repo", repo, "--type", "full", "db1", check=False)
        assert b.rc == 0, b.describe()
        warn = [line for line in b.err.splitlines() if "damaged.json" in line]
        assert len(warn) == 1 and "ignored" in warn[0] and "HINT" in warn[0], b.describe()
        v = store.ombra("verify", "--repo", repo, check=False)
        assert v.rc == 1 and "damaged.json" in v.out and "ignored" in v.out, v.describe()
        store.ombra("verify", "--repo", repo)  # written anew
    # a folder in its place: verify says so in one line and does not crash; backups go on
    listed.unlink()
    listed.mkdir()
    v = store.ombra("verify", "--repo", repo, check=False)
    assert v.rc == 1 and len(v.err.strip().splitlines()) == 1, v.describe()
    assert "damaged.json" in v.out + v.err, v.describe()
    assert store.ombra("backup", "--repo", repo, "--type", "incremental", "db1", check=False).rc == 0
