"""Label and field selector filters built from list/watch query parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocketkube.api import fieldselectors, resources, selectors

Predicate = Callable[[dict[str, Any]], bool]


def build(res: resources.Resource, label_selector: str, field_selector: str) -> Predicate | None:
    """A predicate over objects, or None when both selectors are empty (everything matches)."""
    label = selectors.parse(label_selector) if label_selector else None
    field = None
    if field_selector:
        field = fieldselectors.matcher(fieldselectors.parse(field_selector), res.group, res.kind)
    if label is None and field is None:
        return None

    def match(obj: dict[str, Any]) -> bool:
        if label is not None and not label.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        if field is not None and not field(obj):
            return False
        return True

    return match


def pinned_node(res: resources.Resource, field_selector: str) -> str | None:
    """The node a pod field selector pins with `spec.nodeName=NODE` (kube's watch cache index), else None.

    Call after build(), which has rejected bad selectors."""
    if not field_selector or res.group != "" or res.kind != "Pod":
        return None
    sel = fieldselectors.convert(field_selector, res.group, res.kind)
    return sel.requires_exact_match("spec.nodeName")


def node_needle(node: str | None) -> bytes | None:
    """Bytes every stored pod on node contains (its JSON-quoted name), when that test is sound, else None.

    A pod whose stored JSON lacks them is not on node, so it can be skipped without decoding it."""
    # Names of this alphabet (every valid node name) encode the same under any JSON encoder; "" (no
    # node) is the absence of a field, which no bytes show.
    if node and all(c.isascii() and (c.isalnum() or c in ".-_:") for c in node):
        return b'"' + node.encode() + b'"'
    return None
