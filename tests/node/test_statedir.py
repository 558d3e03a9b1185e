"""Specification of a node's state root: on a usable tmpfs, else in the data dir; private, reset, swept, removed."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from pocketkube.network import podnet
from pocketkube.node import statedir


def _mounts(tmp_path: pathlib.Path, *lines: str) -> str:
    path = tmp_path / "mounts"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("lines,where,want", [
    (["/dev/root / ext4 rw 0 0", "tmpfs /dev/shm tmpfs rw,nosuid 0 0"], "/dev/shm", ("tmpfs", {"rw", "nosuid"})),
    (["/dev/root / ext4 rw 0 0"], "/dev/shm", ("ext4", {"rw"})),
    (["/dev/root / ext4 rw 0 0", "tmpfs /dev/shm tmpfs rw 0 0", "shm /dev/shm tmpfs rw,noexec 0 0"], "/dev/shm",
     ("tmpfs", {"rw", "noexec"})),
    (["/dev/root / ext4 rw 0 0", "tmpfs /dev/shmem tmpfs rw 0 0"], "/dev/shm", ("ext4", {"rw"})),
    (["/dev/root / ext4 rw 0 0", "tmpfs /my\\040shm tmpfs rw 0 0"], "/my shm/x", ("tmpfs", {"rw"})),
    ([], "/dev/shm", ("", set())),
])
def test_mount_of(tmp_path: pathlib.Path, lines: list[str], where: str, want: tuple[str, set[str]]) -> None:
    """The mount holding a path is the longest mount point above it, the last one mounted when stacked."""
    assert statedir.mount_of(where, mounts=_mounts(tmp_path, *lines)) == want


def test_root_on_tmpfs_is_named_after_the_node(tmp_path: pathlib.Path) -> None:
    """A writable tmpfs shm holds the root pocketkube-<node id>, the id the pod network names the node by."""
    shm = tmp_path / "shm"
    shm.mkdir()
    mounts = _mounts(tmp_path, "/dev/root / ext4 rw 0 0", f"tmpfs {shm} tmpfs rw,nosuid,nodev 0 0")
    data = str(tmp_path / "data")
    assert statedir.choose(data, shm=str(shm), mounts=mounts) == str(shm / f"pocketkube-{podnet.node_id(data)}")


@pytest.mark.parametrize("case", ["missing", "a file", "on disk", "noexec", "unwritable", "no /proc/mounts"])
def test_falls_back_to_the_data_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Without a writable tmpfs that allows executables (macOS, most containers) the root is DATA_DIR/run."""
    shm = tmp_path / "shm"
    if case == "a file":
        shm.write_text("")
    elif case != "missing":
        shm.mkdir()
    fstype, options = {"on disk": ("ext4", "rw"), "noexec": ("tmpfs", "rw,nosuid,nodev,noexec")}.get(
        case, ("tmpfs", "rw"))
    mounts = (str(tmp_path / "nope") if case == "no /proc/mounts"
              else _mounts(tmp_path, "/dev/root / ext4 rw 0 0", f"tmpfs {shm} {fstype} {options} 0 0"))
    if case == "unwritable":  # root may write anywhere: make the access check say what a user would get
        monkeypatch.setattr(statedir.os, "access", lambda path, mode: path != str(shm))
    data = str(tmp_path / "data")
    assert statedir.choose(data, shm=str(shm), mounts=mounts) == os.path.join(data, "run")


def _on_shm(tmp_path: pathlib.Path, data: pathlib.Path) -> statedir.StateDir:
    shm = tmp_path / "shm"
    shm.mkdir(exist_ok=True)
    return statedir.StateDir(str(data), shm=str(shm),
                             mounts=_mounts(tmp_path, "/dev/root / ext4 rw 0 0", f"tmpfs {shm} tmpfs rw 0 0"))


def test_reset_makes_a_private_empty_root(tmp_path: pathlib.Path) -> None:
    """The first start empties what a crashed agent left, makes the root 0700 and records its data dir."""
    state = _on_shm(tmp_path, tmp_path / "data")
    os.makedirs(os.path.join(state.pod("old"), "c"))
    open(os.path.join(state.pod("old"), "c", "0.started"), "w").close()
    state.reset()
    assert os.listdir(state.root) == [statedir.OWNER]
    assert os.stat(state.root).st_mode & 0o777 == 0o700
    assert open(os.path.join(state.root, statedir.OWNER)).read() == str(tmp_path / "data")
    assert state.pod("u1") == os.path.join(state.root, "pods", "u1")


def test_reset_sweeps_only_roots_of_vanished_data_dirs(tmp_path: pathlib.Path) -> None:
    """Roots whose data dir is gone go; those of live data dirs and directories not marked as ours stay."""
    (tmp_path / "live").mkdir()
    gone, live = _on_shm(tmp_path, tmp_path / "gone"), _on_shm(tmp_path, tmp_path / "live")
    gone.reset()
    live.reset()
    other = tmp_path / "shm" / "pocketkube-other"
    other.mkdir()
    _on_shm(tmp_path, tmp_path / "data").reset()
    assert not os.path.exists(gone.root) and os.path.exists(live.root) and other.exists()


def test_reset_sweeps_ownerless_roots_once_they_are_a_minute_old(tmp_path: pathlib.Path) -> None:
    """A root without its owner file (made again by a thread finishing after its agent removed it) goes once it
    is a minute old; a fresh one, which may be one being made, stays."""
    shm = tmp_path / "shm"
    shm.mkdir()
    old, fresh = shm / "pocketkube-old", shm / "pocketkube-fresh"
    for root in (old, fresh):
        (root / "pods" / "u1" / "c").mkdir(parents=True)
    stale = time.time() - statedir.ORPHAN_SECONDS - 5
    os.utime(old, (stale, stale))
    _on_shm(tmp_path, tmp_path / "data").reset()
    assert not old.exists() and fresh.exists()


def test_reset_falls_back_when_the_root_cannot_be_made(tmp_path: pathlib.Path) -> None:
    """A link put where the root goes (in a world-writable /dev/shm) is never followed: the data dir is used."""
    state = _on_shm(tmp_path, tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    os.symlink(elsewhere, state.root)
    state.reset()
    assert state.root == str(tmp_path / "data" / "run") and os.path.isdir(state.root)
    assert (elsewhere / "keep").exists()


def test_remove_pod_and_remove(tmp_path: pathlib.Path) -> None:
    """A pod's directory goes with the pod, the whole root with the agent; a root never made is left alone."""
    state = statedir.StateDir(str(tmp_path / "data"), root=str(tmp_path / "root"))
    state.remove()
    os.makedirs(state.root)
    assert os.path.exists(state.root), "remove() before reset() touches nothing"
    state.reset()
    os.makedirs(os.path.join(state.pod("u1"), "c"))
    os.makedirs(state.pod("u2"))
    state.remove_pod("u1")
    assert os.listdir(os.path.join(state.root, "pods")) == ["u2"]
    state.remove()
    assert not os.path.exists(state.root)
