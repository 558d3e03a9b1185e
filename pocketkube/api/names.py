"""Name, label, annotation and DNS format checks worded exactly as k8s.io/apimachinery words them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from pocketkube.api import errors

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
TOTAL_ANNOTATION_SIZE = 256 * 1024

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                      "and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                          "'-' or '.', and must start and end with an alphanumeric character")
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                      "an alphabetic character, and end with an alphanumeric character")
_WILDCARD_FMT = "\\*\\." + _DNS1123_SUBDOMAIN_FMT
_WILDCARD_MSG = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which "
                 "must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric "
                 "character")
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                       "an alphanumeric character")
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                    "'.', and must start and end with an alphanumeric character")
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_ENV_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_ENV_NAME_MSG = ("a valid environment variable name must consist of alphabetic characters, digits, '_', '-', "
                 "or '.', and must not start with a digit")
_RELAXED_ENV_MSG = "a valid environment variable name must consist only of printable ASCII characters other than '='"
_PERCENT_FMT = "[0-9]+%"
_PERCENT_MSG = "a valid percent string must be a numeric string followed by an ending '%'"
_HTTP_HEADER_FMT = "[-A-Za-z0-9]+"
_HTTP_HEADER_MSG = "a valid HTTP header must consist of alphanumeric characters or '-'"
_C_IDENT_FMT = "[A-Za-z_][A-Za-z0-9_]*"
_C_IDENT_MSG = "a valid C identifier must start with alphabetic character or '_', followed by a string of alphanumeric characters or '_'"


def _full(fmt: str) -> re.Pattern[str]:
    return re.compile("^" + fmt + "$")


_RE_LABEL = _full(_DNS1123_LABEL_FMT)
_RE_SUBDOMAIN = _full(_DNS1123_SUBDOMAIN_FMT)
_RE_1035 = _full(_DNS1035_LABEL_FMT)
_RE_WILDCARD = _full(_WILDCARD_FMT)
_RE_QUALIFIED = _full(_QUALIFIED_NAME_FMT)
_RE_LABEL_VALUE = _full(_LABEL_VALUE_FMT)
_RE_CONFIG_KEY = _full(_CONFIG_KEY_FMT)
_RE_ENV = _full(_ENV_NAME_FMT)
_RE_PERCENT = _full(_PERCENT_FMT)
_RE_HTTP_HEADER = _full(_HTTP_HEADER_FMT)
_RE_C_IDENT = _full(_C_IDENT_FMT)
_RE_PORT_CHARS = re.compile(r"^[-a-z0-9]+$")


def _match(rx: re.Pattern[str], value: str) -> bool:
    # Go's regexp `$` never matches before a trailing newline; Python's does, so rule it out.
    return "\n" not in value and rx.match(value) is not None


def _blen(s: str) -> int:
    # Go's len() counts bytes, so a non-ASCII value hits the limit sooner than its character count says.
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    # Mirrors Go's RegexError byte for byte, including its double space before "or".
    msg += " (e.g. "
    for i, example in enumerate(examples):
        if i:
            msg += " or "
        msg += f"'{example}', "
    return msg + f"regex used for validation is '{fmt}')"


def empty_error() -> str:
    return "must be non-empty"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


# --- string format checks: each returns the list of problems, empty when valid ---------------

def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if _blen(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _match(_RE_LABEL, value):
        if _match(_RE_SUBDOMAIN, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _match(_RE_SUBDOMAIN, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if _blen(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _match(_RE_1035, value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _match(_RE_WILDCARD, value):
        errs.append(regex_error(_WILDCARD_MSG, _WILDCARD_FMT, "*.example.com"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers: an optional DNS-subdomain prefix and a name part."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + empty_error())
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return ["a qualified name " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name",
                                                  "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part " + empty_error())
    elif _blen(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _match(_RE_QUALIFIED, name):
        errs.append("name part " + regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name",
                                               "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs = []
    if _blen(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _match(_RE_LABEL_VALUE, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_config_map_key(value: str) -> list[str]:
    errs = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _match(_RE_CONFIG_KEY, value):
        errs.append(regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    return errs + _chdir_prefix(value)


def is_env_var_name(value: str) -> list[str]:
    errs = []
    if not _match(_RE_ENV, value):
        errs.append(regex_error(_ENV_NAME_MSG, _ENV_NAME_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return errs + _chdir_prefix(value)


def is_relaxed_env_var_name(value: str) -> list[str]:
    """The 1.32 default (RelaxedEnvironmentVariableValidation is beta and on)."""
    errs = []
    if not value:
        errs.append("environment variable name " + empty_error())
    for ch in value:
        if ord(ch) > 127 or not ch.isprintable() or ch == "=":
            errs.append(_RELAXED_ENV_MSG)
            break
    return errs


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [inclusive_range_error(1, 65535)]


def is_valid_port_name(port: str) -> list[str]:
    errs = []
    if len(port) > 15:
        errs.append(max_len_error(15))
    if not _match(_RE_PORT_CHARS, port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_percent(value: str) -> list[str]:
    return [] if _match(_RE_PERCENT, value) else [regex_error(_PERCENT_MSG, _PERCENT_FMT, "1%", "93%")]


def is_http_header_name(value: str) -> list[str]:
    if _match(_RE_HTTP_HEADER, value):
        return []
    return [regex_error(_HTTP_HEADER_MSG, _HTTP_HEADER_FMT, "X-Header-Name")]


def is_c_identifier(value: str) -> list[str]:
    return [] if _match(_RE_C_IDENT, value) else [regex_error(_C_IDENT_MSG, _C_IDENT_FMT, "my_name", "MY_NAME",
                                                               "MyName")]


def is_valid_ip(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


def is_valid_cidr(value: str) -> list[str]:
    try:
        ipaddress.ip_network(value, strict=False)
        if "/" not in value:
            raise ValueError
    except ValueError:
        return ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    return []


def is_path_segment_name(name: str) -> list[str]:
    for bad in (".", ".."):
        if name == bad:
            return [f"may not be '{bad}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def is_path_segment_prefix(name: str) -> list[str]:
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


# --- object-name functions: (name, prefix) -> problems, as ValidateNameFunc ---------------

NameFunc = Callable[[str, bool], list[str]]


def _mask_trailing_dash(name: str) -> str:
    # generateName prefixes may end in '-'; Kubernetes swaps the last two characters for "a" to check them.
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def name_is_path_segment(name: str, prefix: bool = False) -> list[str]:
    return is_path_segment_prefix(name) if prefix else is_path_segment_name(name)


# --- field-level helpers returning FieldErrors ------------------------------------------

def validate_labels(labels: Any, field: str) -> list[errors.FieldError]:
    """Every key a qualified name and every value a label value; errors name the whole map's path."""
    out: list[errors.FieldError] = []
    if not isinstance(labels, dict):
        return out
    for k, v in labels.items():
        k = str(k)
        out.extend(errors.invalid(field, k, m) for m in is_qualified_name(k))
        v = "" if v is None else str(v)
        out.extend(errors.invalid(field, v, m) for m in is_label_value(v))
    return out


def validate_label_name(name: str, field: str) -> list[errors.FieldError]:
    return [errors.invalid(field, name, m) for m in is_qualified_name(name)]


def validate_annotations(annotations: Any, field: str) -> list[errors.FieldError]:
    out: list[errors.FieldError] = []
    if not isinstance(annotations, dict):
        return out
    total = 0
    for k, v in annotations.items():
        k = str(k)
        # Case does not matter for annotation keys, so Kubernetes lowercases before checking.
        out.extend(errors.invalid(field, k, m) for m in is_qualified_name(k.lower()))
        total += len(k.encode()) + len(str(v if v is not None else "").encode())
    if total > TOTAL_ANNOTATION_SIZE:
        out.append(errors.too_long(field, TOTAL_ANNOTATION_SIZE))
    return out


def validate_dns1123_label(value: str, field: str) -> list[errors.FieldError]:
    return [errors.invalid(field, value, m) for m in is_dns1123_label(value)]


def validate_dns1123_subdomain(value: str, field: str) -> list[errors.FieldError]:
    return [errors.invalid(field, value, m) for m in is_dns1123_subdomain(value)]


def validate_qualified_name(value: str, field: str) -> list[errors.FieldError]:
    return [errors.invalid(field, value, m) for m in is_qualified_name(value)]


def validate_nonnegative(value: Any, field: str) -> list[errors.FieldError]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return [errors.invalid(field, value, "must be greater than or equal to 0")]
    return []
