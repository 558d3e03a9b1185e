"""API errors as one hierarchy, each rendering to the metav1.Status real Kubernetes returns."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error that answers a request with a metav1.Status of the given code and reason."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        """The metav1.Status body for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(name: str | None, group: str | None, kind: str | None) -> dict[str, Any]:
    # Kubernetes leaves out empty fields of StatusDetails; the order is name, group, kind.
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    return d


def qualified(resource: str, group: str) -> str:
    """`deployments.apps` style name used in messages; core resources stay bare."""
    return f"{resource}.{group}" if group else resource


class BadRequest(APIError):
    code, reason = 400, "BadRequest"


class Unauthorized(APIError):
    code, reason = 401, "Unauthorized"


class Forbidden(APIError):
    code, reason = 403, "Forbidden"

    @classmethod
    def for_resource(cls, *, user: str, verb: str, resource: str, group: str, name: str = "",
                     namespace: str = "", why: str = "") -> Forbidden:
        target = f'resource "{resource}" in API group "{group}"'
        scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        named = f' "{name}"' if name else ""
        msg = f'{qualified(resource, group)}{named} is forbidden: User "{user}" cannot {verb} {target}{scope}'
        if why:
            msg += f": {why}"
        return cls(msg, details=_details(name, group, resource))


class NotFound(APIError):
    code, reason = 404, "NotFound"

    @classmethod
    def for_object(cls, resource: str, group: str, name: str) -> NotFound:
        return cls(f'{qualified(resource, group)} "{name}" not found',
                   details=_details(name, group, resource))

    @classmethod
    def resource(cls) -> NotFound:
        """An unknown path, group, version or resource."""
        return cls("the server could not find the requested resource", details={})


class MethodNotAllowed(APIError):
    code, reason = 405, "MethodNotAllowed"

    @classmethod
    def for_verb(cls, verb: str, resource: str, group: str) -> MethodNotAllowed:
        return cls("the server does not allow this method on the requested resource",
                   details=_details(None, group, resource))


class NotAcceptable(APIError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(APIError):
    code, reason = 409, "AlreadyExists"

    @classmethod
    def for_object(cls, resource: str, group: str, name: str) -> AlreadyExists:
        return cls(f'{qualified(resource, group)} "{name}" already exists',
                   details=_details(name, group, resource))


class Conflict(APIError):
    code, reason = 409, "Conflict"

    @classmethod
    def modified(cls, resource: str, group: str, name: str) -> Conflict:
        return cls(f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": '
                   "the object has been modified; please apply your changes to the latest "
                   "version and try again", details=_details(name, group, resource))

    @classmethod
    def because(cls, resource: str, group: str, name: str, why: str) -> Conflict:
        return cls(f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
                   details=_details(name, group, resource))


class Gone(APIError):
    code, reason = 410, "Expired"


class RequestEntityTooLarge(APIError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(APIError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(APIError):
    """422 with one cause per field error, worded as Kubernetes' field.ErrorList."""

    code, reason = 422, "Invalid"

    def __init__(self, *, kind: str, group: str, name: str, causes: list[FieldError]) -> None:
        gk = f"{kind}.{group}" if group else kind
        parts = [c.text() for c in causes]
        summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        super().__init__(f'{gk} "{name}" is invalid: {summary}')
        d = _details(name, group, kind)
        d["causes"] = [c.cause() for c in causes]
        self.details = d
        self.causes = causes


class PatchRejected(APIError):
    """422 Invalid as kube renders a patch it could not apply: generic message, empty details.

    kube drops the patch library's own text (errors.NewGenericServerResponse); `detail` keeps it.
    """

    code, reason = 422, "Invalid"

    def __init__(self, detail: str) -> None:
        super().__init__("the server rejected our request due to an error in our request", details={})
        self.detail = detail


class TooManyRequests(APIError):
    code, reason = 429, "TooManyRequests"


class InternalError(APIError):
    code, reason = 500, "InternalError"


class ServiceUnavailable(APIError):
    code, reason = 503, "ServiceUnavailable"


class Timeout(APIError):
    code, reason = 504, "Timeout"


# --- field errors (k8s.io/apimachinery/pkg/util/validation/field) --------------------

_CAUSE_REASON = {
    "Required": "FieldValueRequired",
    "Invalid": "FieldValueInvalid",
    "Unsupported": "FieldValueNotSupported",
    "Duplicate": "FieldValueDuplicate",
    "Forbidden": "FieldValueForbidden",
    "TooLong": "FieldValueTooLong",
    "TooMany": "FieldValueTooMany",
    "NotFound": "FieldValueNotFound",
    "Internal": "InternalError",
    "TypeInvalid": "FieldValueTypeInvalid",
}


def go_value(value: Any) -> str:
    """Render a value the way field.Error prints it with %#v-like quoting."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        import json
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return str(value)
    import json
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class FieldError:
    """One field error: a type (Required, Invalid, ...), a field path and detail."""

    __slots__ = ("type", "field", "value", "detail", "has_value")

    def __init__(self, type_: str, field: str, *, value: Any = None, detail: str = "",
                 has_value: bool = False) -> None:
        self.type = type_
        self.field = field
        self.value = value
        self.detail = detail
        self.has_value = has_value

    def body(self) -> str:
        """The error without the field prefix, e.g. `Invalid value: -1: must be ...`."""
        t = {
            "Required": "Required value",
            "Invalid": "Invalid value",
            "Unsupported": "Unsupported value",
            "Duplicate": "Duplicate value",
            "Forbidden": "Forbidden",
            "TooLong": "Too long",
            "TooMany": "Too many",
            "NotFound": "Not found",
            "Internal": "Internal error",
            "TypeInvalid": "Invalid value",
        }[self.type]
        s = t
        if self.has_value and self.type in ("Invalid", "Unsupported", "Duplicate", "NotFound", "TypeInvalid",
                                            "TooMany"):
            v = self.value
            s += ": " + (v[4:] if isinstance(v, str) and v.startswith("raw:") else go_value(v))
        if self.detail:
            s += ": " + self.detail
        return s

    def text(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, str]:
        return {"reason": _CAUSE_REASON[self.type], "message": self.body(), "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("Required", field, detail=detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid", field, value=value, detail=detail, has_value=True)


def unsupported(field: str, value: Any, valid: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(f'"{v}"' for v in valid) if valid else ""
    return FieldError("Unsupported", field, value=value, detail=detail, has_value=True)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("Duplicate", field, value=value, has_value=True)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("Forbidden", field, detail=detail)


def too_long(field: str, max_len: int) -> FieldError:
    return FieldError("TooLong", field, detail=f"must have at most {max_len} bytes")


def too_many(field: str, actual: int, max_items: int) -> FieldError:
    return FieldError("TooMany", field, value=actual, detail=f"must have at most {max_items} items", has_value=True)


def not_found(field: str, value: Any) -> FieldError:
    return FieldError("NotFound", field, value=value, has_value=True)
