"""The termination message of a container: its message file, else the tail of its log under FallbackToLogsOnError."""

from __future__ import annotations

import pathlib

import pytest

from pocketkube.node import containerwatch

LONG_LOG = "".join(f"line-{i}\n" for i in range(1, 101))


@pytest.mark.parametrize("message,log,fallback,want", [
    ("custom\n", "", False, "custom\n"),
    ("custom\n", "logged\n", True, "custom\n"),
    ("", "logged\n", False, ""),
    ("", "logged\n", True, "logged\n"),
    ("", LONG_LOG, True, "".join(f"line-{i}\n" for i in range(21, 101))),
    ("x" * 5000, "", False, "x" * 4096),
    (None, "logged\n", True, "logged\n"),
    (None, None, True, ""),
])
def test_termination_message(tmp_path: pathlib.Path, message: str | None, log: str | None, fallback: bool,
                             want: str) -> None:
    """The file wins (its last 4 KiB); an empty or missing one falls back to the log's last 80 lines when asked."""
    message_file, log_file = tmp_path / "msg", tmp_path / "0.log"
    if message is not None:
        message_file.write_text(message)
    if log is not None:
        log_file.write_text(log)
    assert containerwatch.termination_message(str(message_file), str(log_file) if fallback else "") == want


def test_log_fallback_keeps_the_last_2048_bytes(tmp_path: pathlib.Path) -> None:
    """Long log lines are cut to the last 2 KiB before the 80-line limit applies."""
    log_file = tmp_path / "0.log"
    log_file.write_text("a" * 3000 + "\n" + "b" * 100 + "\n")
    got = containerwatch.termination_message("", str(log_file))
    assert len(got.encode()) == 2048 and got.endswith("b" * 100 + "\n")
