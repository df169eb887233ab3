"""ombra restore: round trips through the repository and the store's writer, proven by the
mail digest — full + incrementals to the original database, full + differential to another
database, a point by generation, the recovery database; a block damaged in the repository stops
the restore before any replay, naming the set and file; refusals with their reasons."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest
from conftest import Paused, Result


def load(store, db, n, seed=1):
    store.ombra("mail", "load", db, "--mailboxes", "4", "--messages", str(n), "--size", "6000", "--seed", str(seed))


@pytest.fixture
def repo(store, vssd):
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


def backup(store, repo, t, db="db1"):
    r = store.ombra("backup", "--repo", repo, "--type", t, "--json", db)
    return json.loads(r.out)


def restore(store, repo, db, *args, check=True):
    return store.ombra("restore", db, "--repo", repo, "--json", *args, check=check)


def test_full_and_incrementals_back_into_the_original_and_a_differential_into_another(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 500)
    backup(store, repo, "full")
    load(store, "db1", 200, seed=2)
    dif = backup(store, repo, "differential")
    d_dif = store.digest("db1")
    load(store, "db1", 200, seed=3)
    backup(store, repo, "incremental")
    load(store, "db1", 200, seed=4)
    backup(store, repo, "incremental")
    d_last = store.digest("db1")
    # the original, destroyed: its files gone
    info = store.db_show("db1")
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    os.remove(info["edb"])
    r = restore(store, repo, "db1", "--mount")
    res = json.loads(r.out)
    assert [s["type"] for s in res["sets"]] == ["full", "incremental", "incremental"], res
    assert res["replay"]["last_gen"] >= res["replay"]["first_gen"] > 0
    # the records that waited for the .edb's flush, and the memory they took (capped)
    rp = res["replay"]
    assert 0 <= rp["held_back"] <= rp["records"] and 0 <= rp["held_back_peak_bytes"] <= 256 << 20, rp
    assert store.digest("db1") == d_last
    # the differential's state, into another database
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    r = restore(store, repo, "db1", "--set", dif["sets"][0]["id"][:12], "--to", "db2", "--mount")
    assert [s["type"] for s in json.loads(r.out)["sets"]] == ["full", "differential"]
    assert store.digest("db2") == d_dif


def damage_a_pack(repo):
    """Four bytes in the middle of the first pack of over 100 kB changed."""
    for pack in (repo / "packs").rglob("*"):
        if pack.is_file() and pack.stat().st_size > 100000:
            with open(pack, "r+b") as f:
                f.seek(pack.stat().st_size // 2)
                f.write(b"\x00\xff\x00\xff")
            return
    raise AssertionError("no pack over 100 kB to damage")


def test_a_damaged_block_stops_the_restore_naming_it(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    damage_a_pack(repo)
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and "set" in r.err and "file" in r.err, r.describe()
    assert len(r.err.strip().split("\n")) == 1
    m = store.ombra("db", "mount", "db2", check=False)
    assert m.rc == 1 and "-506 RestoreInProgress" in m.err, "a half-restored database is not mounted"
    # the original too: a failed restore over it leaves it dismounted and marked
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "file" in r.err, r.describe()
    m = store.ombra("db", "mount", "db1", check=False)
    assert m.rc == 1 and "-506 RestoreInProgress" in m.err, m.describe()


def edb_entry(repo, set_id):
    """The set file (plain repository) and its .edb entry."""
    doc = json.loads((repo / "sets" / f"{set_id}.json").read_bytes())
    [f] = [f for f in doc["files"] if f["name"].startswith("edb/")]
    return doc, f


def block_place(repo, block):
    """Where a block's record is: its pack file, offset and lengths (from the index files)."""
    for ix in (repo / "index").glob("*.json"):
        j = json.loads(ix.read_text())
        for b in j["blocks"]:
            if b[0] == block:
                return repo / "packs" / j["pack"][:2] / j["pack"], b[1], b[2], b[3]
    raise AssertionError(f"block {block} is in no index")


def restore_target(store, name="db2"):
    store.ombra("db", "new", name)
    store.ombra("db", "dismount", name)
    store.ombra("db", "set", name, "--allow-restore", "on")


def zstd_raw_span(payload):
    """(start, length) of bytes zstd keeps as they are inside a frame (a raw block, or the raw
    literals of a compressed one: damage there decompresses to wrong bytes instead of failing),
    or None."""
    if payload[:4] != b"\x28\xb5\x2f\xfd":
        return None
    fhd = payload[4]
    single, did, fcs = fhd >> 5 & 1, fhd & 3, fhd >> 6
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[did] + ((1 if single else 0), 2, 4, 8)[fcs]
    while at + 3 <= len(payload):
        h = int.from_bytes(payload[at:at + 3], "little")
        last, kind, size = h & 1, h >> 1 & 3, h >> 3
        at += 3
        if kind == 0 and size > 64:
            return at, size
        lit = payload[at] if kind == 2 and size else 0
        if kind == 2 and lit & 3 == 0:  # a compressed block whose literals are stored raw
            fmt = lit >> 2 & 3
            n, hl = ((lit >> 3, 1) if fmt in (0, 2) else
                     ((lit >> 4) + (payload[at + 1] << 4), 2) if fmt == 1 else
                     ((lit >> 4) + (payload[at + 1] << 4) + (payload[at + 2] << 12), 3))
            if n > 64:
                return at + hl, n
        at += 1 if kind == 1 else size
        if last:
            break
    return None


@pytest.mark.parametrize("xxh", ["recorded", "absent"])
def test_a_block_damaged_inside_a_chunk_of_the_edb_is_refused_naming_the_file_and_block(store, repo,
                                                                                        xxh):
    """A block of the .edb inside a chunk of eight (not the chunk's first), damaged where it still
    reads and decompresses (its record's header intact, the bytes in a part zstd stores as they
    are), fails the restore, naming set, file and block: in a plain repository each block is
    checked against its id as it is fetched; a set of an earlier build, without XXH3-128
    ("absent"), is checked by the file's SHA-256, and its blocks then read again to name the
    damaged one."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 2500)  # about 15 MB: the .edb spans more than one chunk of 8 blocks
    full = backup(store, repo, "full")
    set_id = full["sets"][0]["id"]
    doc, f = edb_entry(repo, set_id)
    if xxh == "absent":
        for x in doc["files"]:
            del x["xxh3_128"]
        set_id = rewrite_plain_set(repo, set_id, doc)
    ids = [f["blocks"][i:i + 64] for i in range(0, len(f["blocks"]), 64)]
    assert len(ids) > 9, f"the .edb has {len(ids)} blocks"
    spot = None
    for k in [i for i in range(1, len(ids) - 1) if i % 8]:  # inside a chunk
        pack, off, stored, raw = block_place(repo, ids[k])
        with open(pack, "rb") as p:
            p.seek(off + 56)
            payload = p.read(stored)
        span = (0, stored) if stored == raw else zstd_raw_span(payload)
        if span:
            spot = (k, pack, off + 56 + span[0] + span[1] // 2)
            break
    assert spot, "no block of the .edb holds bytes stored as they are"
    k, pack, at = spot
    with open(pack, "r+b") as p:
        p.seek(at)
        b = p.read(4)
        p.seek(at)
        p.write(bytes(x ^ 0xFF for x in b))
    restore_target(store)
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and len(r.err.strip().split("\n")) == 1, r.describe()
    assert f"set {set_id[:12]}" in r.err and f["name"] in r.err and f"block {k} " in r.err, r.describe()
    assert "the block's content does not match its id" in r.err, r.describe()
    edb = pathlib.Path(store.db_show("db2")["edb"])
    assert not [x for x in edb.parent.iterdir() if x.name.endswith(".tmp")], "a temporary file stays"
    m = store.ombra("db", "mount", "db2", check=False)
    assert m.rc == 1 and "-506 RestoreInProgress" in m.err, m.describe()


def rewrite_plain_set(repo, set_id, doc):
    """doc as the plain repository's set file, under the name its bytes give it (a crafted set:
    anyone who can write a plain repository can make one). Returns the new id."""
    text = json.dumps(doc).encode()
    new_id = __import__("hashlib").sha256(text).hexdigest()  # a plain set file names itself so
    (repo / "sets" / f"{set_id}.json").unlink()
    (repo / "sets" / f"{new_id}.json").write_bytes(text)
    return new_id


@pytest.mark.parametrize("xxh", ["kept", "crafted"])
def test_a_set_listing_the_wrong_blocks_with_right_blocks_is_refused(store, repo, xxh):
    """Every block is intact and matches its id, but the set lists two of them swapped (a backup
    bug: its XXH3-128 kept as recorded; or crafted to match nothing): the file's XXH3-128 does
    not match, the file's SHA-256 then decides and refuses it, and the message says the set
    lists the wrong blocks."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 1500)
    full = backup(store, repo, "full")
    set_id = full["sets"][0]["id"]
    doc, f = edb_entry(repo, set_id)
    ids = [f["blocks"][i:i + 64] for i in range(0, len(f["blocks"]), 64)]
    assert len(ids) >= 3 and ids[0] != ids[1]
    ids[0], ids[1] = ids[1], ids[0]  # both whole blocks of the block size: the lengths fit
    f["blocks"] = "".join(ids)
    assert re.fullmatch(r"[0-9a-f]{32}", f["xxh3_128"]), f
    if xxh == "crafted":
        f["xxh3_128"] = "0" * 32  # to match nothing: the plain restore does not go by it alone
    rewrite_plain_set(repo, set_id, doc)
    restore_target(store)
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and len(r.err.strip().split("\n")) == 1, r.describe()
    assert f["name"] in r.err and "does not match its SHA-256" in r.err, r.describe()
    assert "lists the wrong blocks" in r.err, r.describe()


def test_a_plain_repository_checks_each_block_by_its_id_and_a_wrong_xxh3_128_falls_to_sha256(
        store, repo):
    """A plain repository's backup records each file's XXH3-128 (what xxhsum -H2 gives for the
    file as it was backed up); its restore checks every block against its id (the SHA-256 of its
    content, which a set id pins) and each file by that XXH3-128. One written into a set by hand,
    and wrong, is not what the restore goes by, and does not make the sound set unrestorable: the
    file's SHA-256 decides (digest equal, a warning naming the file), and verify names the wrong
    value."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 800)
    full = backup(store, repo, "full")
    d = store.digest("db1")
    set_id = full["sets"][0]["id"]
    doc, f = edb_entry(repo, set_id)
    assert all(re.fullmatch(r"[0-9a-f]{32}", x["xxh3_128"]) for x in doc["files"]), doc["files"]
    lay = store.tmp / "lay"
    restore(store, repo, "db1", "--set", set_id, "--edb", lay / "db1.edb", "--logs", lay / "logs",
            "--no-replay")
    xs = subprocess.run(["xxhsum", "-H2", lay / "db1.edb"], capture_output=True, text=True, check=True)
    assert xs.stdout.split()[0] == f["xxh3_128"], (xs.stdout, f["xxh3_128"])
    restore_target(store)
    res = json.loads(restore(store, repo, "db1", "--to", "db2", "--mount").out)
    assert store.digest("db2") == d
    n = res["files"]
    assert res["checked_by"] == {"xxh3_128": n, "sha256": 0, "block_ids": n}, res
    f["xxh3_128"] = "0123456789abcdef" * 2
    new_id = rewrite_plain_set(repo, set_id, doc)
    v = store.ombra("verify", "--repo", repo, check=False)
    assert v.rc == 1 and "does not match the file's XXH3-128" in v.out + v.err, v.describe()
    store.ombra("db", "dismount", "db2")
    r = restore(store, repo, "db1", "--set", new_id, "--to", "db2", "--mount")
    res = json.loads(r.out)
    assert store.digest("db2") == d
    assert res["checked_by"] == {"xxh3_128": n - 1, "sha256": 1, "block_ids": n}, res
    assert f["name"] in r.err and "its recorded XXH3-128 is wrong" in r.err, r.describe()


def test_a_plain_set_without_xxh3_128_is_restored_by_its_sha256(store, repo):
    """A plain set as earlier builds wrote it (no XXH3-128: before 2424631, and plain sets between
    f2fa5bf and it) is restored as before: each file checked by its SHA-256, its blocks read
    without their ids checked one by one, the digest equal."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 800)
    full = backup(store, repo, "full")
    d = store.digest("db1")
    doc, _ = edb_entry(repo, full["sets"][0]["id"])
    for x in doc["files"]:
        del x["xxh3_128"]
    new_id = rewrite_plain_set(repo, full["sets"][0]["id"], doc)
    restore_target(store)
    res = json.loads(restore(store, repo, "db1", "--set", new_id, "--to", "db2", "--mount").out)
    assert store.digest("db2") == d
    n = res["files"]
    assert res["checked_by"] == {"xxh3_128": 0, "sha256": n, "block_ids": 0}, res


@pytest.mark.parametrize("bad", [12345, "zz" * 16, "ab"])
def test_a_malformed_xxh3_128_is_a_damaged_set_not_a_check_skipped(store, repo, bad):
    """A set whose file entry carries an XXH3-128 that is no 32 hex digits is malformed: the
    restore refuses it in one line (plain as it is, where a wrong but well-formed value would
    fall to the SHA-256: a damaged set is not restored from), verify names the field."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    set_id = backup(store, repo, "full")["sets"][0]["id"]
    doc, f = edb_entry(repo, set_id)
    f["xxh3_128"] = bad
    rewrite_plain_set(repo, set_id, doc)
    restore_target(store)
    r = restore(store, repo, "db1", "--to", "db2", check=False)
    assert r.rc == 1 and len(r.err.strip().split("\n")) == 1, r.describe()
    assert f["name"] in r.err and "malformed" in r.err, r.describe()
    v = store.ombra("verify", "--repo", repo, check=False)
    assert v.rc == 1 and "its XXH3-128 is malformed" in v.out + v.err, v.describe()


def test_refusals(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "SetNotFound" in r.err, r.describe()
    backup(store, repo, "full")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "-1202 DatabaseInUse" in r.err and "dismount" in r.err, r.describe()
    store.ombra("db", "dismount", "db1")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "-1032 FileAccessDenied" in r.err, r.describe()


def test_a_point_in_time_keeps_the_mail_before_it_and_drops_the_mail_after_it(store, repo):
    import datetime
    import time
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    load(store, "db1", 100, seed=2)
    before = store.digest("db1")
    time.sleep(1.1)
    point = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(1.1)
    load(store, "db1", 100, seed=3)
    after = store.digest("db1")
    backup(store, repo, "incremental")
    store.ombra("db", "new", "db2")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "set", "db2", "--allow-restore", "on")
    r = restore(store, repo, "db1", "--until-time", point, "--to", "db2", "--mount")
    res = json.loads(r.out)
    assert res["replay"]["stopped_at_point"], res
    assert store.digest("db2") == before != after
    r = restore(store, repo, "db1", "--until-time", "yesterday", check=False)
    assert r.rc == 2 and "--until-time" in r.err


def dismount_for_restore(store, db):
    store.ombra("db", "dismount", db)
    store.ombra("db", "set", db, "--allow-restore", "on")


@pytest.fixture
def chain3(store, repo):
    """db1 with a full and two incrementals; the digest at the last one."""
    store.ombra("db", "new", "db1")
    load(store, "db1", 400)
    full = backup(store, repo, "full")
    d_full = store.digest("db1")
    load(store, "db1", 600, seed=2)
    inc1 = backup(store, repo, "incremental")
    load(store, "db1", 600, seed=3)
    inc2 = backup(store, repo, "incremental")
    return {"digest": store.digest("db1"), "inc1": inc1["sets"][0]["id"], "inc2": inc2["sets"][0]["id"],
            "full": full["sets"][0]["id"], "d_full": d_full}


def restore_once_free(store, repo, db, *args):
    """A restore, again while the target is refused as being restored (-505): the coordinator
    ends a dead requester's session once the writer is done with its event."""
    end = time.time() + 30
    while True:
        r = restore(store, repo, db, *args, check=False)
        if r.rc == 0 or "-505" not in r.err or time.time() > end:
            return r
        time.sleep(0.2)


STAGES = ["prepared", "edb", "replaying", "laid"]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_at_any_stage_leaves_the_target_dismounted_and_a_retry_succeeds(store, repo, chain3, stage):
    info = store.db_show("db1")
    dismount_for_restore(store, "db1")
    os.remove(info["edb"])
    p = subprocess.Popen([str(store.cli), "restore", "db1", "--repo", str(repo)],
                         env=dict(store.env, OMBRA_RESTORE_PAUSE=stage), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.startswith(f"paused {stage}"), line + p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert store.db_show("db1")["mounted"] is False
    m = store.ombra("db", "mount", "db1", check=False)
    if stage != "laid":  # by then every file is down and the writer may have finished
        assert m.rc == 1 and "-506 RestoreInProgress" in m.err, m.describe()
    if m.rc == 0:
        store.ombra("db", "dismount", "db1")
    # a file being laid down has a temporary name unique to the restore (.NAME.RANDOM.tmp)
    assert not list(pathlib.Path(info["logs"]).glob(".*.tmp")) or stage in ("edb", "replaying")
    # the coordinator ends the dead restore's session once the writer is done with its event;
    # until then the component is refused (-505, naming the session)
    r = restore_once_free(store, repo, "db1", "--mount")
    assert r.rc == 0, r.describe()
    assert json.loads(r.out)["replay"]["last_gen"] > 0
    assert store.digest("db1") == chain3["digest"]
    for folder in {pathlib.Path(info["logs"]), pathlib.Path(info["edb"]).parent}:
        assert not list(folder.glob(".*.tmp")), "no leftovers after a restore"
    assert not (pathlib.Path(info["logs"]) / "_restoredLogs").exists()


def retired(logs):
    return sorted(p.name for p in pathlib.Path(logs).glob("_retiredLogs.*"))


def test_a_restore_into_another_database_leaves_no_restore_folder_behind(store, repo, chain3):
    """PostRestore retires _restoredLogs in one rename before it answers and removes the
    generations after the answer: the target mounts with the source's mail, no restore is
    pending, and the retired folder is gone soon after."""
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    logs2 = store.db_show("db2")["logs"]
    r = restore(store, repo, "db1", "--to", "db2", "--mount")
    assert json.loads(r.out)["replay"]["last_gen"] > 0
    assert not (pathlib.Path(logs2) / "_restoredLogs").exists()
    assert store.digest("db2") == chain3["digest"]
    end = time.time() + 20
    while retired(logs2) and time.time() < end:
        time.sleep(0.1)
    assert retired(logs2) == [], "the retired folder is removed after the answer"
    assert "retired" not in store.stderr().lower(), store.stderr()
    # a second restore over it: the same again, and the database dismounts and mounts
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--set", chain3["full"][:12], "--to", "db2", "--mount")
    store.ombra("db", "dismount", "db2")
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == chain3["d_full"]
    end = time.time() + 20
    while retired(logs2) and time.time() < end:
        time.sleep(0.1)
    assert retired(logs2) == []


def test_roll_forward_through_the_logs_left_on_disk_or_not(store, repo, chain3):
    load(store, "db1", 100, seed=9)  # after the last backup: only in the log folder
    latest = store.digest("db1")
    info = store.db_show("db1")
    dismount_for_restore(store, "db1")
    os.remove(info["edb"])  # the database file lost, its logs kept
    r = restore(store, repo, "db1", "--mount")
    assert store.digest("db1") == latest != chain3["digest"], "rolled forward through the later logs"
    dismount_for_restore(store, "db1")
    r = restore(store, repo, "db1", "--no-roll-forward", "--mount")
    assert store.digest("db1") == chain3["digest"], "only the backups' logs"
    # the full backup alone: the folder holds the first stream's generations (the restores put
    # the backups' back) up to the mail after the last backup, then the stream the restore
    # without roll forward started: roll forward goes through the first and stops at the second
    dismount_for_restore(store, "db1")
    r = restore(store, repo, "db1", "--set", chain3["full"][:12], "--mount")
    assert store.digest("db1") == latest
    load(store, "db1", 20, seed=11)  # and it lives on


def test_an_older_backup_rolls_forward_only_as_far_as_the_logs_on_disk_continue_it(store, repo, chain3):
    info = store.db_show("db1")
    dismount_for_restore(store, "db1")
    os.remove(info["edb"])
    # the incrementals truncated the generations after the full's: a gap, so nothing rolls on
    r = restore(store, repo, "db1", "--set", chain3["full"][:12], "--mount")
    res = json.loads(r.out)
    assert res["replay"]["stopped_at_point"] is False
    gap = res["replay"]["roll_forward_ended"]
    assert f"generation {res['replay']['last_gen'] + 1} is missing" in gap, res
    assert store.digest("db1") == chain3["d_full"]
    dismount_for_restore(store, "db1")
    r = store.ombra("restore", "db1", "--repo", repo, "--set", chain3["full"][:12], "--mount")
    assert "note: roll forward stopped after generation" in r.out, r.describe()
    assert store.digest("db1") == chain3["d_full"]
    load(store, "db1", 20, seed=11)
    d = store.digest("db1")
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "mount", "db1")
    assert store.digest("db1") == d, "it lives on, on its new stream"


def test_a_broken_chain_is_refused_naming_the_gap(store, repo, chain3):
    info = store.db_show("db1")
    sets = {s["id"]: s for s in store.json("backups", "list", "--repo", repo)["sets"]}
    inc1 = sets[chain3["inc1"]]
    for f in (repo / "sets").iterdir():
        if f.name.startswith(chain3["inc1"][:16]) or f.stem == chain3["inc1"]:
            f.unlink()
    dismount_for_restore(store, "db1")
    r = restore(store, repo, "db1", check=False)
    first, last = inc1["log_range"]
    assert r.rc == 1 and "MissingLogFile" in r.err and str(first) in r.err, r.describe()
    assert len(r.err.strip().split("\n")) == 1
    assert pathlib.Path(info["edb"]).exists(), "nothing touched"
    store.ombra("db", "mount", "db1")
    assert store.digest("db1") == chain3["digest"]


def test_additional_restores_then_the_next_backup_replays(store, repo, chain3):
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--set", chain3["inc1"][:12], "--to", "db2", "--no-replay")
    assert json.loads(r.out)["replay"] is None
    m = store.ombra("db", "mount", "db2", check=False)
    assert m.rc == 1 and "-506 RestoreInProgress" in m.err, m.describe()
    r = restore(store, repo, "db1", "--set", chain3["inc2"][:12], "--to", "db2", "--mount")
    assert store.digest("db2") == chain3["digest"]
    # or dbutil recover replays what was laid down (eseutil /cc)
    store.ombra("db", "new", "db3")
    dismount_for_restore(store, "db3")
    store.ombra("db", "dismount", "db2")  # copies of live db1: recovery databases, one mounted
    restore(store, repo, "db1", "--to", "db3", "--no-replay")
    logs3 = store.db_show("db3")["logs"]
    r = store.ombra("dbutil", "recover", logs3)
    assert "hard recovery" in r.out and "Clean Shutdown" in r.out, r.describe()
    assert not (pathlib.Path(logs3) / "_restoredLogs").exists()
    assert retired(logs3) == [], "dbutil recover removes the retired folder before it exits"
    store.ombra("db", "mount", "db3")
    assert store.digest("db3") == chain3["digest"]


def test_the_recovery_database_and_new_paths(store, repo, chain3, tmp_path):
    store.ombra("db", "new-recovery", "rdb", "--edb", tmp_path / "r" / "rdb.edb", "--logs", tmp_path / "r" / "logs")
    r = restore(store, repo, "db1", "--recovery", "rdb", "--mount")
    assert json.loads(r.out)["target"] == "rdb"
    assert store.digest("rdb") == chain3["digest"]
    edb, logs = tmp_path / "new" / "x.edb", tmp_path / "new" / "logs"
    r = restore(store, repo, "db1", "--edb", edb, "--logs", logs)
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] == "Clean Shutdown", h
    assert not (logs / "_restoredLogs").exists()
    assert store.digest("db1") == chain3["digest"], "the original is untouched"


def test_a_restore_decides_by_the_sets_not_by_the_summaries_kept_for_listing(store, chain3, repo):
    """The data directory keeps the sets' summaries for listings and backups; a restore reads
    every set itself. Summaries edited there (valid checksum) that make the newest incremental
    look unrestorable change the listing, never what a restore gives back."""
    import ctypes
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    store.ombra("backups", "list", "--repo", repo)
    uuid = json.loads((repo / "config.json").read_text())["id"]
    f = store.home / "cache" / f"sets-{uuid}.json"
    kept = json.loads(f.read_bytes().split(b"\n", 1)[1])
    assert set(kept) == {chain3["full"], chain3["inc1"], chain3["inc2"]}
    kept[chain3["inc2"]]["summary"]["parent"] = "0" * 64
    body = json.dumps(kept).encode()
    f.write_bytes(b"ombra-set-summaries 1 %016x\n" % lib.XXH3_64bits(body, len(body)) + body)
    listed = json.loads(store.ombra("backups", "list", "--repo", repo, "--json").out)["sets"]
    [inc2] = [s for s in listed if s["id"] == chain3["inc2"]]
    assert inc2["parent"] == "0" * 64 and not inc2["restorable"], inc2
    restore_target(store)
    res = json.loads(restore(store, repo, "db1", "--to", "db2", "--mount").out)
    assert [s["id"] for s in res["sets"]] == [chain3["full"], chain3["inc1"], chain3["inc2"]]
    assert store.digest("db2") == chain3["digest"]


def test_an_encrypted_repository_restores_with_its_passphrase(store, vssd, tmp_path):
    r = store.tmp / "enc"
    env = {"OMBRA_REPO_PASSPHRASE": "correct horse battery staple"}
    store.ombra("repo", "init", r, "--encrypt", env=env)
    store.ombra("db", "new", "db1")
    load(store, "db1", 200)
    store.ombra("backup", "--repo", r, "--type", "full", "db1", env=env)
    d = store.digest("db1")
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    bad = store.ombra("restore", "db1", "--repo", r, "--to", "db2", check=False,
                      env={"OMBRA_REPO_PASSPHRASE": "wrong"})
    assert bad.rc == 1 and "passphrase" in bad.err.lower() and len(bad.err.strip().split("\n")) == 1
    res = json.loads(store.ombra("restore", "db1", "--repo", r, "--to", "db2", "--mount", "--json",
                                 env=env).out)
    assert store.digest("db2") == d
    # every file laid was checked by the XXH3-128 the backup recorded (an encrypted repository),
    # which is what xxhsum (another implementation) gives for the .edb laid as it was backed up
    assert res["checked_by"] == {"xxh3_128": res["files"], "sha256": 0, "block_ids": 0}, res
    sid = res["sets"][0]["id"]
    shown = json.loads(store.ombra("backups", "show", sid, "--repo", r, "--json", env=env).out)
    [f] = [x for x in shown["files"] if x["name"].startswith("edb/")]
    assert all(re.fullmatch(r"[0-9a-f]{32}", x["xxh3_128"]) for x in shown["files"]), shown["files"]
    lay = store.tmp / "lay"
    store.ombra("restore", "db1", "--repo", r, "--set", sid, "--edb", lay / "db1.edb", "--logs",
                lay / "logs", "--no-replay", env=env)
    xs = subprocess.run(["xxhsum", "-H2", lay / "db1.edb"], capture_output=True, text=True, check=True)
    assert xs.stdout.split()[0] == f["xxh3_128"], (xs.stdout, f["xxh3_128"])


def test_a_database_gone_from_the_server_or_created_again(store, vssd, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    full = backup(store, repo, "full")
    old_id = store.db_show("db1")["id"]
    d = store.digest("db1")
    # a new server: the store's directory and databases are gone, the repository is there
    store.stop()
    os.remove(store.home / "directory.json")
    shutil.rmtree(store.home / "dbs")
    store.start()
    assert store.writer_registered()
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "not on this server" in r.err and "--to" in r.err, r.describe()
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--to", "db2", "--mount")
    assert json.loads(r.out)["sets"][0]["id"] == full["sets"][0]["id"]
    assert store.digest("db2") == d
    # created again under the same name: a new database, not the one the backups are of
    store.ombra("db", "new", "db1")
    dismount_for_restore(store, "db1")
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "-531 BadDbSignature" in r.err and old_id in r.err, r.describe()
    restore(store, repo, old_id, "--to", "db1", "--mount")
    assert store.digest("db1") == d
    r = restore(store, repo, "nosuchdb", "--to", "db1", check=False)
    assert r.rc == 1 and "SetNotFound" in r.err and "nosuchdb" in r.err
    r = restore(store, repo, "db1", "--recovery", "nope", check=False)
    assert r.rc == 1 and "new-recovery" in r.err, r.describe()


def test_a_copy_backup_restores_on_its_own(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    load(store, "db1", 100, seed=2)
    cp = backup(store, repo, "copy")
    d = store.digest("db1")
    load(store, "db1", 100, seed=3)
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--set", cp["sets"][0]["id"][:12], "--to", "db2", "--mount")
    assert [s["type"] for s in json.loads(r.out)["sets"]] == ["copy"]
    assert store.digest("db2") == d


def test_a_point_by_generation_keeps_the_mail_before_it_and_drops_the_mail_after_it(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    load(store, "db1", 100, seed=2)
    inc1 = backup(store, repo, "incremental")  # the freeze rolls: later mail is in later generations
    before = store.digest("db1")
    point = inc1["sets"][0]["log_range"][1]
    load(store, "db1", 100, seed=3)
    backup(store, repo, "incremental")
    assert store.digest("db1") != before
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    r = restore(store, repo, "db1", "--until-gen", point, "--to", "db2", "--mount")
    res = json.loads(r.out)
    assert res["replay"]["last_gen"] == point, res
    assert store.digest("db2") == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_under_the_target_is_one_error_and_nothing_half_done(store, repo, tmp_path):
    store.ombra("db", "new", "db1")
    load(store, "db1", 400)
    backup(store, repo, "full")
    d = store.digest("db1")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        r = restore(store, repo, "db1", "--edb", small / "x.edb", "--logs", small / "logs", check=False)
        assert r.rc == 1 and "No space left" in r.err and str(small) in r.err, r.describe()
        assert len(r.err.strip().split("\n")) == 1
        assert not [p for p in small.rglob("*") if p.name.endswith(".tmp")], "no half-written file"
        assert (small / "logs" / "_restoredLogs").exists(), "marked as not restored"
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert store.digest("db1") == d, "the source is untouched"
    edb, logs = tmp_path / "roomy" / "x.edb", tmp_path / "roomy" / "logs"
    restore(store, repo, "db1", "--edb", edb, "--logs", logs)
    h = json.loads(store.ombra("dbutil", "header", edb, "--json").out)
    assert h["state"] == "Clean Shutdown"


def test_dbutil_recover_of_a_damaged_restore_env_is_one_error(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    backup(store, repo, "full")
    store.ombra("db", "new", "db2")
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--to", "db2", "--no-replay")
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    env = logs2 / "_restoredLogs" / "E00restore.env"
    good = env.read_text()
    env.write_text(good[: len(good) // 2])
    r = store.ombra("dbutil", "recover", logs2, check=False)
    assert r.rc != 0 and str(env) in r.err and len(r.err.strip().split("\n")) == 1, r.describe()
    env.write_text(good)
    store.ombra("dbutil", "recover", logs2)
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == store.digest("db1")


def test_kill_9_during_the_replay_of_dbutil_recover_then_a_rerun_gives_the_same_digest(store, repo, chain3):
    """Hard recovery killed at points through its replay (the batched replay: generations read
    ahead, pages written back early): each rerun goes on, and the last one gives the digest."""
    store.ombra("db", "new", "db3")
    dismount_for_restore(store, "db3")
    restore(store, repo, "db1", "--to", "db3", "--no-replay")
    logs3 = store.db_show("db3")["logs"]
    kills = 0
    for delay in (0.02, 0.05, 0.08, 0.12, 0.2, 0.3):
        p = subprocess.Popen([str(store.cli), "dbutil", "recover", logs3], env=store.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        if p.poll() is not None:
            p.communicate()
            assert p.returncode == 0, p.stderr
            break
        p.kill()
        p.communicate()
        if p.returncode == 0:  # it ended between the poll and the kill
            break
        kills += 1
        m = store.ombra("db", "mount", "db3", check=False)
        if m.rc == 0:  # killed after it had recorded the restore done: the digest below judges
            break
        assert m.rc == 1 and "-506 RestoreInProgress" in m.err, m.describe()
    assert kills > 0, "the replay finished before the first kill"
    if store.db_show("db3")["mounted"] is not True:
        if (pathlib.Path(logs3) / "_restoredLogs").exists():
            r = store.ombra("dbutil", "recover", logs3)
            assert "Clean Shutdown" in r.out, r.describe()
        store.ombra("db", "mount", "db3")
    assert store.digest("db3") == chain3["digest"]


def boot_id():
    return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()


GEN_NAME = re.compile(r"[A-Za-z0-9]{3}[0-9A-Fa-f]{8}\.log")


def gens_synced(store, *args):
    """ombra restore ARGS under strace: its Result, and the names of the generations it synced
    as it laid them down (fsync or fdatasync of a generation's temporary name), in order."""
    trace = store.tmp / "restore.strace"
    probe = subprocess.run(["strace", "-f", "-qq", "-e", "trace=none", "true"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:  # a container without ptrace, say
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()[:200]}")
    argv = ["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o", str(trace),
            str(store.cli), "restore", *map(str, args)]
    # LeakSanitizer cannot run under ptrace (an ASan build's leak check at exit)
    asan = ":".join(x for x in (store.env.get("ASAN_OPTIONS"), "detect_leaks=0") if x)
    p = subprocess.run(argv, env=dict(store.env, ASAN_OPTIONS=asan), capture_output=True,
                       text=True, timeout=120)
    synced = re.findall(r"f(?:data)?sync\(\d+<[^>]*/\.([A-Za-z0-9]{3}[0-9A-Fa-f]{8}\.log)\.[0-9a-f]{16}"
                        r"\.tmp>", trace.read_text())
    return Result(p.returncode, p.stdout, p.stderr, argv), synced


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed "
                    "(scripts/install-deps installs it)")
def test_a_restore_that_replays_syncs_only_its_last_generation_one_without_replay_syncs_each(
        store, repo, chain3):
    """The logs a restore lays down for its own replay are read and then go: they are placed
    without a sync each (the .edb and the replayed pages are synced before it answers), but the
    last, which nothing after it vouches for, and the .env names this boot. Laid down for a later
    dbutil recover (--no-replay), each is synced."""
    restore_target(store, "db2")
    r, synced = gens_synced(store, "db1", "--repo", repo, "--to", "db2", "--json")
    assert r.rc == 0, r.describe()
    rp = json.loads(r.out)["replay"]
    assert rp["last_gen"] > rp["first_gen"]
    assert [int(x[3:11], 16) for x in synced] == [rp["last_gen"]], synced
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == chain3["digest"]
    restore_target(store, "db3")
    r, synced = gens_synced(store, "db1", "--repo", repo, "--to", "db3", "--no-replay", "--json")
    assert r.rc == 0, r.describe()
    pending = pathlib.Path(store.db_show("db3")["logs"]) / "_restoredLogs"
    laid = [x for x in os.listdir(pending) if GEN_NAME.fullmatch(x)]
    assert len(laid) >= 3 and sorted(synced) == sorted(laid), (synced, laid)
    [env] = pending.glob("*restore.env")
    assert json.loads(env.read_text())["logs_unsynced_boot"] is None


def test_dbutil_recover_takes_unsynced_restored_logs_in_their_boot_only(store, repo, chain3):
    """A restore whose replay never ran (the store stopped, then killed, with every generation
    laid down unsynced): dbutil recover, in the boot that laid them, syncs them and finishes the
    restore, digest equal. Had the machine restarted (the .env names another boot), a crash may
    have lost what was not written back, which no check could tell of the last generation:
    it refuses in one line, replaying nothing, and says to run the restore again."""
    import uuid
    restore_target(store, "db2")
    logs2 = pathlib.Path(store.db_show("db2")["logs"])
    pending = logs2 / "_restoredLogs"
    p = Paused(store, ["restore", "db1", "--repo", repo, "--to", "db2"], "OMBRA_RESTORE_PAUSE", "edb")
    assert p.reached, p.first
    [env] = pending.glob("*restore.env")
    first, last = json.loads(env.read_text())["laid_range"]
    store.proc.send_signal(signal.SIGSTOP)  # no replay: the PostRestore waits
    p.p.send_signal(signal.SIGCONT)
    end = time.monotonic() + 60
    while len([x for x in os.listdir(pending) if GEN_NAME.fullmatch(x)]) < last - first + 1:
        assert time.monotonic() < end and p.p.poll() in (None, 1), "the generations were not laid"
        time.sleep(0.02)
    p.kill9()
    store.kill9()
    store.start()
    text = env.read_text()
    assert json.loads(text)["logs_unsynced_boot"] == boot_id()
    m = store.ombra("db", "mount", "db2", check=False)
    assert m.rc == 1 and "-506" in m.err, m.describe()
    # as after a restart of the machine
    env.write_text(json.dumps(dict(json.loads(text), logs_unsynced_boot=str(uuid.uuid4()))))
    r = store.ombra("dbutil", "recover", logs2, check=False)
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.describe()
    assert "restarted since" in r.err and "HINT: run the same ombra restore again" in r.err, r.err
    edb = store.db_show("db2")["edb"]
    assert json.loads(store.ombra("dbutil", "header", edb, "--json").out)["state"] != "Clean Shutdown"
    # a .env whose boot is no string (edited, or damaged): never taken as "synced"
    for bad in (12345, True, [boot_id()], {}):
        env.write_text(json.dumps(dict(json.loads(text), logs_unsynced_boot=bad)))
        r = store.ombra("dbutil", "recover", logs2, check=False)
        assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.describe()
        assert "logs_unsynced_boot" in r.err and str(env) in r.err, r.err
    assert json.loads(store.ombra("dbutil", "header", edb, "--json").out)["state"] != "Clean Shutdown"
    # in the boot that laid them
    env.write_text(text)
    r = store.ombra("dbutil", "recover", logs2)
    assert "Clean Shutdown" in r.out, r.describe()
    assert not pending.exists()
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == chain3["digest"]


@pytest.mark.parametrize("how", ["--until-time", "--no-roll-forward"])
def test_a_restore_to_a_point_cut_off_and_finished_by_dbutil_recover_stops_at_its_point(store, repo, how):
    """The restore's .env says where its replay ends: dbutil recover, which the HINT of a
    restore without replay names, finishes a restore to a point in time (into another database) or without roll forward
    (over the original) where the restore would have stopped. It replayed every log there: the
    mail after the point came back, and it said the restore was done."""
    import datetime
    store.ombra("db", "new", "db1")
    load(store, "db1", 300)
    backup(store, repo, "full")
    load(store, "db1", 100, seed=2)
    backup(store, repo, "incremental")
    before = store.digest("db1")
    time.sleep(1.1)
    point = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(1.1)
    load(store, "db1", 100, seed=3)
    if how == "--until-time":
        backup(store, repo, "incremental")
        target, args = "db2", ["--until-time", point, "--to", "db2"]
        store.ombra("db", "new", "db2")
    else:  # the later mail stays in the original's log folder only
        target, args = "db1", ["--no-roll-forward"]
    after = store.digest("db1")
    dismount_for_restore(store, target)
    # laid down whole and not replayed (a restore killed at any point before its last
    # generation is refused by dbutil recover: test_restore_safety), then finished by dbutil
    store.ombra("restore", "db1", "--repo", repo, *args, "--no-replay")
    r = store.ombra("dbutil", "recover", store.db_show(target)["logs"])
    end = time.time() + 30
    while True:  # the coordinator ends the dead restore's session (the kill -9 test above)
        m = store.ombra("db", "mount", target, check=False)
        if m.rc == 0 or time.time() > end:
            break
        time.sleep(0.2)
    assert m.rc == 0, m.describe()
    assert store.digest(target) == before != after
    assert "stopping where the restore asked" in r.out, r.describe()


def fd_targets(pid):
    """{descriptor: what its /proc link reads} of the process, those closed meanwhile left out."""
    out = {}
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            out[fd.name] = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
    return out


def held_as(pid, *names):
    """The store's descriptors whose /proc link reads one of names."""
    return [fd for fd, target in fd_targets(pid).items() if target in names]


def held_deleted(pid, edb):
    """The store's descriptors of edb's inode after it was replaced (/proc shows "(deleted)")."""
    return held_as(pid, f"{edb} (deleted)")


def test_the_replaced_edb_is_freed_by_the_store_after_the_answer_not_by_the_restore(store, repo, chain3):
    """A restore over a database replaces its .edb; freeing the old file's blocks (seconds on a
    disk mounted with discard) is not on the restore's way: the store holds the old file from
    PreRestore, so the requester's close of it is not the last, and closes it on a thread once the
    session lets the restore go. The old file is held while the writer replays, and nothing holds
    it after the restore, whether it succeeded or failed (no descriptor left behind)."""
    info = store.db_show("db1")
    edb = info["edb"]
    dismount_for_restore(store, "db1")
    old_inode = os.stat(edb).st_ino
    p = Paused(store, ["restore", "db1", "--repo", repo, "--mount"], "OMBRA_RESTORE_PAUSE", "replaying")
    assert p.reached, p.first
    try:
        # the requester put the new .edb in place and stopped as the writer's replay began
        assert os.stat(edb).st_ino != old_inode
        assert held_deleted(store.proc.pid, edb), "the store does not hold the replaced .edb"
    finally:
        r = p.resume()
    assert r.rc == 0, r.describe()
    assert store.digest("db1") == chain3["digest"]
    end = time.monotonic() + 10
    while held_deleted(store.proc.pid, edb) and time.monotonic() < end:
        time.sleep(0.05)
    assert not held_deleted(store.proc.pid, edb), "the replaced .edb is still held after the restore"
    # a restore that fails after PreRestore (a damaged block of the .edb) lets it go too
    store.ombra("db", "dismount", "db1")
    damage_a_pack(repo)
    r = restore(store, repo, "db1", check=False)
    assert r.rc == 1 and "file" in r.err, r.describe()
    end = time.monotonic() + 10
    while held_deleted(store.proc.pid, edb) and time.monotonic() < end:
        time.sleep(0.05)
    assert not held_deleted(store.proc.pid, edb)
    held = [t for t in fd_targets(store.proc.pid).values()
            if t.startswith(str(pathlib.Path(edb).parent))]
    assert not any(h.endswith("(deleted)") for h in held), held


def held_edb(pid, edb):
    """The store's descriptors of edb, the file there now or one it replaced."""
    return held_as(pid, edb, f"{edb} (deleted)")


def let_go(store, edb, seconds=10, held=held_edb):
    """Whether the store holds no descriptor of edb (by held) within seconds."""
    end = time.monotonic() + seconds
    while held(store.proc.pid, edb) and time.monotonic() < end:
        time.sleep(0.05)
    return not held(store.proc.pid, edb)


@pytest.mark.parametrize("stage", STAGES)
def test_a_requester_killed_at_any_stage_leaves_no_descriptor_of_the_edb_in_the_store(store, repo, chain3, stage):
    """The .edb the store holds from PreRestore is let go when the dead requester's session ends,
    whether the restore replaced it by then or not; a retry then holds and lets go the same way."""
    info = store.db_show("db1")
    edb = info["edb"]
    dismount_for_restore(store, "db1")
    p = Paused(store, ["restore", "db1", "--repo", repo], "OMBRA_RESTORE_PAUSE", stage)
    assert p.reached, p.first
    assert held_edb(store.proc.pid, edb), "the store holds no .edb at " + stage
    p.kill9()
    assert let_go(store, edb, 30), f"held after a kill at {stage}"
    r = restore_once_free(store, repo, "db1", "--mount")
    assert r.rc == 0, r.describe()
    assert store.digest("db1") == chain3["digest"]
    assert let_go(store, edb, held=held_deleted), "the .edb the retry replaced is held"


# Two stages (each stop waits about 5 s for the paused requester's idle connection): the .edb
# held before anything is laid, and held while the writer replays.
@pytest.mark.parametrize("stage", ["prepared", "replaying"])
def test_a_store_stopped_mid_restore_exits_with_the_edb_let_go(store, repo, chain3, stage):
    """SIGTERM while a restore is paused after PreRestore: the store stops (its writer aborts the
    session and closes what it held), cleanly, and starts again to a restore that succeeds."""
    info = store.db_show("db1")
    dismount_for_restore(store, "db1")
    p = Paused(store, ["restore", "db1", "--repo", repo, "--mount"], "OMBRA_RESTORE_PAUSE", stage)
    assert p.reached, p.first
    assert held_edb(store.proc.pid, info["edb"])
    rc = store.stop()
    p.kill9()
    assert rc == 0, store.stderr()
    store.start()
    if not store.db_show("db1")["mounted"]:  # at laid the writer may have finished and mounted it
        r = restore(store, repo, "db1", "--mount", check=False)
        assert r.rc == 0, r.describe()
    assert store.digest("db1") == chain3["digest"]


def test_additional_restores_new_paths_and_refusals_hold_no_edb_after_them(store, repo, chain3, tmp_path):
    store.ombra("db", "new", "db2")
    edb2 = store.db_show("db2")["edb"]
    dismount_for_restore(store, "db2")
    restore(store, repo, "db1", "--set", chain3["inc1"][:12], "--to", "db2", "--no-replay")
    assert let_go(store, edb2), "held after a restore without replay"
    # the next one continues it: PreRestore holds the .edb the first one laid
    p = Paused(store, ["restore", "db1", "--repo", repo, "--set", chain3["inc2"][:12], "--to", "db2"],
               "OMBRA_RESTORE_PAUSE", "replaying")
    assert p.reached, p.first
    assert held_deleted(store.proc.pid, edb2)
    r = p.resume()
    assert r.rc == 0, r.describe()
    assert let_go(store, edb2)
    # new paths: nothing there to hold; refused over a file the restore did not make
    edb = tmp_path / "new" / "x.edb"
    restore(store, repo, "db1", "--edb", edb, "--logs", tmp_path / "new" / "logs")
    assert let_go(store, str(edb))
    r = restore(store, repo, "db1", "--edb", edb, "--logs", tmp_path / "new" / "logs2", check=False)
    assert r.rc != 0 and "is there already" in r.err, r.describe()
    assert let_go(store, str(edb))


def cached_bytes(path):
    """The bytes of path in the page cache (util-linux's fincore)."""
    r = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                       capture_output=True, text=True, check=True)
    return int(r.stdout.strip())


def test_a_restore_drops_the_replaced_edbs_pages_from_the_page_cache(store, repo, chain3):
    """The target's .edb a restore replaces was all in the page cache after a digest of it, and
    with its pages there the replay's writes into the new file took twice the CPU (a 1 GB chain:
    replay 0.9-1.05 s against 0.45 s; docs/design.md, Restore): the store drops them at
    PreRestore (on a thread), before a byte is laid. The restore still gives the digest."""
    if not shutil.which("fincore"):
        pytest.skip("fincore (util-linux) is not installed")
    if subprocess.run(["stat", "-f", "-c", "%T", str(store.tmp)], capture_output=True,
                      text=True).stdout.strip() == "tmpfs":
        pytest.skip("on tmpfs the page cache is the file: nothing to drop")
    restore_target(store, "db2")
    restore(store, repo, "db1", "--to", "db2")
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == chain3["digest"]
    store.ombra("db", "dismount", "db2")
    edb = store.db_show("db2")["edb"]
    before = cached_bytes(edb)
    assert before > os.path.getsize(edb) // 2, f"{before} of {os.path.getsize(edb)} bytes cached"
    p = Paused(store, ["restore", "db1", "--repo", repo, "--to", "db2"], "OMBRA_RESTORE_PAUSE",
               "prepared")
    assert p.reached, p.first
    end = time.monotonic() + 10
    while cached_bytes(edb) > 0 and time.monotonic() < end:  # the old file, still at its name
        time.sleep(0.02)
    after = cached_bytes(edb)
    r = p.resume()
    assert r.rc == 0, r.describe()
    assert after == 0, f"{after} bytes of the replaced .edb stayed in the page cache ({before} before)"
    store.ombra("db", "mount", "db2")
    assert store.digest("db2") == chain3["digest"]
