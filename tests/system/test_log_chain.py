"""One log chain (engine/log.h): the same damaged log folder gets the same error from soft
recovery (`dbutil recover`), the check library (`dbutil check-set`) and `dbutil logs`, one error
per cause, in the chain's order of checks. Each case damages one needed generation of a
database left in Dirty Shutdown by kill -9 (or two: a file that is both another database's and
out of sequence is named for the database)."""
import json
import os
import shutil

import pytest

from test_dbutil import crashed_db, flip_byte, gen_file, run


@pytest.fixture(scope="module")
def ombra_bin(build_dir):
    return build_dir / "src" / "cli" / "ombra"


def numbered(d):
    return sorted(int(p.name[3:11], 16) for p in (d / "logs").glob("E00????????.log"))


def needed_from(ombra_bin, d):
    h = json.loads(run(ombra_bin, "dbutil", "header", d / "mail.edb", "--json", check=0).stdout)
    return h["log_required"][0]


@pytest.fixture(scope="module")
def two_dbs(tmp_path_factory, engine_loop, ombra_bin):
    """Two databases (so two log streams), each killed with -9 after 6 generations or more; a
    is killed again (it recovers and goes on) until its first needed generation g has a
    finished successor, so g + 1 and g + 2 (or E00.log) are there to damage."""
    base = tmp_path_factory.mktemp("chain")
    for name in ("a", "b"):
        (base / name).mkdir()
        crashed_db(engine_loop, base / name, 0.5, min_gens=6)  # checkpoints every 4
    a = base / "a"
    for _ in range(10):
        lo = needed_from(ombra_bin, a)
        if lo and {lo, lo + 1} <= set(numbered(a)):
            return base
        crashed_db(engine_loop, a, 0.3 + 0.2 * _)
    pytest.skip(f"the killed database never had a needed generation with a finished successor: {numbered(a)}")


@pytest.fixture(scope="module")
def victim(two_dbs, ombra_bin):
    return needed_from(ombra_bin, two_dbs / "a")


def last_data_slot(path):
    data = path.read_bytes()
    slots = [i for i in range(1, 256) if any(data[i * 4096:(i + 1) * 4096])]
    return max(slots)


# ---- the damage, one function per cause: (folder a, folder b, g, engine_loop) -> file named ----

def cut_short(a, b, g, tool):
    os.truncate(gen_file(a, g), 700000)
    return gen_file(a, g)


def damaged_header(a, b, g, tool):
    flip_byte(gen_file(a, g), 40)
    return gen_file(a, g)


def theirs(b, g):
    """b's generation g, or its newest: another database's file under g's name is named for the
    database, whatever generation it holds."""
    return gen_file(b, g) if gen_file(b, g).exists() else gen_file(b, numbered(b)[-1])


def another_database(a, b, g, tool):
    shutil.copy(theirs(b, g), gen_file(a, g))
    return gen_file(a, g)


def another_stream(a, b, g, tool):
    run(tool, "loghdr", gen_file(a, g), "stream", check=0)
    return gen_file(a, g)


def misnamed(a, b, g, tool):
    x, y = gen_file(a, g), gen_file(a, g + 1)
    os.rename(x, a / "logs" / "swap")
    os.rename(y, x)
    os.rename(a / "logs" / "swap", y)
    return gen_file(a, g)


def out_of_sequence(a, b, g, tool):
    run(tool, "loghdr", gen_file(a, g + 1), "chain", check=0)
    return gen_file(a, g + 1)


def previous_cut_short(a, b, g, tool):
    """The last slot of g garbled: g looks as if it ended there (a torn flush), and only g + 1's
    header, which says where g ended, tells otherwise. The damaged file is g."""
    p = gen_file(a, g)
    s = last_data_slot(p)
    assert s > 1
    with open(p, "r+b") as f:
        f.seek(s * 4096 + 100)
        f.write(b"\x5a" * 200)
    return p


def damaged_data(a, b, g, tool):
    flip_byte(gen_file(a, g), 4096 + 99)  # slot 1, followed by later flushes
    return gen_file(a, g)


def another_database_out_of_sequence(a, b, g, tool):
    shutil.copy(theirs(b, g + 1), gen_file(a, g + 1))
    run(tool, "loghdr", gen_file(a, g + 1), "chain", check=0)
    return gen_file(a, g + 1)


def missing(a, b, g, tool):
    os.remove(gen_file(a, g + 1))
    return g + 1  # a gap names the generation: there is no file


def first_needed_missing(a, b, g, tool):
    os.remove(gen_file(a, g))
    return g


CASES = [
    (cut_short, "-541 LogFileSizeMismatch"),
    (damaged_header, "-501 LogFileCorrupt"),
    (another_database, "-539 DatabaseLogSetMismatch"),
    (another_stream, "-530 BadLogSignature"),
    (misnamed, "-513 LogGenerationMismatch"),
    (out_of_sequence, "-515 InvalidLogSequence"),
    (previous_cut_short, "-501 LogFileCorrupt"),
    (damaged_data, "-501 LogFileCorrupt"),
    (another_database_out_of_sequence, "-539 DatabaseLogSetMismatch"),
    (missing, "-528 MissingLogFile"),
    # Recovery needs it first (-543); dbutil logs, without the database, sees a gap only.
    (first_needed_missing, {"recover": "-543 RequiredLogFilesMissing",
                            "check-set": "-543 RequiredLogFilesMissing", "logs": "-528 MissingLogFile"}),
]


def callers(ombra_bin, d):
    """Each caller's one error line, as a user sees it. Recovery last: it changes the .edb."""
    edb, logs = d / "mail.edb", d / "logs"
    return {
        "check-set": run(ombra_bin, "dbutil", "check-set", "--edb", edb, "--logs", logs),
        "logs": run(ombra_bin, "dbutil", "logs", logs),
        "recover": run(ombra_bin, "dbutil", "recover", logs, "--edb", edb),
    }


@pytest.mark.parametrize("damage,error", CASES, ids=[c[0].__name__ for c in CASES])
def test_recovery_check_set_and_dbutil_name_the_same_error(two_dbs, victim, ombra_bin, engine_loop,
                                                            tmp_path, damage, error):
    a = tmp_path / "a"
    shutil.copytree(two_dbs / "a", a)
    named = damage(a, two_dbs / "b", victim, engine_loop)
    for who, r in callers(ombra_bin, a).items():
        want = error[who] if isinstance(error, dict) else error
        err = r.stderr.strip().split("\n")
        assert r.returncode == 1 and len(err) == 1 and want in err[0], f"{who}: {r.stdout}{r.stderr}"
        if isinstance(named, int):
            assert f"generation {named}" in err[0], f"{who} does not name generation {named}: {r.stderr}"
        else:
            assert named.name in err[0], f"{who} does not name {named.name}: {r.stderr}"


def test_an_intact_folder_passes_every_caller(two_dbs, ombra_bin, tmp_path):
    a = tmp_path / "a"
    shutil.copytree(two_dbs / "a", a)
    for who, r in callers(ombra_bin, a).items():
        assert r.returncode == 0, f"{who}: {r.stdout}{r.stderr}"
