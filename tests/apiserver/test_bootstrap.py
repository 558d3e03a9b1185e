"""Bootstrap: the objects every cluster starts with, each created once with one definition."""

from __future__ import annotations

from pocketkube.api import conversion, resources
from pocketkube.apiserver import allocators, bootstrap, context, objects
from pocketkube.base import clock as clock_mod
from pocketkube.store import memory


async def test_local_path_provisioner_binding_has_one_definition() -> None:
    """The provisioner's binding always points at its own role (it used to race a second definition)."""
    store = memory.MemoryStore()
    await store.start()
    try:
        server = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                                store=store, clock=clock_mod.FakeClock())
        server.allocators = allocators.Allocators()
        await bootstrap.run(server, secure_port=6443)
        res = server.registry.get("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        assert res is not None
        binding = await server.objects.get(res, "", "local-path-provisioner-bind")
        assert binding["roleRef"]["name"] == "local-path-provisioner-role"
        assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                        "name": "system:local-path-provisioner"}]
    finally:
        await store.close()
