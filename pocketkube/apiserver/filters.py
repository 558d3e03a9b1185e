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
        field = fieldselectors.parse(field_selector)
        fieldselectors.validate(field, res.group, res.kind)
    if label is None and field is None:
        return None

    def match(obj: dict[str, Any]) -> bool:
        if label is not None and not label.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        if field is not None and not fieldselectors.matches(obj, field, res.group, res.kind):
            return False
        return True

    return match
