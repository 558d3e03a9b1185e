"""Specification of a container's bind mounts in the launcher: the batches, the fstab files and the shell."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from pocketkube.node import launcher

M = launcher.Mount
CAN_MOUNT = launcher.probe_mounts(shutil.which("unshare")) == ""
needs_mounts = pytest.mark.skipif(not CAN_MOUNT, reason="mount namespaces with bind mounts are not permitted here")
ERR = "error mounting {src!r} to rootfs at {dst!r}: bind mount failed"


@pytest.mark.parametrize("mount, want", [
    (M("/v/a", "/etc/a", False), "/v/a /etc/a none bind 0 0\n"),
    (M("/v/a", "/etc/a", True), "/v/a /etc/a none bind,ro 0 0\n"),
    (M("/v/my dir", "/m n", False), "/v/my\\040dir /m\\040n none bind 0 0\n"),
    (M("/v/t\tab", "/n\nl", True), "/v/t\\011ab /n\\012l none bind,ro 0 0\n"),
    (M("/v/back\\slash", "/x\\040", False), "/v/back\\134slash /x\\134040 none bind 0 0\n"),
    (M("/v/#h", "/#c", False), "/v/\\043h /\\043c none bind 0 0\n"),
    (M("/v/c\rr", "/v\vt\ff", False), "/v/c\\015r /v\\013t\\014f none bind 0 0\n"),
])
def test_fstab_line(mount, want):
    """A bind is one fstab(5) line, its paths escaped in octal where the format would split or misread them."""
    assert launcher.fstab_line(mount) == want


SA = M("/p/sa", "/var/run/secrets/kubernetes.io/serviceaccount", True)
RESOLV = M("/p/resolv.conf", "/etc/resolv.conf", False)
TERM = M("/p/0.termination-log", "/dev/termination-log", False)
DATA = M("/p/data", "/data", False)
CFG = M("/p/cfg", "/data/cfg", True)
LOGS = M("/p/logs", "/data/cfg/logs/", False)


@pytest.mark.parametrize("mounts, mounted, fstab, want", [
    # The default pod's three binds: one batch, one mount process.
    ([SA, RESOLV, TERM], (), "/c/0.fstab", [((RESOLV, TERM, SA), "/c/0.fstab", (RESOLV, TERM, SA))]),
    # One plain bind is one process anyway: no file.
    ([RESOLV], (), "/c/0.fstab", [((RESOLV,), "", ())]),
    # A read-only one alone still saves the remount process.
    ([SA], (), "/c/0.fstab", [((SA,), "/c/0.fstab", (SA,))]),
    # A mount inside another's target comes in a later batch, after the outer one is mounted.
    ([CFG, DATA, RESOLV], (), "/c/1.fstab",
     [((DATA, RESOLV), "/c/1.fstab", (DATA, RESOLV)), ((CFG,), "/c/1.fstab.1", (CFG,))]),
    ([LOGS, CFG, DATA], (), "/c/1.fstab",
     [((DATA,), "", ()), ((CFG,), "/c/1.fstab.1", (CFG,)), ((LOGS,), "", ())]),
    # mount -a would skip a target that already has the same source mounted, read-only or not.
    ([SA, RESOLV, TERM], ("/etc/resolv.conf",), "/c/0.fstab", [((RESOLV, TERM, SA), "/c/0.fstab", (TERM, SA))]),
    ([SA, RESOLV], ("/var/run/secrets/kubernetes.io/serviceaccount",), "/c/0.fstab", [((RESOLV, SA), "", ())]),
    # No fstab path: every bind on its own, as before.
    ([SA, RESOLV, TERM], (), "", [((RESOLV, TERM, SA), "", ())]),
    ([], (), "/c/0.fstab", []),
])
def test_plan(mounts, mounted, fstab, want):
    """Binds go in batches by depth; a batch's fstab holds the ones one mount process can bind when that saves any."""
    got = launcher.plan(mounts, fstab=fstab, mounted=mounted)
    assert [(b.mounts, b.fstab, b.table) for b in got] == want


def test_launcher_runs_builtins_then_one_mount():
    """The shell guards mount point creation with builtins, binds a batch with one mount -a, and falls back."""
    batches = launcher.plan([SA, RESOLV, TERM], fstab="/c/0 x.fstab")
    script = launcher.launcher(batches, working_dir="/w", error_file="/c/0.error", started_file="/c/0.started")
    lines = script.splitlines()
    assert "dirname" not in script
    # The marker files through a descriptor of their directory, which no mount can hide; closed for the command.
    assert lines[0] == "exec 9< /c || exit 128"
    assert lines[1] == "fail() { printf '%s\\n' \"$1\" > /proc/self/fd/9/0.error; exit 128; }"
    assert lines[-2:] == [": > /proc/self/fd/9/0.started", 'exec "$@" 9<&-']
    assert lines[2] == ("if [ -d /p/resolv.conf ]; then [ -d /etc/resolv.conf ] || mkdir -p /etc/resolv.conf; "
                        "else [ -e /etc/resolv.conf ] || { { [ -d /etc ] || mkdir -p /etc; } && : > /etc/resolv.conf; }; "
                        "fi || fail 'error mounting '\"'\"'/p/resolv.conf'\"'\"' to rootfs at '\"'\"'/etc/resolv.conf'\"'\"': "
                        "cannot create mount point'")
    mount = [line for line in lines if "mount " in line and "mkdir" not in line]
    assert len(mount) == 1 and mount[0].startswith("mount -a -n -T '/c/0 x.fstab' 2>/dev/null || { mount --bind ")
    assert mount[0].count("mount --bind") == 3 and mount[0].count("mount -o remount,bind,ro") == 1
    assert "{ [ -d /w ] || mkdir -p /w; } && cd /w ||" in script


def run(tmp_path: pathlib.Path, mounts: list[launcher.Mount], *cmd: str,
        shims: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Write the binds' fstab files, then run the launcher under unshare as the process runtime does."""
    batches = launcher.write_fstabs(mounts, fstab=str(tmp_path / "0.fstab"))
    script = launcher.launcher(batches, working_dir="", error_file=str(tmp_path / "0.error"),
                               started_file=str(tmp_path / "0.started"))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if shims:
        # Each program named logs its name and runs the real one: counts what the launcher starts.
        bindir = tmp_path / "shims"
        bindir.mkdir(exist_ok=True)
        for prog in shims:
            real = shutil.which(prog, path=env["PATH"])
            (bindir / prog).write_text(f"#!/bin/sh\necho {prog} >> {tmp_path}/programs\nexec {real} \"$@\"\n")
            (bindir / prog).chmod(0o755)
        env["PATH"] = f"{bindir}:{env['PATH']}"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
                           "launcher", *cmd], capture_output=True, text=True, env=env, timeout=30, check=False)


def sources(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A directory with a file, a read-only directory with a file, and a file, some names with odd characters."""
    d, ro, f = tmp_path / "src dir", tmp_path / "ro\\src", tmp_path / "src file"
    d.mkdir()
    (d / "a").write_text("A")
    ro.mkdir()
    (ro / "k").write_text("K")
    f.write_text("F")
    return d, ro, f


@needs_mounts
def test_binds_dir_file_and_read_only_with_one_mount_process(tmp_path):
    """Directory, file and read-only binds appear in the container; once mount points exist, only mount runs."""
    d, ro, f = sources(tmp_path)
    root = tmp_path / "root"
    mounts = [M(str(d), f"{root}/data dir", False), M(str(ro), f"{root}/etc/conf\\ig", True),
              M(str(f), f"{root}/dev/term log", False)]
    check = (f'cat "{root}/data dir/a" "{root}/etc/conf\\ig/k" "{root}/dev/term log"; '
             f'touch "{root}/data dir/w" && ! touch "{root}/etc/conf\\ig/w" 2>/dev/null && echo " ok"')
    cp = run(tmp_path, mounts, "sh", "-c", check, shims=("mount", "mkdir", "dirname"))
    assert (cp.returncode, cp.stdout) == (0, "AKF ok\n"), cp.stderr
    assert (d / "w").exists() and not (ro / "w").exists()
    assert stat.S_ISREG(os.stat(f"{root}/dev/term log").st_mode) and os.path.isdir(f"{root}/etc/conf\\ig")
    # The first run made the mount points; the next finds them and starts one program.
    assert (tmp_path / "programs").read_text().split().count("mount") == 1
    (tmp_path / "programs").unlink()
    cp = run(tmp_path, mounts, "sh", "-c", check, shims=("mount", "mkdir", "dirname"))
    assert (cp.returncode, cp.stdout) == (0, "AKF ok\n"), cp.stderr
    assert (tmp_path / "programs").read_text().split() == ["mount"]
    assert (tmp_path / "0.started").exists() and not (tmp_path / "0.error").exists()


@needs_mounts
def test_nested_bind_lands_on_top(tmp_path):
    """A read-only bind inside another bind's target is mounted on top of it, its mount point in the outer source."""
    d, ro, f = sources(tmp_path)
    root = tmp_path / "root"
    mounts = [M(str(ro), f"{root}/data/cfg", True), M(str(d), f"{root}/data", False),
              M(str(f), f"{root}/term", False)]
    check = f'cat "{root}/data/cfg/k" "{root}/data/a" && ! touch "{root}/data/cfg/w" 2>/dev/null && echo " ok"'
    cp = run(tmp_path, mounts, "sh", "-c", check)
    assert (cp.returncode, cp.stdout) == (0, "KA ok\n"), cp.stderr
    assert (d / "cfg").is_dir() and not (root / "data" / "cfg").exists()


@needs_mounts
@pytest.mark.parametrize("missing", [0, 1])
def test_missing_source_fails_with_runc_message(tmp_path, missing):
    """A bind whose source is gone fails the start with the same message as before, and nothing runs."""
    d, ro, f = sources(tmp_path)
    root = tmp_path / "root"
    gone = str(tmp_path / "gone dir")
    mounts = [M(str(d), f"{root}/a", False), M(str(ro), f"{root}/b", True)]
    mounts[missing] = M(gone, mounts[missing].target, mounts[missing].read_only)
    cp = run(tmp_path, mounts, "sh", "-c", f"echo ran > {tmp_path}/ran")
    assert cp.returncode == launcher.START_ERROR_CODE
    assert (tmp_path / "0.error").read_text() == ERR.format(src=gone, dst=mounts[missing].target) + "\n"
    assert not (tmp_path / "ran").exists() and not (tmp_path / "0.started").exists()


@needs_mounts
def test_read_only_bind_over_an_existing_mount_of_the_same_source(tmp_path):
    """A target already bound to the same source (which mount -a would skip) is still made read-only."""
    d, _, _ = sources(tmp_path)
    dst = tmp_path / "dst"
    dst.mkdir()
    code = ("import subprocess, sys\n"
            "from pocketkube.node import launcher\n"
            f"m = [launcher.Mount({str(d)!r}, {str(dst)!r}, True), launcher.Mount({str(d)!r}, {str(dst)!r} + '2', True)]\n"
            f"b = launcher.write_fstabs(m, fstab={str(tmp_path / '0.fstab')!r})\n"
            f"s = launcher.launcher(b, working_dir='', error_file={str(tmp_path / '0.error')!r}, started_file='/dev/null')\n"
            f"sys.exit(subprocess.run(['/bin/sh', '-c', s, 'l', 'sh', '-c', 'touch {dst}/w']).returncode)\n")
    cp = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                         f'mount --bind "{d}" "{dst}" && exec "$0" -c "$1"', sys.executable, code],
                        capture_output=True, text=True, timeout=30, check=False, cwd=os.getcwd())
    assert cp.returncode != 0 and "Read-only file system" in cp.stderr, cp.stderr
    assert not (d / "w").exists()


@needs_mounts
def test_odd_characters_survive_the_fstab(tmp_path):
    """Paths with whitespace of every kind, '#' and backslashes bind where they say, read-only as asked."""
    odd = "#a b\tc\nd\re\vf\fg\\h"
    src, dst = tmp_path / f"s{odd}", tmp_path / f"{odd}" / f"t{odd}"
    src.mkdir()
    (src / "k").write_text("K")
    cp = run(tmp_path, [M(str(src), str(dst), True), M(str(src), str(tmp_path / "plain"), False)],
             "sh", "-c", 'cat "$0/k" && ! touch "$0/w" 2>/dev/null', str(dst), shims=("mount",))
    assert (cp.returncode, cp.stdout) == (0, "K"), cp.stderr
    assert (tmp_path / "programs").read_text().split() == ["mount"], "mount -a read it all, no fallback"


MOUNTINFO = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "25 22 0:21 / /dev/shm rw shared:4 - tmpfs tmpfs rw\n"
    "30 22 254:0 /srv/data /mnt/data rw shared:1 - ext4 /dev/vda rw\n"
    "31 22 254:0 /srv/with\\040space /mnt/sp rw shared:1 - ext4 /dev/vda rw\n"
)


@pytest.mark.parametrize(("path", "want"), [
    ("/etc/hosts", ("254:0", "/etc/hosts")),
    ("/dev/shm", ("0:21", "/")),
    ("/dev/shm/pocketkube-1/pods/u/shm", ("0:21", "/pocketkube-1/pods/u/shm")),
    ("/mnt/data/x", ("254:0", "/srv/data/x")),
    ("/mnt/sp", ("254:0", "/srv/with space")),
])
def test_fs_root(path: str, want: tuple[str, str]) -> None:
    """A path's device and path within its file system come from the mount holding it (escapes decoded)."""
    assert launcher.fs_root(path, launcher.mount_table(MOUNTINFO)) == want


@pytest.mark.parametrize(("source", "target", "skipped"), [
    ("/dev/shm/pocketkube-1/pods/u/shm", "/dev/shm", False),  # another directory of the same tmpfs
    ("/dev/shm", "/dev/shm", True),  # the very mount: mount -a would skip it
    ("/srv/data", "/mnt/data", True),  # the same root bound there already
    ("/srv/data/sub", "/mnt/data", False),
    ("/tmp/x", "/var/run/secrets", False),  # the target is no mount point
])
def test_skipped_by_mount_all(source: str, target: str, skipped: bool) -> None:
    """Only a target where the same file system root is mounted already must be bound on its own."""
    m = launcher.Mount(source=source, target=target, read_only=True)
    assert launcher.skipped_by_mount_all(m, launcher.mount_table(MOUNTINFO)) is skipped


def test_a_last_mount_comes_after_every_other():
    """A bind marked last (the pod's /dev/shm, which covers the state root) ends the last batch, after deeper ones."""
    shm = launcher.Mount(source="/dev/shm/pk/pods/u/shm", target="/dev/shm", read_only=False, last=True)
    inner = launcher.Mount(source="/d/data", target="/data", read_only=False)
    nested = launcher.Mount(source="/d/conf", target="/data/conf", read_only=True)
    batches = launcher.plan([shm, nested, inner], fstab="/c/0.fstab")
    assert [b.mounts for b in batches] == [(inner,), (nested, shm)]
    assert batches[-1].table == (nested, shm)
