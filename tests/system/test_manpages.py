"""The man pages and the bash completion (issue 20), generated at build time from the command
tables by `ombra --generate` (src/cli/cli_generate.c): every page formats without a warning
(groff -ww, man --warnings); every command and option `ombra ... --help` shows (the same
tables, another printer) is in its group's page; the daemons' hand-written pages carry every
option their --help lists; the completion completes groups, commands, options and choices in a
real bash."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen(build_dir):
    d = build_dir / "dist"
    if not (d / "ombra.1").exists():
        pytest.fail(f"no generated pages in {d}: run 'ninja -C {build_dir}'")
    return d


def ombra(build_dir, *args):
    p = subprocess.run([str(build_dir / "src/cli/ombra")] + list(args), capture_output=True,
                       text=True, timeout=60)
    return p


def groups(build_dir):
    """The groups `ombra --help` lists."""
    out = ombra(build_dir, "--help").stdout
    body = out.split("groups:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in body.splitlines() if line.strip()]


def commands(build_dir, group):
    """The commands `ombra GROUP --help` lists ("" for a group that is one command), with each
    one's options from its own --help: [(option, its help line)]."""
    out = ombra(build_dir, *group.split(), "--help").stdout
    if "commands:\n" not in out:  # a command group: its help is the command's
        names = [""]
    else:
        names = []
        for line in out.split("commands:\n", 1)[1].splitlines():
            m = re.match(rf"  ombra {re.escape(group)} (\S+)", line)
            if m:
                names.append(m.group(1))
    result = {}
    for name in names:
        args = group.split() + ([name] if name else []) + ["--help"]
        h = ombra(build_dir, *args).stdout
        opts = re.findall(r"^  (--[a-z][a-z0-9-]*)(?: \S+)?\s+(.*)$", h.split("options:\n", 1)[1],
                          re.M)
        result[name] = opts
    return result


def rendered(page):
    """The page as man shows it, as plain text, on one long line per paragraph."""
    p = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", "-rLL=300n", str(page)],
                       capture_output=True, text=True, check=True)
    text = p.stdout
    for c, a in (("\u2010", "-"), ("\u2212", "-"), ("\u2018", "`"), ("\u2019", "'"),
                 ("\u201c", '"'), ("\u201d", '"')):
        text = text.replace(c, a)
    return re.sub(r"\s+", " ", text)


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")


def all_pages(gen):
    return sorted(gen.glob("*.1")) + sorted((ROOT / "dist/man").glob("*.8"))


@pytest.mark.slow_under_sanitizers  # groff and bash over every page: make test-long
def test_pages_format_without_warnings(gen):
    need("groff")
    pages = all_pages(gen)
    assert len(pages) >= 4
    for page in pages:
        p = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True,
                           text=True)
        assert p.returncode == 0 and p.stderr == "", f"groff -ww {page}:\n{p.stderr}"
        if shutil.which("man"):
            m = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True,
                               text=True, env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8",
                                                   MANPAGER="cat", PAGER="cat"))
            assert m.returncode == 0 and m.stderr == "", f"man --warnings {page}:\n{m.stderr}"


def test_a_page_per_group_and_the_index(build_dir, gen):
    need("groff")
    names = groups(build_dir)
    assert "backup" in names and "db" in names
    index = rendered(gen / "ombra.1")
    for g in names:
        assert (gen / f"ombra-{g}.1").is_file(), f"no page for group {g}"
        assert f"ombra {g} (ombra-{g}(1))" in index, f"ombra(1) does not list {g}"


@pytest.mark.slow_under_sanitizers  # groff and bash over every page: make test-long
def test_every_command_and_option_is_in_its_groups_page(build_dir, gen):
    need("groff")
    for g in groups(build_dir):
        text = rendered(gen / f"ombra-{g}.1")
        sub = {"db": ["copy"]}.get(g, [])  # `ombra db copy ...` is documented in ombra-db(1)
        for cmdgroup in [g] + [f"{g} {s}" for s in sub]:
            for name, opts in commands(build_dir, cmdgroup).items():
                usage = f"ombra {cmdgroup}{' ' + name if name else ''}"
                assert usage in text, f"ombra-{g}(1) lacks {usage!r}"
                for o, help in opts:
                    assert f"{o} " in text or f"{o}]" in text, f"ombra-{g}(1) lacks {usage} {o}"
                    assert help in text, f"ombra-{g}(1) lacks the help of {usage} {o}: {help!r}"


def test_generator_refuses_a_page_list_that_is_not_the_tables(build_dir, tmp_path):
    """The build declares the pages it installs (dist/meson.build): a group added to the table
    without its page there fails the build, naming the page."""
    p = ombra(build_dir, "--generate", "man", str(tmp_path), "ombra.1", "ombra-db.1")
    assert p.returncode == 1 and "ombra-mail.1" in p.stderr and "dist/meson.build" in p.stderr, p
    p = ombra(build_dir, "--generate", "man", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "ombra-backup.1").is_file()


@pytest.mark.parametrize("daemon", ["ombra-store", "ombra-vssd", "ombra-repld"])
def test_daemon_page_has_every_option_of_its_help(build_dir, daemon):
    need("groff")
    out = subprocess.run([str(build_dir / "src/daemons" / daemon), "--help"], capture_output=True,
                         text=True).stdout
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", out))
    assert "--foreground" in opts
    text = rendered(ROOT / "dist/man" / f"{daemon}.8")
    missing = sorted(o for o in opts if o not in text)
    assert not missing, f"dist/man/{daemon}.8 lacks {missing} (from {daemon} --help)"


# ---- bash completion ----

def complete(gen, *words):
    """What bash offers for the command line words (the last one being completed)."""
    script = (f"source {gen / 'ombra'}\n"
              "COMP_WORDS=(\"$@\"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
              "_ombra\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    p = subprocess.run(["bash", "-c", script, "bash"] + list(words), capture_output=True,
                       text=True, cwd=str(ROOT))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return sorted(w for w in p.stdout.splitlines() if w)


def test_completion_completes_groups_commands_options_and_choices(gen):
    need("bash")
    assert complete(gen, "ombra", "ba") == ["backup", "backups"]
    assert complete(gen, "ombra", "backup", "--re") == ["--read-all", "--read-all-every", "--repo"]
    assert complete(gen, "ombra", "backups", "l") == ["list"]
    assert complete(gen, "ombra", "db", "copy", "su") == ["suspend"]
    assert complete(gen, "ombra", "db", "copy", "status", "--js") == ["--json"]
    assert complete(gen, "ombra", "db", "set", "x", "--mount-dial", "") == ["best", "good",
                                                                            "lossless"]
    # A path value (PATH, or NAME|PATH: a name is not a choice) completes file names; a number
    # nothing.
    assert "README.md" in complete(gen, "ombra", "backup", "--repo", "READ")
    assert complete(gen, "ombra", "backup", "--threads", "") == []
    assert complete(gen, "ombra", "nosuchgroup", "--") == []


@pytest.mark.slow_under_sanitizers  # groff and bash over every page: make test-long
def test_completion_knows_every_command_of_every_group(build_dir, gen):
    need("bash")
    offered = complete(gen, "ombra", "")
    for g in groups(build_dir):
        assert g in offered
        names = [n for n in commands(build_dir, g) if n]
        if names:
            assert set(names) <= set(complete(gen, "ombra", g, "")), g
            for name, opts in commands(build_dir, g).items():
                assert set(o for o, _ in opts) <= set(complete(gen, "ombra", g, name, "--")), name
