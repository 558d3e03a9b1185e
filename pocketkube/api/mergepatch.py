"""RFC 7386 JSON merge patch (application/merge-patch+json) as kube-apiserver applies it.

kube-apiserver uses gopkg.in/evanphx/json-patch.v4 MergePatch, which differs from the RFC
in one visible way: when a patch value is copied in whole (the target member is missing,
null, or not an object) null members of objects are pruned from it at every depth (null
array items stay). A patch
that is JSON null, a string, a number or a boolean is refused with 400 "Invalid JSON Patch";
an array patch replaces the whole document and so fails as a non-object (422).
"""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors, jsonpatch, jsonvalue

BAD_PATCH = "Invalid JSON Patch"


def _prune(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _prune(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_prune(x) for x in v]
    return v


def _merge_docs(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            doc.pop(k, None)
            continue
        cur = doc.get(k)
        if cur is None:
            doc[k] = _prune(v)
        elif not isinstance(cur, dict):
            doc[k] = _prune(v)
        elif not isinstance(v, dict):
            # The library keeps such a value as sent, nulls included.
            doc[k] = jsonvalue.deep_copy(v)
        else:
            _merge_docs(cur, v)


def apply(doc: dict[str, Any], patch: bytes | str | dict[str, Any] | Any) -> dict[str, Any]:
    """Merge patch into a copy of doc; neither argument is modified."""
    if not isinstance(doc, dict):
        raise errors.BadRequest("the object to patch must be a JSON object")
    if isinstance(patch, (bytes, str)):
        try:
            patch = jsonvalue.decode_json(patch)
        except errors.BadRequest:
            raise errors.BadRequest(BAD_PATCH) from None
    if isinstance(patch, list):
        raise jsonpatch.not_an_object(_prune(patch))
    if not isinstance(patch, dict):
        raise errors.BadRequest(BAD_PATCH)
    result = jsonvalue.deep_copy(doc)
    _merge_docs(result, patch)
    return result
