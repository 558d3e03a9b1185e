"""The Kubernetes CEL libraries the engine lacks: lists, regex, sets, quantity, URL, IP/CIDR and authorizer."""

from __future__ import annotations

import contextvars
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from cel_expr_python import cel as celpy

from pocketkube.api import quantity

# Kubernetes' opaque CEL types (Quantity, URL, IP, ...) travel through the engine as maps tagged with this key:
# the Python bindings cannot hand the engine foreign objects, and map equality then gives value equality.
KIND = "@kind"

T = celpy.Type
DYN, BOOL, INT, STRING, DOUBLE = T.DYN, T.BOOL, T.INT, T.STRING, T.DOUBLE
OBJ = T.Map(T.STRING, T.DYN)
LIST = T.List(T.DYN)

# (allowed, reason) for the attributes of one authorizer check; raising means the authorizer errored.
CheckFunc = Callable[[Mapping[str, Any]], "tuple[bool, str]"]
current_check: contextvars.ContextVar[CheckFunc | None] = contextvars.ContextVar("cel_authorizer", default=None)


class LibraryError(ValueError):
    """An evaluation error raised by a library function, worded as Kubernetes' CEL libraries word it."""


def _kind(v: Any, want: str) -> dict[str, Any]:
    if not isinstance(v, dict) or v.get(KIND) != want:
        raise LibraryError(f"no such overload: expected {want}")
    return v


# --- lists and sets -----------------------------------------------------------------------------

def _comparable(items: list[Any]) -> list[Any]:
    kinds = {"num" if isinstance(x, (int, float)) and not isinstance(x, bool) else type(x).__name__ for x in items}
    if len(kinds) > 1:
        raise LibraryError("no such overload")
    return items


def is_sorted(items: list[Any]) -> bool:
    _comparable(items)
    return all(items[i] <= items[i + 1] for i in range(len(items) - 1))


def list_sum(items: list[Any]) -> Any:
    _comparable(items)
    if not items:
        return 0
    if all(isinstance(x, str) for x in items):
        raise LibraryError("no such overload")
    return sum(items[1:], items[0])


def list_min(items: list[Any]) -> Any:
    if not items:
        raise LibraryError("min called on empty list")
    return min(_comparable(items))


def list_max(items: list[Any]) -> Any:
    if not items:
        raise LibraryError("max called on empty list")
    return max(_comparable(items))


def index_of(items: list[Any], value: Any) -> int:
    return next((i for i, x in enumerate(items) if _cel_equal(x, value)), -1)


def last_index_of(items: list[Any], value: Any) -> int:
    return next((i for i in range(len(items) - 1, -1, -1) if _cel_equal(items[i], value)), -1)


def _cel_equal(a: Any, b: Any) -> bool:
    # CEL never equates a bool with a number, unlike Python.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def sets_contains(a: list[Any], b: list[Any]) -> bool:
    return all(any(_cel_equal(x, y) for y in a) for x in b)


def sets_equivalent(a: list[Any], b: list[Any]) -> bool:
    return sets_contains(a, b) and sets_contains(b, a)


def sets_intersects(a: list[Any], b: list[Any]) -> bool:
    return any(any(_cel_equal(x, y) for y in a) for x in b)


# --- regex ------------------------------------------------------------------------------------------

def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise LibraryError(f"error parsing regexp: {e}") from None


def find(s: str, pattern: str) -> str:
    m = _regex(pattern).search(s)
    return m.group(0) if m else ""


def find_all(s: str, pattern: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    out = [m.group(0) for m in _regex(pattern).finditer(s)]
    return out if limit < 0 else out[:limit]


# --- quantity -----------------------------------------------------------------------------------

def _q(v: Fraction) -> dict[str, Any]:
    return {KIND: "Quantity", "value": str(v)}


def _qv(q: Any) -> Fraction:
    return Fraction(_kind(q, "Quantity")["value"])


def to_quantity(s: str) -> dict[str, Any]:
    try:
        return _q(quantity.parse(s).value)
    except quantity.QuantityError as e:
        raise LibraryError(str(e)) from None


def is_quantity(s: str) -> bool:
    return quantity.is_valid(s)


def _operand(v: Any) -> Fraction:
    if isinstance(v, int) and not isinstance(v, bool):
        return Fraction(v)
    return _qv(v)


def q_sign(q: Any) -> int:
    v = _qv(q)
    return (v > 0) - (v < 0)


def q_is_integer(q: Any) -> bool:
    v = _qv(q)
    return v.denominator == 1 and -(2**63) <= v < 2**63


def q_as_integer(q: Any) -> int:
    if not q_is_integer(q):
        raise LibraryError("cannot convert value to integer")
    return int(_qv(q))


def q_as_float(q: Any) -> float:
    return float(_qv(q))


def q_add(q: Any, other: Any) -> dict[str, Any]:
    return _q(_qv(q) + _operand(other))


def q_sub(q: Any, other: Any) -> dict[str, Any]:
    return _q(_qv(q) - _operand(other))


def q_compare(q: Any, other: Any) -> int:
    a, b = _qv(q), _qv(other)
    return (a > b) - (a < b)


# --- URL ----------------------------------------------------------------------------------------

def _parse_url(s: str) -> urllib.parse.SplitResult:
    # url.ParseRequestURI: an absolute URI or an absolute path, no fragment.
    parts = urllib.parse.urlsplit(s)
    if not (parts.scheme or s.startswith("/")) or " " in s or "#" in s:
        raise LibraryError(f'URL parse error during conversion from string: parse "{s}": invalid URI for request')
    return parts


def to_url(s: str) -> dict[str, Any]:
    _parse_url(s)
    return {KIND: "URL", "url": s}


def is_url(s: str) -> bool:
    try:
        _parse_url(s)
    except (LibraryError, ValueError):
        return False
    return True


def _url(u: Any) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(_kind(u, "URL")["url"])


def url_scheme(u: Any) -> str:
    return _url(u).scheme


def url_host(u: Any) -> str:
    return _url(u).netloc.rpartition("@")[2]


def url_hostname(u: Any) -> str:
    host = url_host(u)
    if host.startswith("["):
        return host[1:host.find("]")]
    return host.rpartition(":")[0] if ":" in host else host


def url_port(u: Any) -> str:
    host = url_host(u)
    tail = host[host.find("]") + 1:] if host.startswith("[") else host
    return tail.rpartition(":")[2] if ":" in tail else ""


def url_path(u: Any) -> str:
    return _url(u).path


def url_query(u: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in urllib.parse.parse_qsl(_url(u).query, keep_blank_values=True):
        out.setdefault(k, []).append(v)
    return out


# --- IP and CIDR ----------------------------------------------------------------------------------

def _parse_ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if "%" in s:
        raise LibraryError("IP address with zone value is not allowed")
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        raise LibraryError(f'IP Address "{s}" parse error during conversion from string: '
                           f'ParseAddr("{s}"): unable to parse IP') from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise LibraryError("IPv4-mapped IPv6 address is not allowed")
    return addr


def to_ip(s: str) -> dict[str, Any]:
    return {KIND: "IP", "ip": str(_parse_ip(s))}


def is_ip(s: str) -> bool:
    try:
        _parse_ip(s)
    except LibraryError:
        return False
    return True


def _ip(v: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(v, str):
        return _parse_ip(v)
    return ipaddress.ip_address(_kind(v, "IP")["ip"])


def ip_family(v: Any) -> int:
    return _ip(v).version


def ip_is_unspecified(v: Any) -> bool:
    return _ip(v).is_unspecified


def ip_is_loopback(v: Any) -> bool:
    return _ip(v).is_loopback


def ip_is_link_local_multicast(v: Any) -> bool:
    a = _ip(v)
    net = "224.0.0.0/24" if a.version == 4 else "ff02::/16"
    return a in ipaddress.ip_network(net)


def ip_is_link_local_unicast(v: Any) -> bool:
    return _ip(v).is_link_local and not _ip(v).is_multicast


def ip_is_global_unicast(v: Any) -> bool:
    # Go's IsGlobalUnicast: private ranges count as global, unlike Python's is_global.
    a = _ip(v)
    if a.version == 4 and a == ipaddress.IPv4Address("255.255.255.255"):
        return False
    return not (a.is_unspecified or a.is_loopback or a.is_multicast or a.is_link_local)


def _parse_cidr(s: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    addr, sep, bits = s.partition("/")
    prefix = f'network address parse error during conversion from string: netip.ParsePrefix("{s}"): '
    if not sep:
        raise LibraryError(prefix + "no '/'")
    if not bits.isdigit():
        raise LibraryError(prefix + f'bad bits after slash: "{bits}"')
    ip = _parse_ip(addr)
    if int(bits) > ip.max_prefixlen:
        raise LibraryError(prefix + "prefix length out of range")
    return ip, int(bits)


def to_cidr(s: str) -> dict[str, Any]:
    ip, n = _parse_cidr(s)
    return {KIND: "CIDR", "cidr": f"{ip}/{n}"}


def is_cidr(s: str) -> bool:
    try:
        _parse_cidr(s)
    except LibraryError:
        return False
    return True


def _cidr(v: Any) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    return _parse_cidr(v if isinstance(v, str) else _kind(v, "CIDR")["cidr"])


def _network(v: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    ip, n = _cidr(v)
    return ipaddress.ip_network(f"{ip}/{n}", strict=False)


def cidr_contains_ip(c: Any, ip: Any) -> bool:
    a = _ip(ip)
    net = _network(c)
    return a.version == net.version and a in net


def cidr_contains_cidr(c: Any, other: Any) -> bool:
    a, b = _network(c), _network(other)
    return a.version == b.version and b.subnet_of(a)  # type: ignore[arg-type]


def cidr_ip(c: Any) -> dict[str, Any]:
    return {KIND: "IP", "ip": str(_cidr(c)[0])}


def cidr_masked(c: Any) -> dict[str, Any]:
    net = _network(c)
    return {KIND: "CIDR", "cidr": str(net)}


def cidr_prefix_length(c: Any) -> int:
    return _cidr(c)[1]


# --- authorizer ---------------------------------------------------------------------------------

def authorizer_value(*, request_resource: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `authorizer` variable: checks run through the callback current_check holds during evaluation."""
    out: dict[str, Any] = {KIND: "Authorizer", "user": None}
    out["requestResource"] = {KIND: "ResourceCheck", "user": None, **(request_resource or {})}
    return out


def authz_path(a: Any, path: str) -> dict[str, Any]:
    return {KIND: "PathCheck", "user": _kind(a, "Authorizer")["user"], "path": path}


def authz_group(a: Any, group: str) -> dict[str, Any]:
    return {KIND: "GroupCheck", "user": _kind(a, "Authorizer")["user"], "group": group}


def authz_service_account(a: Any, namespace: str, name: str) -> dict[str, Any]:
    _kind(a, "Authorizer")
    user = {"name": f"system:serviceaccount:{namespace}:{name}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]}
    return {KIND: "Authorizer", "user": user,
            "requestResource": {KIND: "ResourceCheck", "user": user}}


def authz_resource(g: Any, resource: str) -> dict[str, Any]:
    g = _kind(g, "GroupCheck")
    return {KIND: "ResourceCheck", "user": g["user"], "group": g["group"], "resource": resource}


def _with(field: str) -> Callable[[Any, str], dict[str, Any]]:
    def set_field(r: Any, value: str) -> dict[str, Any]:
        return {**_kind(r, "ResourceCheck"), field: value}
    return set_field


def authz_check(target: Any, verb: str) -> dict[str, Any]:
    if not isinstance(target, dict) or target.get(KIND) not in ("ResourceCheck", "PathCheck"):
        raise LibraryError("no such overload")
    attrs = {k: v for k, v in target.items() if k != KIND}
    attrs["verb"] = verb
    check = current_check.get()
    try:
        if check is None:
            raise LibraryError("no authorizer is configured")
        allowed, reason = check(attrs)
        return {KIND: "Decision", "allowed": bool(allowed), "reason": reason, "error": ""}
    except Exception as e:  # noqa: BLE001 - an authorizer failure is a decision that errored
        return {KIND: "Decision", "allowed": False, "reason": "", "error": str(e) or type(e).__name__}


def _decision(field: str) -> Callable[[Any], Any]:
    def get(d: Any) -> Any:
        return _kind(d, "Decision")[field]
    return get


# --- declarations -------------------------------------------------------------------------------

def _fn(name: str, *overloads: tuple[str, Any, list[Any], bool, Callable[..., Any]]) -> celpy.FunctionDecl:
    return celpy.FunctionDecl(name, [celpy.Overload(oid, ret, params, is_member=member, impl=impl)
                                     for oid, ret, params, member, impl in overloads])


def extension() -> celpy.CelExtension:
    """Every function above, declared with the receiver and argument types Kubernetes gives them."""
    m = True
    return celpy.CelExtension("kubernetes", [
        _fn("isSorted", ("list_is_sorted", BOOL, [LIST], m, is_sorted)),
        _fn("sum", ("list_sum", DYN, [LIST], m, list_sum)),
        _fn("min", ("list_min", DYN, [LIST], m, list_min)),
        _fn("max", ("list_max", DYN, [LIST], m, list_max)),
        _fn("indexOf", ("list_index_of", INT, [LIST, DYN], m, index_of)),
        _fn("lastIndexOf", ("list_last_index_of", INT, [LIST, DYN], m, last_index_of)),
        _fn("sets.contains", ("sets_contains", BOOL, [LIST, LIST], False, sets_contains)),
        _fn("sets.equivalent", ("sets_equivalent", BOOL, [LIST, LIST], False, sets_equivalent)),
        _fn("sets.intersects", ("sets_intersects", BOOL, [LIST, LIST], False, sets_intersects)),
        _fn("find", ("string_find", STRING, [STRING, STRING], m, find)),
        _fn("findAll", ("string_find_all", T.List(STRING), [STRING, STRING], m, find_all),
            ("string_find_all_n", T.List(STRING), [STRING, STRING, INT], m, find_all)),
        _fn("quantity", ("string_to_quantity", OBJ, [STRING], False, to_quantity)),
        _fn("isQuantity", ("is_quantity", BOOL, [STRING], False, is_quantity)),
        _fn("sign", ("quantity_sign", INT, [OBJ], m, q_sign)),
        _fn("isInteger", ("quantity_is_integer", BOOL, [OBJ], m, q_is_integer)),
        _fn("asInteger", ("quantity_as_integer", INT, [OBJ], m, q_as_integer)),
        _fn("asApproximateFloat", ("quantity_as_float", DOUBLE, [OBJ], m, q_as_float)),
        _fn("add", ("quantity_add", OBJ, [OBJ, DYN], m, q_add)),
        _fn("sub", ("quantity_sub", OBJ, [OBJ, DYN], m, q_sub)),
        _fn("compareTo", ("quantity_compare_to", INT, [OBJ, OBJ], m, q_compare)),
        _fn("isLessThan", ("quantity_less", BOOL, [OBJ, OBJ], m, lambda a, b: q_compare(a, b) < 0)),
        _fn("isGreaterThan", ("quantity_greater", BOOL, [OBJ, OBJ], m, lambda a, b: q_compare(a, b) > 0)),
        _fn("url", ("string_to_url", OBJ, [STRING], False, to_url)),
        _fn("isURL", ("is_url", BOOL, [STRING], False, is_url)),
        _fn("getScheme", ("url_scheme", STRING, [OBJ], m, url_scheme)),
        _fn("getHost", ("url_host", STRING, [OBJ], m, url_host)),
        _fn("getHostname", ("url_hostname", STRING, [OBJ], m, url_hostname)),
        _fn("getPort", ("url_port", STRING, [OBJ], m, url_port)),
        _fn("getEscapedPath", ("url_path", STRING, [OBJ], m, url_path)),
        _fn("getQuery", ("url_query", T.Map(STRING, T.List(STRING)), [OBJ], m, url_query)),
        _fn("ip", ("string_to_ip", OBJ, [STRING], False, to_ip),
            ("cidr_ip", OBJ, [OBJ], m, cidr_ip)),
        _fn("isIP", ("is_ip", BOOL, [STRING], False, is_ip)),
        _fn("family", ("ip_family", INT, [OBJ], m, ip_family)),
        _fn("isUnspecified", ("ip_is_unspecified", BOOL, [OBJ], m, ip_is_unspecified)),
        _fn("isLoopback", ("ip_is_loopback", BOOL, [OBJ], m, ip_is_loopback)),
        _fn("isLinkLocalMulticast", ("ip_is_llm", BOOL, [OBJ], m, ip_is_link_local_multicast)),
        _fn("isLinkLocalUnicast", ("ip_is_llu", BOOL, [OBJ], m, ip_is_link_local_unicast)),
        _fn("isGlobalUnicast", ("ip_is_global_unicast", BOOL, [OBJ], m, ip_is_global_unicast)),
        _fn("cidr", ("string_to_cidr", OBJ, [STRING], False, to_cidr)),
        _fn("isCIDR", ("is_cidr", BOOL, [STRING], False, is_cidr)),
        _fn("containsIP", ("cidr_contains_ip", BOOL, [OBJ, DYN], m, cidr_contains_ip)),
        _fn("containsCIDR", ("cidr_contains_cidr", BOOL, [OBJ, DYN], m, cidr_contains_cidr)),
        _fn("masked", ("cidr_masked", OBJ, [OBJ], m, cidr_masked)),
        _fn("prefixLength", ("cidr_prefix_length", INT, [OBJ], m, cidr_prefix_length)),
        _fn("path", ("authorizer_path", OBJ, [OBJ, STRING], m, authz_path)),
        _fn("group", ("authorizer_group", OBJ, [OBJ, STRING], m, authz_group)),
        _fn("serviceAccount", ("authorizer_sa", OBJ, [OBJ, STRING, STRING], m, authz_service_account)),
        _fn("resource", ("group_resource", OBJ, [OBJ, STRING], m, authz_resource)),
        _fn("subresource", ("resource_subresource", OBJ, [OBJ, STRING], m, _with("subresource"))),
        _fn("namespace", ("resource_namespace", OBJ, [OBJ, STRING], m, _with("namespace"))),
        _fn("name", ("resource_name", OBJ, [OBJ, STRING], m, _with("name"))),
        _fn("check", ("authorizer_check", OBJ, [OBJ, STRING], m, authz_check)),
        _fn("allowed", ("decision_allowed", BOOL, [OBJ], m, _decision("allowed"))),
        _fn("reason", ("decision_reason", STRING, [OBJ], m, _decision("reason"))),
        _fn("errored", ("decision_errored", BOOL, [OBJ], m, lambda d: bool(_decision("error")(d)))),
        _fn("error", ("decision_error", STRING, [OBJ], m, _decision("error"))),
    ])
