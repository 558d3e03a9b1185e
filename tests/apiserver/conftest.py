"""Fixtures shared by the API server's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pocketkube.store import memory, sqlite


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Any]:
    """A started store of either backend, closed afterwards."""
    s: Any = memory.MemoryStore() if request.param == "memory" else sqlite.SQLiteStore(tmp_path / "db.sqlite")
    await s.start()
    yield s
    if not s._closed:
        await s.close()
