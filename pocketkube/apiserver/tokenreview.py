"""TokenReview: authenticate a token on behalf of a caller and report the user it names (never stored)."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import authn, context


async def status(server: context.Server, call: context.Call, obj: dict[str, Any]) -> dict[str, Any]:
    """The TokenReview status for obj's spec.token and spec.audiences, as kube's tokenreview REST fills it."""
    spec = obj.get("spec") or {}
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise errors.BadRequest("token is required for TokenReview in authentication")
    auds = spec.get("audiences") or []
    if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
        raise errors.BadRequest("spec.audiences must be a list of strings")
    auth = authn.of(server)
    wanted = auds or auth.audiences
    result = await auth.authenticate_token(server, token, audiences=wanted)
    out: dict[str, Any] = {}
    if result.user is None:
        out["user"] = {}
        out["error"] = result.status_error()
        return out
    if wanted and not set(wanted) & set(result.audiences):
        raise errors.InternalError("Internal error occurred: error validating audiences")
    out["authenticated"] = True
    out["user"] = result.user.info()
    if result.audiences:
        out["audiences"] = list(result.audiences)
    return out
