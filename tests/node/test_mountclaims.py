"""Host-wide mount point claims: a mount point another pocketkube process uses is never removed under it."""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from pocketkube.node import launcher, mountclaims


@pytest.fixture
def other_pid() -> Iterator[int]:
    """A live process standing for another pocketkube."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_claims_of_live_processes_count_and_dead_ones_are_dropped(tmp_path: pathlib.Path, other_pid: int) -> None:
    """A live process's claim covers the mount point and its children; a dead process's claim is removed."""
    d = str(tmp_path)
    with mountclaims.locked(d):
        mountclaims.publish(d, ["/x/a/b"], pid=other_pid)
        mountclaims.publish(d, ["/y"], pid=2**22 + 1)   # beyond pid_max: never alive
        assert mountclaims.claimed_by_others(d, "/x")
        assert mountclaims.claimed_by_others(d, "/x/a/b")
        assert not mountclaims.claimed_by_others(d, "/x/c")
        assert not mountclaims.claimed_by_others(d, "/y")
        assert not os.path.exists(os.path.join(d, str(2**22 + 1)))
        mountclaims.publish(d, [], pid=other_pid)
        assert not mountclaims.claimed_by_others(d, "/x")


def test_a_mount_point_stays_while_another_process_uses_it(tmp_path: pathlib.Path, other_pid: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The process that made a mount point leaves it to the last user, who removes it on release."""
    claims = str(tmp_path / "claims")
    monkeypatch.setattr(mountclaims, "claims_dir", lambda: claims)
    monkeypatch.setattr(launcher, "_IN_USE", launcher.collections.Counter())
    monkeypatch.setattr(launcher, "_MADE", set())
    target = str(tmp_path / "host" / "var" / "run" / "secrets")
    launcher.claim_mount_points([target])
    os.makedirs(target)   # what the launcher does inside the container's namespace
    with mountclaims.locked(claims) as d:
        mountclaims.publish(d, [target], pid=other_pid)
    launcher.release_mount_points([target])
    assert os.path.isdir(target), "the other process still mounts it"
    with mountclaims.locked(claims) as d:
        mountclaims.publish(d, [], pid=other_pid)
        assert str(tmp_path / "host") in mountclaims.made(d)
    launcher.release_all_mount_points()
    assert not os.path.exists(tmp_path / "host")
