"""Content negotiation: decoding request bodies and encoding responses as JSON, YAML or Table."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from aiohttp import web

from pocketkube.api import errors

MAX_BODY = 3 * 1024 * 1024
MAX_DEPTH = 100

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether no value sits deeper than limit (the top one is at depth 1)."""
    if limit < 1:
        return False
    if not isinstance(value, (dict, list)):
        return True
    # Only containers are visited: a non-empty one at the limit has children past it.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        kids = v.values() if isinstance(v, dict) else v
        if not kids:
            continue
        if d >= limit:
            return False
        d += 1
        for x in kids:
            if isinstance(x, (dict, list)):
                stack.append((x, d))
    return True


def parse_json(raw: bytes, *, what: str = "") -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        snippet = raw[:40].decode("utf-8", "replace")
        prefix = f"the object provided is unrecognized (must be of type {what}): " if what else ""
        raise errors.BadRequest(f"{prefix}couldn't get version/kind; json parse error: {_go_json_error(exc)} ({snippet})") from None
    # No value nests deeper than the body has opening brackets: most bodies need no walk.
    if raw.count(b"{") + raw.count(b"[") >= MAX_DEPTH and not _depth_ok(value):
        raise errors.BadRequest("max depth exceeded")
    return value


def _go_json_error(exc: Exception) -> str:
    msg = str(exc)
    if "unexpected end" in msg.lower() or "eof" in msg.lower():
        return "unexpected end of JSON input"
    return "invalid character in JSON input: " + msg.split(":", 1)[0]


def parse_yaml(raw: bytes) -> Any:
    try:
        value = yaml.load(raw, Loader=_Loader)  # noqa: S506 - C safe loader
    except yaml.YAMLError as exc:
        raise errors.BadRequest(f"error converting YAML to JSON: {str(exc).splitlines()[0]}") from None
    if not _depth_ok(value):
        raise errors.BadRequest("max depth exceeded")
    return _stringify_keys(value)


def _stringify_keys(value: Any) -> Any:
    # YAML allows non-string keys and timestamps; JSON (and Kubernetes) does not.
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, bool) else ("true" if k else "false"): _stringify_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_keys(v) for v in value]
    if hasattr(value, "isoformat") and not isinstance(value, (int, float, str)):
        return value.isoformat().replace("+00:00", "Z")
    if type(value) is int and not -(2 ** 63) <= value < 2 ** 64:
        # Past 64 bits JSON numbers decode as float64 (as orjson and Go's decoder both do).
        try:
            return float(value)
        except OverflowError:
            raise errors.BadRequest(f"error converting YAML to JSON: number {value} is out of range") from None
    return value


BODY_KEY: web.RequestKey[bytes] = web.RequestKey("pocketkube.body", bytes)


async def read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
    chunks = []
    size = 0
    content = request.content
    # Whatever has arrived at each step (all of it at once, for a body sent whole): the limit is checked as it grows.
    while chunk := await content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
        chunks.append(chunk)
    body = b"".join(chunks)
    request[BODY_KEY] = body  # the audit log records it after the handler has consumed the stream
    return body


def decode_object(raw: bytes, content_type: str | None, *, what: str) -> dict[str, Any]:
    """Decode a create/update body (JSON or YAML); protobuf and others are 415."""
    mt = media_type(content_type)
    if mt in ("", JSON, "*/*"):
        value = parse_json(raw, what=what)
    elif mt in (YAML, "application/yml", "text/yaml"):
        value = parse_yaml(raw)
    elif mt == PROTOBUF:
        from pocketkube.api import protobuf
        value = protobuf.decode(raw)
    else:
        raise errors.UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor")
    if not isinstance(value, dict):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {what}): couldn't get version/kind; json parse error: json: cannot unmarshal {_go_type(value)} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}")
    return value


def _go_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null"


def wants_table(accept: str) -> tuple[bool, str]:
    """Whether the Accept header asks for a meta.k8s.io Table, and which version."""
    for part in accept.split(","):
        params = [p.strip() for p in part.split(";")]
        if len(params) > 1 and "as=Table" in params:
            version = "v1"
            for p in params:
                if p.startswith("v="):
                    version = p[2:]
            if version in ("v1", "v1beta1"):
                return True, version
    return False, ""


def wants_partial_metadata(accept: str) -> str:
    for part in accept.split(","):
        params = [p.strip() for p in part.split(";")]
        if "as=PartialObjectMetadata" in params:
            return "PartialObjectMetadata"
        if "as=PartialObjectMetadataList" in params:
            return "PartialObjectMetadataList"
    return ""


def response_format(accept: str | None) -> str:
    """json or yaml; protobuf-only clients get 406."""
    if not accept:
        return "json"
    for part in accept.split(","):
        mt = part.split(";", 1)[0].strip().lower()
        if mt in (JSON, "*/*", "application/*", "application/json-patch+json", "application/merge-patch+json"):
            return "json"
        if mt in (YAML, "application/yml"):
            return "yaml"
    raise errors.NotAcceptable("only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf")


def dumps(obj: Any, fmt: str = "json") -> bytes:
    if fmt == "yaml":
        return yaml.dump(obj, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), default_flow_style=False,
                         sort_keys=False).encode()
    return orjson.dumps(obj)


def respond(obj: Any, *, status: int = 200, fmt: str = "json", headers: dict[str, str] | None = None) -> web.Response:
    ct = YAML if fmt == "yaml" else JSON
    h = {"Cache-Control": "no-cache, private"}
    if headers:
        h.update(headers)
    return web.Response(body=dumps(obj, fmt), status=status, content_type=ct, headers=h)
