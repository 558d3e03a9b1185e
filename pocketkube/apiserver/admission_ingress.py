"""DefaultIngressClass admission: a new Ingress that names no class gets the default IngressClass."""

from __future__ import annotations

from typing import Any

from pocketkube.apiserver import context, objects

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
# An Ingress with the legacy class annotation has chosen its class: kube leaves it alone.
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


def _is_default(ic: dict[str, Any]) -> bool:
    ann = (ic.get("metadata") or {}).get("annotations") or {}
    return str(ann.get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"


def pick_default(classes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The default IngressClass; with several, the newest (then the name sorting first), as kube 1.30+ picks."""
    defaults = [c for c in classes if _is_default(c)]
    if not defaults:
        return None
    defaults.sort(key=lambda c: (c["metadata"].get("name") or ""))
    defaults.sort(key=lambda c: c["metadata"].get("creationTimestamp") or "", reverse=True)
    return defaults[0]


async def default_ingress_class(server: context.Server, call: context.Call, obj: dict[str, Any],
                                old: dict[str, Any] | None, operation: str) -> None:
    """Set spec.ingressClassName of a classless new Ingress to the default IngressClass, if there is one."""
    if operation != "CREATE" or call.info.subresource:
        return
    if (call.res.group, call.res.kind) not in (("networking.k8s.io", "Ingress"), ("extensions", "Ingress")):
        return
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("ingressClassName") is not None:
        return
    if LEGACY_CLASS_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {}):
        return
    ic_res = server.registry.get("networking.k8s.io", "v1", "ingressclasses")
    if ic_res is None:
        return
    listed = await server.store.list(objects.storage_prefix(ic_res))
    default = pick_default([objects.decode(e.value, e.mod_revision) for e in listed.entries])
    if default is not None:
        spec["ingressClassName"] = default["metadata"]["name"]
