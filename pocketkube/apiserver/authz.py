"""The API server's authorizer from kube-apiserver's --authorization-mode (default Node,RBAC; system:masters always)."""

from __future__ import annotations

from collections.abc import Sequence

from pocketkube.apiserver import rbac

DEFAULT_MODES = ("Node", "RBAC")
# kube-apiserver's modes; ABAC and Webhook need policy files pocketkube does not read.
KNOWN_MODES = ("AlwaysAllow", "AlwaysDeny", "ABAC", "Webhook", "RBAC", "Node")
_UNSUPPORTED = ("ABAC", "Webhook")
ALWAYS_DENY_REASON = "Everything is forbidden."


def parse_modes(text: str) -> tuple[str, ...]:
    """--authorization-mode's comma-separated list, checked as kube-apiserver checks it; ValueError if bad."""
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes:
        raise ValueError("at least one authorization-mode must be passed")
    seen: set[str] = set()
    for mode in modes:
        if mode not in KNOWN_MODES:
            raise ValueError(f'authorization-mode "{mode}" is not a valid mode')
        if mode in seen:
            raise ValueError(f'authorization-mode "{mode}" has mode specified more than once')
        seen.add(mode)
        if mode in _UNSUPPORTED:
            raise ValueError(f"authorization-mode {mode} is not supported by pocketkube (use Node, RBAC, "
                             "AlwaysAllow or AlwaysDeny)")
    return modes


def new(modes: Sequence[str] = DEFAULT_MODES) -> rbac.Authorizer | None:
    """The authorizer for server.authorizer; None means every request is allowed (AlwaysAllow).

    As kube's union authorizer, the modes are asked in order and the first decision wins: Node and RBAC only
    ever allow (or have no opinion), AlwaysAllow allows and AlwaysDeny denies. system:masters is allowed
    before any mode, as kube-apiserver's privileged-group authorizer is. With RBAC, anonymous callers get
    what the default bindings give system:unauthenticated (/healthz, /livez, /readyz, /version).
    """
    use_node = use_rbac = False
    for mode in modes:
        if mode == "AlwaysAllow":
            return None
        if mode == "AlwaysDeny":
            return rbac.Authorizer(node=use_node, rbac=use_rbac, deny_reason=ALWAYS_DENY_REASON)
        use_node = use_node or mode == "Node"
        use_rbac = use_rbac or mode == "RBAC"
    return rbac.Authorizer(node=use_node, rbac=use_rbac)
