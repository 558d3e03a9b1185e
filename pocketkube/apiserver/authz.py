"""The API server's authorizer: system:masters, the Node authorizer and RBAC, as kube-apiserver's Node,RBAC mode."""

from __future__ import annotations

from pocketkube.apiserver import rbac


def new() -> rbac.Authorizer:
    """A fresh authorizer for server.authorizer; it follows the store's RBAC objects once it first runs.

    Anonymous callers get what the default bindings give system:unauthenticated (the
    system:public-info-viewer role: /healthz, /livez, /readyz, /version), nothing more.
    """
    return rbac.Authorizer()
