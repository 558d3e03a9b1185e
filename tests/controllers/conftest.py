"""Controller tests run with the cache mutation detector on: no controller may change a shared cached object."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pocketkube.client import informer


@pytest.fixture(autouse=True)
def no_cache_mutations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test whose controller mutated an informer's cached object in place (caches are shared)."""
    monkeypatch.setenv(informer.MUTATION_DETECTOR_ENV, "true")
    found: list[tuple[str, str]] = []
    monkeypatch.setattr(informer, "detected_mutations", found)
    yield
    assert not found, f"cached objects mutated in place: {found}"
