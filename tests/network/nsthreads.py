"""Test helpers for code that moves its thread into other namespaces: run it on a thread of its own."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")


def on_thread(fn: Callable[[], Any]) -> Any:
    """Run fn on a thread of its own, so no failure can leave the test's thread in another namespace."""
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]
