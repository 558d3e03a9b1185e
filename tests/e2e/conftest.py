"""Fixtures: one real pocketkube server per test module, driven by the real kubectl."""

from __future__ import annotations

import collections.abc

import pytest

from tests.e2e import cluster as cluster_mod


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk"))).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def agent(cluster: cluster_mod.Cluster) -> collections.abc.Iterator[str]:
    """A node agent that runs pods as processes; yields the directory it keeps pods in."""
    with cluster_mod.process_node(cluster) as pods_dir:
        yield pods_dir
