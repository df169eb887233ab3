"""Fulls that read only what changed (docs/design.md, "Change tracking and synthetic fulls"): a
second full after new mail reads and stores only the pages the change map names and refers to
the previous full's blocks for the rest, and restores exactly like a full (the mail digest);
verify checks it and finds a damaged block it reuses; expire of the previous full keeps what it
references; every 4th full (configurable) reads every page, and so does a full after anything
that leaves the map untrusted, saying why (pages written to the .edb while the store was stopped, among others). A synthetic full laid down without replay equals its
shadow copy's .edb page for page, with mail arriving while it copies and a store killed between."""
import json
import os
import pathlib
import signal
import struct

import pytest

from conftest import Paused

PAGE = 32768


def load(store, n, seed):
    store.ombra("mail", "load", "db1", "--mailboxes", "20", "--messages", str(n), "--size", "6000",
                "--seed", str(seed))


@pytest.fixture
def repo(store, vssd):
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


def full(store, repo, *args):
    r = store.ombra("backup", "--repo", repo, "--type", "full", "--json", *args, "db1")
    s = json.loads(r.out)["sets"][0]
    return s


def restore_digest(store, repo, *args):
    info = store.db_show("db1")
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "set", "db1", "--allow-restore", "on")
    os.remove(info["edb"])
    store.ombra("restore", "db1", "--repo", repo, "--mount", *args)
    return store.digest("db1")


def test_second_full_reads_changed_pages_and_restores_exactly_also_after_expire(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 800, 1)
    f1 = full(store, repo)
    assert f1["changemap"]["read_all"] and "no earlier full" in f1["changemap"]["reason"], f1
    load(store, 40, 2)  # 5% new mail
    f2 = full(store, repo)
    cm = f2["changemap"]
    assert cm["read_all"] is False and cm["reused_from"] == f1["id"], f2
    assert 0 < cm["pages_checked_now"] < cm["pages_reused"], cm
    assert f2["bytes_stored"] < f1["bytes_stored"] / 4, (f1["bytes_stored"], f2["bytes_stored"])
    digest = store.digest("db1")
    # the set says what it vouches for, and how
    shown = json.loads(store.ombra("backups", "list", "--repo", repo, "--json").out)
    mine = [s for s in shown["sets"] if s["id"] == f2["id"]][0]
    assert mine["type"] == "full" and mine["changemap"]["reused_from"] == f1["id"], mine
    shown = store.ombra("backups", "show", f2["id"][:12], "--repo", repo).out
    assert f"reused from set {f1['id']}" in shown and f"pages checked now" in shown, shown
    store.ombra("verify", "--repo", repo)
    # the previous full expires: what the synthetic one references stays
    store.ombra("expire", "--repo", repo, "--keep-full", "1")
    store.ombra("verify", "--repo", repo)
    assert restore_digest(store, repo) == digest


def test_a_third_synthetic_full_builds_on_the_second_and_restores(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 600, 1)
    full(store, repo)
    load(store, 30, 2)
    f2 = full(store, repo)
    load(store, 30, 3)
    f3 = full(store, repo)
    assert not f3["changemap"]["read_all"] and f3["changemap"]["reused_from"] == f2["id"]
    digest = store.digest("db1")
    store.ombra("verify", "--repo", repo)
    assert restore_digest(store, repo) == digest


def test_every_fourth_full_reads_every_page_and_read_all_forces_it(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 300, 1)
    kinds = []
    for i in range(5):
        kinds.append(full(store, repo)["changemap"]["read_all"])
        load(store, 10, 10 + i)
    assert kinds == [True, False, False, False, True], kinds
    s = full(store, repo, "--read-all")
    assert s["changemap"]["read_all"] and "--read-all" in s["changemap"]["reason"]
    s = full(store, repo, "--read-all-every", "1")
    assert s["changemap"]["read_all"] and "read_all_every" in s["changemap"]["reason"]
    r = store.ombra("backup", "--repo", repo, "--type", "full", "db1")
    assert "synthetic full" in r.out and "reused from set" in r.out, r.out


def test_an_untrusted_map_means_a_full_that_reads_everything(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 300, 1)
    full(store, repo)
    load(store, 10, 2)
    d = store.digest("db1")
    # a restore puts another .edb in place: the map no longer vouches for it
    assert restore_digest(store, repo) != ""
    s = full(store, repo)
    assert s["changemap"]["read_all"] and "cannot be trusted" in s["changemap"]["reason"], s
    # the map removed while dismounted
    info = store.db_show("db1")
    store.ombra("db", "dismount", "db1")
    os.remove(os.path.join(info["logs"], "E00.cbt"))
    store.ombra("db", "mount", "db1")
    s = full(store, repo)
    assert s["changemap"]["read_all"] and "no change map" in s["changemap"]["reason"], s
    # and trusted again after that full
    load(store, 10, 3)
    s = full(store, repo)
    assert not s["changemap"]["read_all"], s
    assert d != store.digest("db1")


def test_verify_finds_a_damaged_block_a_synthetic_full_reuses(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 400, 1)
    f1 = full(store, repo)
    load(store, 20, 2)
    f2 = full(store, repo)
    assert not f2["changemap"]["read_all"]
    store.ombra("verify", "--repo", repo, f2["id"][:12])
    # damage the first full's biggest pack (its blocks are the synthetic full's slices)
    packs = sorted((p for p in (repo / "packs").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    with open(packs[-1], "r+b") as f:
        f.seek(packs[-1].stat().st_size // 2)
        f.write(b"\x00\xff\x00\xff" * 8)
    r = store.ombra("verify", "--repo", repo, f2["id"][:12], check=False)
    assert r.rc != 0 and f2["id"][:12] in (r.out + r.err), r.describe()


def restart(store, kill=False):
    """The store stopped (cleanly, or by kill -9) and started again, db1 mounted."""
    if kill:
        store.proc.send_signal(signal.SIGKILL)
        store.proc.wait()
    else:
        store.stop()
    store.start()
    if not store.db_show("db1")["mounted"]:
        store.ombra("db", "mount", "db1")


def test_a_store_killed_keeps_the_map_only_when_nothing_reached_the_edb_since_its_checkpoint(store, repo):
    # The map survives a clean stop and start, and a kill when nothing was written to the .edb
    # since the last E00.chk (which records the .edb's stamp). Killed while mail arrives (the
    # .edb grows between checkpoints), the next full reads everything and says why. Each full
    # restores exactly.
    store.ombra("db", "new", "db1")
    load(store, 400, 1)
    f0 = full(store, repo)
    load(store, 30, 2)
    restart(store)
    s0 = full(store, repo)
    assert not s0["changemap"]["read_all"] and s0["changemap"]["reused_from"] == f0["id"], s0
    load(store, 30, 5)
    store.ombra("db", "dismount", "db1")
    store.ombra("db", "mount", "db1")  # E00.chk written last; nothing after it
    restart(store, kill=True)
    s1 = full(store, repo)
    assert not s1["changemap"]["read_all"] and s1["changemap"]["reused_from"] == s0["id"], s1
    load(store, 20, 3)
    restart(store, kill=True)
    load(store, 20, 6)
    s = full(store, repo)
    cm = s["changemap"]
    assert not cm["read_all"] or "since its last checkpoint" in cm["reason"], s
    digest = store.digest("db1")
    assert restore_digest(store, repo) == digest


def page_list(b):
    return [b[i:i + PAGE] for i in range(0, len(b), PAGE)]


def test_a_page_written_to_the_edb_while_the_store_was_stopped_makes_the_next_full_read_everything(store, repo):
    # A tool (or an administrator's dd) puts an older version of one data page back while the
    # store is stopped, leaving the header and its map's token alone. The change map does not
    # name that page; a full that trusted it would reuse the earlier full's block for it and
    # vouch for a page it never read. The .edb's stamp that E00.chk recorded at the dismount
    # tells.
    store.ombra("db", "new", "db1")
    load(store, 300, 1)
    edb = pathlib.Path(store.db_show("db1")["edb"])
    store.ombra("db", "dismount", "db1")
    before = page_list(edb.read_bytes())
    store.ombra("db", "mount", "db1")
    load(store, 300, 2)
    f1 = full(store, repo)
    load(store, 10, 3)
    in_f1 = page_list(laid_edb(store, repo, f1["id"], "f1"))
    store.stop()
    now = page_list(edb.read_bytes())
    # a data page that changed before the full and not since: the map does not name it
    pick = next(n for n in range(2, min(len(before), len(in_f1), len(now)))
                if before[n] != in_f1[n] and in_f1[n] == now[n])
    with open(edb, "r+b") as f:
        f.seek(pick * PAGE)
        f.write(before[pick])
    store.start()
    if not store.db_show("db1")["mounted"]:
        store.ombra("db", "mount", "db1")
    s = full(store, repo)
    cm = s["changemap"]
    assert cm["read_all"] and "by something other than the store" in cm["reason"], s
    assert page_list(laid_edb(store, repo, s["id"], "f2"))[pick] == before[pick]


def test_a_log_folder_put_back_from_an_older_file_copy_never_reuses_stale_pages(store, repo):
    # An administrator restores the log folder (E00.cbt with it) from a file-level copy while
    # the .edb volume kept its newer pages: the old map names fewer pages than changed since the
    # full. Trusting it would make the next full reuse the first full's blocks for them.
    store.ombra("db", "new", "db1")
    load(store, 400, 1)
    f1 = full(store, repo)
    info = store.db_show("db1")
    cbt = os.path.join(info["logs"], "E00.cbt")
    load(store, 20, 2)
    store.ombra("db", "dismount", "db1")
    with open(cbt, "rb") as f:
        old = f.read()
    store.ombra("db", "mount", "db1")
    for seed in range(3, 9):
        load(store, 20, seed)
    store.ombra("db", "dismount", "db1")
    with open(cbt, "wb") as f:
        f.write(old)
    store.ombra("db", "mount", "db1")
    digest = store.digest("db1")
    s = full(store, repo)
    assert s["changemap"]["read_all"] and "token" in s["changemap"]["reason"], s
    assert f1["id"] != s["id"]
    assert restore_digest(store, repo) == digest


def shadow_edb(store, db):
    """The .edb of the held shadow copy of a backup paused at its snapshot: what the set stands
    for, byte for byte."""
    edb = store.db_show(db)["edb"]
    sh = [s for s in json.loads(store.ombra("vss", "shadows", "--json").out)["shadows"]
          if edb.startswith(s["original"] + "/")][0]
    return (pathlib.Path(sh["exposed"]) / os.path.relpath(edb, sh["original"])).read_bytes()


def laid_edb(store, repo, set_id, tag):
    d = store.tmp / f"laid-{tag}"
    store.ombra("restore", "db1", "--repo", repo, "--set", set_id[:12], "--edb", d / "x.edb",
                "--logs", d / "logs", "--no-replay")
    return (d / "x.edb").read_bytes()


def test_synthetic_fulls_lay_down_the_shadow_copys_pages_byte_for_byte(store, repo):
    # The digest tests above see the mail; this one sees every data page: each full is paused at
    # its snapshot, the shadow copy's .edb read, mail delivered while it copies (pages held and,
    # with a 1 MiB cache, spilled to the hold file, written back at the release), and the set
    # laid down without replay must equal it page for page. Between fulls: a store killed while
    # mail arrives (soft recovery writes the pages), an incremental, a remount.
    page = 32768
    store.stop()
    store.args = ["--cache-mb", "1"]
    store.start()
    store.ombra("db", "new", "db1")
    load(store, 400, 1)
    between = [lambda: None, lambda: load(store, 30, 2), lambda: kill_while_loading(store),
               lambda: store.ombra("backup", "--repo", repo, "--type", "incremental", "db1"),
               lambda: (store.ombra("db", "dismount", "db1"), store.ombra("db", "mount", "db1"))]
    kinds = []
    for i, step in enumerate(between):
        step()
        p = Paused(store, ["backup", "--repo", repo, "--type", "full", "--json", "--provider",
                           "held", "db1"], "OMBRA_BACKUP_PAUSE", "snapshot")
        assert p.reached, p.first
        want = shadow_edb(store, "db1")
        load(store, 200, 10 + i)  # more than the cache holds while writes are held
        r = p.resume()
        assert r.rc == 0, r.describe()
        s = json.loads(r.out)["sets"][0]
        kinds.append(s["changemap"]["read_all"])
        got = laid_edb(store, repo, s["id"], i)
        assert len(got) == len(want), (i, len(got), len(want))
        bad = [n for n in range(2, len(got) // page)
               if got[n * page:(n + 1) * page] != want[n * page:(n + 1) * page]]
        assert not bad, (i, s["changemap"], bad[:10])
    assert kinds.count(False) >= 3, kinds


def kill_while_loading(store):
    load(store, 30, 3)
    store.proc.send_signal(signal.SIGKILL)
    store.proc.wait()
    store.start()


@pytest.mark.parametrize("what", ["fifo", "link", "folder"])
def test_an_e00_cbt_that_is_no_regular_file_is_never_opened_or_written_through(store, repo, what):
    # A fifo there held the mount for ever (its open waits for a writer), and the store with it.
    store.ombra("db", "new", "db1")
    load(store, 100, 1)
    full(store, repo)
    info = store.db_show("db1")
    cbt = pathlib.Path(info["logs"]) / "E00.cbt"
    store.ombra("db", "dismount", "db1")
    cbt.unlink()
    victim = store.tmp / "victim"
    victim.write_bytes(b"not a change map")
    {"fifo": lambda: os.mkfifo(cbt), "link": lambda: cbt.symlink_to(victim),
     "folder": lambda: cbt.mkdir()}[what]()
    store.ombra("db", "mount", "db1", timeout=30)
    load(store, 20, 2)
    s = full(store, repo)
    why = s["changemap"].get("reason", "")
    assert s["changemap"]["read_all"] and ("not a regular file" in why or "could not be written" in why), s
    assert victim.read_bytes() == b"not a change map"
    d = store.digest("db1")
    assert restore_digest(store, repo) == d


def pack_records(repo):
    """What the pack files themselves hold: {(pack, block id): record bytes} (header and payload,
    walked record by record from each pack's 32-byte header) and {pack: file size}."""
    recs, sizes = {}, {}
    for f in sorted((repo / "packs").glob("??/*")):
        data = f.read_bytes()
        sizes[f.name] = len(data)
        assert data.startswith(b"OMBRAPAK"), f
        off = 32
        while off < len(data):
            magic, _flags, _raw, stored = struct.unpack_from("<4sIII", data, off)
            assert magic == b"OBK1", (f, off)
            recs[(f.name, data[off + 16:off + 48].hex())] = 56 + stored
            off += 56 + stored
        assert off == len(data), f
    return recs, sizes


def set_blocks(doc):
    """The stored blocks a set document's files use: each block of a file, a synthetic full's
    whole regions, and the blocks its sliced regions' pieces come from (a sliced region's own id
    is no stored block). (whole, sliced) sets of ids."""
    whole, sliced = set(), set()
    for f in doc["files"]:
        pieces = f.get("pieces") or {}
        for i in range(len(f["blocks"]) // 64):
            if str(i) in pieces:
                sliced |= {p.split(":")[0] for p in pieces[str(i)].split(",")}
            else:
                whole.add(f["blocks"][i * 64:(i + 1) * 64])
    return whole, sliced


def stats_against_the_files(store, repo):
    """repo stats --json, checked against the repository's files: every part of the stored bytes
    and each database's, computed here from the packs, the indexes and the set documents."""
    st = json.loads(store.ombra("repo", "stats", "--repo", repo, "--json").out)
    recs, sizes = pack_records(repo)
    indexed = {}  # block id -> record bytes, from the index files and the packs' own records
    for f in (repo / "index").glob("*.json"):
        idx = json.loads(f.read_text())
        for b in idx["blocks"]:
            indexed.setdefault(b[0], recs[(idx["pack"], b[0])])
    packs = {json.loads(f.read_text())["pack"] for f in (repo / "index").glob("*.json")}
    docs = [json.loads(f.read_text()) for f in (repo / "sets").glob("*.json")]
    used = set()
    for d in docs:
        used |= set().union(*set_blocks(d))
    assert used <= set(indexed), "every block a set uses is in a pack"
    assert st["bytes_on_disk"] == sum(sizes.values())
    assert st["bytes_used"] == sum(indexed[b] for b in used)
    assert st["bytes_unreferenced"] == sum(n for b, n in indexed.items() if b not in used)
    assert st["blocks_unreferenced"] == len(set(indexed) - used)
    indexed_records = sum(n for (p, b), n in recs.items() if p in packs and indexed.get(b) is not None)
    assert st["bytes_pack_overhead"] == sum(sizes[p] for p in packs) - indexed_records == 32 * len(packs)
    assert st["bytes_not_indexed"] == sum(n for p, n in sizes.items() if p not in packs)
    assert st["blocks_missing"] == 0
    assert (st["bytes_used"] + st["bytes_unreferenced"] + st["bytes_pack_overhead"] + st["bytes_not_indexed"]
            == st["bytes_on_disk"])
    assert sum(d["bytes_stored"] for d in st["databases"]) == st["bytes_used"]
    return st, indexed


def test_repo_stats_count_the_blocks_a_synthetic_full_slices_after_the_full_they_came_from_expired(store, repo):
    store.ombra("db", "new", "db1")
    load(store, 800, 1)
    f1 = full(store, repo)
    load(store, 40, 2)  # 5% new mail
    f2 = full(store, repo)
    assert f2["changemap"]["reused_from"] == f1["id"] and not f2["changemap"]["read_all"], f2
    first = json.loads((repo / "sets" / f"{f1['id']}.json").read_text())
    second = json.loads((repo / "sets" / f"{f2['id']}.json").read_text())
    whole, sliced = set_blocks(second)
    f1_blocks = set().union(*set_blocks(first))
    assert sliced & f1_blocks - whole, "the synthetic full uses blocks of the first full by slices only"
    st, _ = stats_against_the_files(store, repo)
    db = st["databases"][0]
    assert db["database"]["name"] == "db1" and db["sets"] == 2
    assert db["bytes_stored"] == db["bytes_referenced"] == f1["bytes_stored"] + f2["bytes_stored"]
    assert st["bytes_unreferenced"] == 0

    # the first full expires: the blocks the synthetic one slices stay, and still count for db1
    store.ombra("expire", "--repo", repo, "--keep-full", "1")
    assert not (repo / "sets" / f"{f1['id']}.json").exists()
    st, indexed = stats_against_the_files(store, repo)
    db = st["databases"][0]
    kept_from_f1 = (whole | sliced) & f1_blocks
    assert db["sets"] == 1 and db["bytes_stored"] == db["bytes_referenced"] == st["bytes_used"]
    # what the second full stored, and the first full's blocks it uses, whole or by a slice
    assert db["bytes_stored"] == f2["bytes_stored"] + sum(indexed[b] for b in kept_from_f1)
    assert sum(indexed[b] for b in sliced & f1_blocks - whole) > 0
    assert db["bytes_stored"] > f2["bytes_stored"]
    text = store.ombra("repo", "stats", "--repo", repo).out
    for part in ("used:", "unreferenced:", "pack overhead:", "not indexed:"):
        assert f"\n  {part}" in text, text
    assert "STORED" in text and "REFERENCED" in text, text
