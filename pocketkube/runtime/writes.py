"""How controllers treat failed writes: retry a read-modify-write on conflict, spot a terminating namespace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pocketkube.api import errors

# client-go's retry.DefaultRetry allows five attempts.
CONFLICT_RETRIES = 5


async def retry_on_conflict(attempt: Callable[[], Awaitable[object]], *, retries: int = CONFLICT_RETRIES) -> None:
    """Run attempt (which re-reads what it changes) again on 409 Conflict; the last conflict is raised.

    NotFound ends it quietly: the object is gone, so there is nothing left to change.
    """
    for i in range(retries):
        try:
            await attempt()
            return
        except errors.NotFound:
            return
        except errors.Conflict:
            if i == retries - 1:
                raise


def namespace_terminating(e: errors.APIError) -> bool:
    """A create refused because its namespace is being deleted: expected, not a failure worth an event."""
    causes = (e.details or {}).get("causes") or []
    return any(c.get("reason") == "NamespaceTerminating" for c in causes) or "being terminated" in e.message
