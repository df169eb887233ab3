"""Writes held at a backup (issue 21): the held provider's freeze does not grow with the finished
log generations on disk, and one backup of every database of a server (`ombra backup --all`,
100 databases) freezes them all in one shadow copy, restores each to its digest, and a database
that fails in the middle fails alone without wedging anything.

The figures asserted are structural (what the freeze window did: links and copies made while
writes were held, from the coordinator's `freeze` report), with generous time bounds: this
machine is shared and noisy."""
import json
import os
import pathlib
import socket
import struct
import subprocess

import pytest

from conftest import resume_when_stopped
from test_backup import backup, gens, load, sets


def roll(store, db, n):
    """n finished generations more: the log rolled through db.backup_prepare (what a passive
    copy's backup asks of the active), over one connection."""
    info = store.db_show(db)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(store.sock))

    def exactly(k):
        b = b""
        while len(b) < k:
            c = s.recv(k - len(b))
            assert c, "the store closed the connection"
            b += c
        return b

    req = json.dumps({"op": "db.backup_prepare", "db": db, "id": info["id"], "type": "copy"}).encode()
    for _ in range(n):
        s.sendall(struct.pack("<I", len(req)) + req)
        (k,) = struct.unpack("<I", exactly(4))
        rep = json.loads(exactly(k))
        assert rep.get("ok"), rep
    s.close()


@pytest.fixture
def repo(store, vssd):
    r = store.tmp / "repo"
    store.ombra("repo", "init", r)
    return r


def shadow_set_of(repo, set_id):
    doc = json.loads((pathlib.Path(repo) / "sets" / f"{set_id}.json").read_text())
    return doc["components_document"]["set"]


def restored_digest(store, repo, db):
    store.ombra("db", "dismount", db)
    store.ombra("db", "set", db, "--allow-restore", "on")
    store.ombra("restore", db, "--repo", repo, "--mount")
    return store.digest(db)


@pytest.mark.slow_under_sanitizers
def test_the_held_freeze_does_not_grow_with_the_generations_on_disk(store, repo):
    store.ombra("db", "new", "db1")
    load(store, "db1", 100)
    _, small, _ = backup(store, repo, "copy", "db1")
    # 2,050 generations more (the figure); make test rolls 500: the freeze's report
    # shows the same nothing-linked, nothing-walked window at any number.
    n = int(os.environ.get("OMBRA_FREEZE_GENS", "2050"))
    roll(store, "db1", n)
    assert len(gens(store, "db1")) >= n
    digest = store.digest("db1")
    _, big, _ = backup(store, repo, "full", "db1")
    for r in (small, big):
        f = r["freeze"]
        # While writes were held: no link, no file created; the current log and the checkpoint
        # opened (or read), whatever the number of generations.
        assert f["held_new_named"] and f["links"] == 0 and f["copies"] <= 2, f
        assert f["bytes_copied"] <= 64 * 1024, f
        assert r["freeze_ms"] >= max(f["writers_held_ms"], f["coordinator_ms"]) - 0.01, r
    assert big["freeze_ms"] < 1000, big  # 26 ms before, 0.5 ms now (bench); a loaded CI here
    # the shadow copy held every generation the full backup needed, as at the freeze
    assert store.ombra("verify", "--repo", repo, check=False).rc == 0
    assert restored_digest(store, repo, "db1") == digest


@pytest.mark.slow_under_sanitizers
def test_backup_all_of_100_databases_in_one_shadow_copy(store, repo):
    names = [f"m{i:03}" for i in range(100)]
    for n in names:
        store.ombra("db", "new", n)
    for n in names[::20]:
        load(store, n, 20, seed=len(n))
    digests = {n: store.digest(n) for n in names[::33]}
    r = store.ombra("backup", "--repo", repo, "--type", "full", "--provider", "held", "--all", "--json")
    res = json.loads(r.out)
    assert sorted(d["name"] for d in res["databases"]) == names
    assert len(res["sets"]) == 100 and not res["failed"], res["failed"]
    assert len({shadow_set_of(repo, s["id"]) for s in res["sets"]}) == 1  # one shadow copy
    f = res["freeze"]
    assert f["paths"] >= 100 and f["links"] == 0 and f["copies"] <= 200, f
    assert 0 < res["freeze_ms"] < 3000, res["freeze_ms"]  # 5-8 ms in the bench; a loaded CI here
    text = store.ombra("backup", "--repo", repo, "--type", "copy", "--all")
    assert "writes held" in text.out
    assert store.ombra("verify", "--repo", repo, check=False).rc == 0
    for n, d in digests.items():
        assert restored_digest(store, repo, n) == d, n


def test_a_database_failing_in_the_middle_of_all_fails_alone(store, repo):
    names = ["a1", "a2", "a3"]
    for n in names:
        store.ombra("db", "new", n)
        load(store, n, 30)
    store.ombra("db", "new-recovery", "rec", "--edb", store.tmp / "rec" / "rec.edb", "--logs", store.tmp / "rec")
    p = subprocess.Popen([str(store.cli), "backup", "--repo", str(repo), "--type", "full", "--provider", "held",
                          "--all", "--json"], env=dict(store.env, OMBRA_BACKUP_PAUSE="snapshot"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("paused snapshot")
    edb = store.db_show("a2")["edb"]
    sh = [s for s in json.loads(store.ombra("vss", "shadows", "--json").out)["shadows"]
          if edb.startswith(s["original"] + "/")][0]
    # the held shadow links the original .edb: put a damaged copy in its place in the shadow
    copy = pathlib.Path(sh["exposed"]) / os.path.relpath(edb, sh["original"])
    data = bytearray(copy.read_bytes())
    data[3 * 32768 + 500:3 * 32768 + 502] = b"\xde\xad"
    os.chmod(copy.parent, 0o755)
    copy.unlink()
    copy.write_bytes(bytes(data))
    resume_when_stopped(p)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    res = json.loads(out)
    assert [f["database"]["name"] for f in res["failed"]] == ["a2"], res["failed"]
    assert "page 2: checksum mismatch" in res["failed"][0]["message"]
    assert sorted(s["database"]["name"] for s in res["sets"]) == ["a1", "a3"]
    assert sorted(d["name"] for d in res["databases"]) == names  # not the recovery database
    assert sorted(s["database"]["name"] for s in sets(store, repo)) == ["a1", "a3"]
    # nothing wedged: the writer is stable, and the next --all backs up all three
    writers = json.loads(store.ombra("vss", "writers", "--json").out)["writers"]
    assert all(w["state"] == "stable" for w in writers if w["connected"]), writers
    rc, again, err = backup(store, repo, "full", "--all")
    assert rc == 0 and len(again["sets"]) == 3, err
    # named beside --all is a usage error
    assert store.ombra("backup", "--repo", repo, "--type", "full", "--all", "a1", check=False).rc == 2
