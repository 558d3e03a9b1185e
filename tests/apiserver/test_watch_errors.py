"""How a watch ends when the store fails under it: an unreadable value is an InternalError event, not Gone."""

from __future__ import annotations

import types
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.apiserver import watch
from pocketkube.store import base as store_base


class _Response:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.chunks.append(data)


class _Watcher:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __aiter__(self) -> _Watcher:
        return self

    async def __anext__(self) -> Any:
        raise self.exc


async def _ended_with(exc: BaseException) -> dict[str, Any]:
    server = types.SimpleNamespace(shutting_down=False, bookmark_interval=60.0)
    call = types.SimpleNamespace(res=None)
    response = _Response()
    await watch._stream(server, call, response, _Watcher(exc), None, None,  # type: ignore[arg-type]
                        timeout=5, bookmarks=False, last=0)
    assert len(response.chunks) == 1
    event: dict[str, Any] = orjson.loads(response.chunks[0])
    return event


class _Unreadable(errors.InternalError, store_base.StoreError):
    pass


async def test_unreadable_value_ends_with_internal_error() -> None:
    """A value no provider can decrypt mid-watch ends it with the 500 InternalError Status kube sends."""
    message = "Internal error occurred: no matching key was found for the provided AES transformer"
    event = await _ended_with(_Unreadable(message, details={"causes": [{"message": message[25:]}]}))
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"], event["object"]["message"]) == (
        500, "InternalError", message)


async def test_falling_behind_is_still_gone() -> None:
    """A watcher the store dropped for falling behind still gets 410 Gone, to re-list."""
    event = await _ended_with(store_base.StoreError("behind"))
    assert (event["type"], event["object"]["code"], event["object"]["reason"]) == ("ERROR", 410, "Expired")
