"""The Debian package (issue 20), installed into a temporary root, never this machine's /usr and
/etc: `dpkg --root` unpacks it there (into its own dpkg database, which records the conffiles;
the maintainer scripts do not run: see below),
then the units verify in that root, `ombra --version` and the daemons run from it, the man pages
and the completion are where man and bash look, and /etc/ombra/ombra.conf is a conffile (an
upgrade keeps the administrator's edits).

Slow (make deb builds the package): marked `package`, left out of make test; `make
test-package` builds the .deb and runs this with OMBRA_DEB naming it. The maintainer scripts are
not run (they would need a whole system in the root: deb-systemd-helper, systemctl); what they
do is debhelper's and is checked here by content: units installed, none enabled."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

import unitcheck as units

pytestmark = pytest.mark.package
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deb():
    path = os.environ.get("OMBRA_DEB")
    if not path:
        pytest.skip("no OMBRA_DEB: make test-package builds the package and runs this")
    path = pathlib.Path(path)
    assert path.is_file(), f"OMBRA_DEB={path} does not exist"
    return path


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    """A temporary root with its own dpkg database, the package unpacked into it."""
    r = tmp_path_factory.mktemp("root")
    admin = r / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    (r / "var/log").mkdir()
    for f in ("status", "available"):
        (admin / f).write_text("")
    p = subprocess.run(["dpkg", f"--root={r}", f"--log={r}/var/log/dpkg.log", "--force-depends",
                        "--no-triggers", "--unpack", str(deb)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"dpkg --root {r} --unpack {deb}:\n{p.stdout}\n{p.stderr}"
    return r


def test_package_version_is_the_projects(deb):
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    meson = re.search(r"version : '([^']+)'", (ROOT / "meson.build").read_text()).group(1)
    assert version.split("-")[0] == meson


def test_package_depends_on_libcurl4_which_no_program_links(deb, root):
    """The etcd client loads libcurl at run time (dlopen), so the package names it itself."""
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                             text=True, check=True).stdout
    assert re.search(r"(^|, )libcurl4 \(>= 7\.85\.0\)(,|$)", depends.strip()), depends
    for prog in ("ombra", "ombra-store", "ombra-repld"):
        needed = subprocess.run(["readelf", "-d", str(root / "usr/bin" / prog)],
                                capture_output=True, text=True, check=True).stdout
        assert "libcurl" not in needed, f"{prog} links libcurl:\n{needed}"


def test_files_in_their_places(root):
    for f in ("usr/bin/ombra", "usr/bin/ombra-store", "usr/bin/ombra-vssd", "usr/bin/ombra-repld",
              "usr/share/bash-completion/completions/ombra",
              "usr/share/man/man1/ombra.1.gz", "usr/share/man/man1/ombra-backup.1.gz",
              "usr/share/man/man8/ombra-store.8.gz", "usr/share/doc/ombra/copyright"):
        assert (root / f).is_file(), f"/{f} is not in the package"
    for u in units.UNITS:
        assert (root / "lib/systemd/system" / u).is_file(), f"{u} is not in /lib/systemd/system"


def test_configuration_is_a_conffile(root):
    """dpkg's database in the root lists /etc/ombra/ombra.conf among the package's conffiles, and
    unpacking left it as ombra.conf.dpkg-new, as dpkg does with a conffile until the package is
    configured (an upgrade then keeps the administrator's edits, or asks)."""
    status = (root / "var/lib/dpkg/status").read_text()
    assert re.search(r"^Conffiles:\n(?: .*\n)*? /etc/ombra/ombra\.conf (newconffile|[0-9a-f]{32})$",
                     status, re.M), status
    conf = root / "etc/ombra/ombra.conf.dpkg-new"
    assert conf.read_text() == (ROOT / "dist/ombra.conf").read_text()


def test_units_verify_in_the_root(root):
    units.need_systemd_analyze()
    units.prepare_root(root)
    found = units.find_units(root)
    for name, path in found.items():
        assert units.exec_start(path)[0].startswith("/usr/bin/"), name
    rc, out = units.verify(root, found.values(), root / "usr/share/man")
    assert rc == 0 and out == "", f"systemd-analyze verify --root={root}: exit {rc}\n{out}"


def test_units_are_not_enabled_by_the_package(deb, tmp_path):
    """The administrator configures first: the maintainer scripts never enable a unit."""
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "ctl")], check=True)
    postinst = (tmp_path / "ctl/postinst").read_text()
    lines = [line.strip() for line in postinst.splitlines() if line.strip()]
    enables = [i for i, line in enumerate(lines) if line.startswith("deb-systemd-helper enable")]
    assert enables, postinst
    # Each enable only re-creates what the administrator had enabled (an upgrade).
    for i in enables:
        assert "was-enabled" in lines[i - 1] or "was-enabled" in lines[i - 2], lines[i - 2:i + 1]


def test_ombra_runs_from_the_root(root):
    p = subprocess.run([str(root / "usr/bin/ombra"), "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and re.match(r"ombra \d+\.\d+", p.stdout), (p.stdout, p.stderr)
    p = subprocess.run([str(root / "usr/bin/ombra"), "backup", "--help"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "--repo" in p.stdout


@pytest.mark.parametrize("unit,sock", [("ombra-store.service", "store.sock"),
                                       ("ombra-vssd.service", "vss.sock")])
def test_packaged_daemon_runs_with_its_units_command_line(root, unit, sock, tmp_path):
    argv = units.exec_start(root / "lib/systemd/system" / unit)
    argv[0] = str(root / argv[0].lstrip("/"))
    # The packaged configuration, as dpkg left it before configure (/etc/ombra/ombra.conf).
    rc, log, _ = units.run_like_unit(argv, tmp_path, sock, root / "etc/ombra/ombra.conf.dpkg-new")
    assert rc == 0, f"{argv} exited {rc} after SIGTERM:\n{log}"


def test_man_finds_the_pages_in_the_root(root):
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    env = dict(os.environ, MANPATH=str(root / "usr/share/man"), MANWIDTH="80", MANPAGER="cat",
               PAGER="cat", LC_ALL="C.UTF-8")
    for page, says in ((["1", "ombra-backup"], "ombra backup"), (["8", "ombra-store"], "--foreground"),
                       (["1", "ombra"], "ombra db")):
        p = subprocess.run(["man", "--warnings"] + page, capture_output=True, text=True, env=env)
        text = p.stdout.replace("\u2010", "-").replace("\u2212", "-")
        assert p.returncode == 0 and p.stderr == "" and says in text, (page, p.stderr)


def test_bash_completion_from_the_root(root):
    script = (f"source {root}/usr/share/bash-completion/completions/ombra\n"
              "COMP_WORDS=(ombra backup --rep); COMP_CWORD=2; _ombra; echo \"${COMPREPLY[*]}\"\n")
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert p.stdout.strip() == "--repo", (p.stdout, p.stderr)


def test_from_the_package_to_the_first_scheduled_backup(root, tmp_path):
    """What an administrator does after dpkg -i, with the packaged binaries and the packaged
    configuration file edited as the README says: repository, database, schedule, timer, run,
    check. systemd itself is not here: the timer is verified, and its service's command line
    is run as systemd would run it."""
    import json
    import time
    bin_ = root / "usr/bin"
    conf = tmp_path / "ombra.conf"
    packaged = (root / "etc/ombra/ombra.conf.dpkg-new").read_text()
    # the administrator's edits: directories (here in the test's folder), a repository, schedules
    edited = packaged.replace("#data-dir = /var/lib/ombra", f"data-dir = {tmp_path}/data")
    edited = edited.replace("#runtime-dir = /run/ombra", f"runtime-dir = {tmp_path}/run")
    edited = edited.replace("#default-repo = main", "default-repo = main")
    edited += f"""
[repo:main]
path = {tmp_path}/backup
passphrase-file = {tmp_path}/main.passphrase
keep-last = 3

[schedule:daily]
databases = mail1
type = full
calendar = *-*-* 01:00:00
randomized-delay = 30m
"""
    conf.write_text(edited)
    (tmp_path / "main.passphrase").write_text("a long passphrase for the test\n")
    (tmp_path / "main.passphrase").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMBRA_")}
    env["OMBRA_CONFIG"] = str(conf)

    def ombra(*args, check=True):
        p = subprocess.run([str(bin_ / "ombra"), *map(str, args)], env=env, capture_output=True,
                           text=True, timeout=120)
        assert not check or p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
        return p

    daemons = [subprocess.Popen([str(bin_ / d), "--foreground"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for d in ("ombra-vssd", "ombra-store")]
    try:
        for _ in range(200):
            if (tmp_path / "run/store.sock").exists() and (tmp_path / "run/vss.sock").exists():
                break
            time.sleep(0.05)
        ombra("repo", "init", "--encrypt")  # the default repository, its passphrase-file
        ombra("db", "new", "mail1")
        ombra("mail", "load", "mail1", "--mailboxes", "2", "--messages", "20", "--size", "2000")
        units_dir = tmp_path / "units"
        units_dir.mkdir()
        ombra("schedule", "write", "--unit-dir", units_dir)
        timer = units_dir / "ombra-schedule-daily.timer"
        service = units_dir / "ombra-schedule-daily.service"
        assert "OnCalendar=*-*-* 01:00:00" in timer.read_text()
        if shutil.which("systemd-analyze"):
            for u in (timer, service):
                p = subprocess.run(["systemd-analyze", "verify", str(u)], capture_output=True,
                                   text=True, timeout=60)
                assert p.returncode == 0, p.stderr
        # systemd starts the timer's service: its ExecStart, as written
        argv = units.exec_start(service)
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, (argv, p.stdout, p.stderr)
        sets = json.loads(ombra("backups", "list", "--json").stdout)["sets"]
        assert [s["type"] for s in sets] == ["full"], sets
        assert ombra("check").returncode == 0
        m = ombra("metrics").stdout
        assert 'ombra_backup_last_run_success{database="mail1",type="full"' in m, m
    finally:
        for d in daemons:
            d.terminate()
            d.wait(timeout=30)
