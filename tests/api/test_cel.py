"""Specification of api/cel.py: compile errors and results as Kubernetes words them, and the kube CEL libraries."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import cel

OBJ = {"metadata": {"name": "web", "labels": {"app": "web"}},
       "spec": {"replicas": 3, "ports": [80, 443, 8080], "names": ["b", "a"], "cpu": "500m"}}


@pytest.mark.parametrize("expression,want", [
    ("object.spec.replicas <= 5", True),
    ("object.metadata.name.startsWith('w')", True),
    ("has(object.spec.missing)", False),
    ("object.metadata.?labels.?app.orValue('none')", "web"),
    ("object.metadata.?annotations.?x.orValue('none')", "none"),
    ("'Hello'.lowerAscii() + 'x'.upperAscii()", "helloX"),
    ("'a,b,c'.split(',')", ["a", "b", "c"]),
    ("'abc'.charAt(1) + 'abc'.substring(2)", "bc"),
    ("'%s-%d'.format(['x', 3])", "x-3"),
    ("cel.bind(r, object.spec.replicas, r * 2)", 6),
    ("math.greatest([1, 5, 2])", 5),
    ("base64.encode(b'hi')", "aGk="),
    # Kubernetes' lists library
    ("object.spec.ports.isSorted()", True),
    ("object.spec.names.isSorted()", False),
    ("object.spec.ports.sum()", 8603),
    ("[].sum()", 0),
    ("[1.5, 2.5].sum()", 4.0),
    ("object.spec.ports.min()", 80),
    ("object.spec.names.max()", "b"),
    ("object.spec.ports.indexOf(443)", 1),
    ("[1, 2, 1].lastIndexOf(1)", 2),
    ("'abcb'.indexOf('b')", 1),
    # sets
    ("sets.contains([1, 2, 3], [1, 3])", True),
    ("sets.equivalent([1, 2], [2, 1, 1])", True),
    ("sets.intersects([1], [2])", False),
    # regex
    ("'abc123def456'.find('[0-9]+')", "123"),
    ("'abc123def456'.findAll('[0-9]+')", ["123", "456"]),
    ("'a1b2c3'.findAll('[0-9]', 2)", ["1", "2"]),
    ("'abc'.find('z')", ""),
    # quantity
    ("quantity(object.spec.cpu).isLessThan(quantity('1'))", True),
    ("quantity('1Gi').isGreaterThan(quantity('1000Mi'))", True),
    ("quantity('1') == quantity('1000m')", True),
    ("quantity('1.5').compareTo(quantity('2'))", -1),
    ("quantity('2').add(3).asInteger()", 5),
    ("quantity('2Ki').sub(quantity('1Ki')).asInteger()", 1024),
    ("quantity('500m').isInteger()", False),
    ("quantity('-3').sign()", -1),
    ("quantity('250m').asApproximateFloat()", 0.25),
    ("isQuantity('1x')", False),
    # URL
    ("url('https://example.com:8443/a%20b?x=1&x=2').getScheme()", "https"),
    ("url('https://example.com:8443/p').getHost()", "example.com:8443"),
    ("url('https://[::1]:80/').getHostname()", "::1"),
    ("url('https://example.com:8443/p').getPort()", "8443"),
    ("url('https://example.com/a%20b').getEscapedPath()", "/a%20b"),
    ("url('https://e.com/?x=1&x=2&y=').getQuery()", {"x": ["1", "2"], "y": [""]}),
    ("isURL('not a url')", False),
    ("isURL('/relative/path')", True),
    # IP and CIDR
    ("ip('10.0.0.1').family()", 4),
    ("ip('::1').isLoopback()", True),
    ("ip('10.1.2.3').isGlobalUnicast()", True),
    ("ip('169.254.1.1').isLinkLocalUnicast()", True),
    ("ip('224.0.0.1').isLinkLocalMulticast()", True),
    ("ip('0.0.0.0').isUnspecified()", True),
    ("isIP('1.2.3')", False),
    ("cidr('10.0.0.0/8').containsIP('10.9.9.9')", True),
    ("cidr('10.0.0.0/8').containsIP(ip('11.0.0.1'))", False),
    ("cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')", True),
    ("cidr('10.1.2.3/8').masked() == cidr('10.0.0.0/8')", True),
    ("cidr('10.1.2.3/8').ip() == ip('10.1.2.3')", True),
    ("cidr('fd00::/64').prefixLength()", 64),
    ("isCIDR('10.0.0.0')", False),
])
def test_evaluate(expression: str, want: Any) -> None:
    """Each expression evaluates to what the Kubernetes CEL environment gives."""
    assert cel.compile(expression).evaluate({"object": OBJ}) == want


@pytest.mark.parametrize("expression,message", [
    ("object.spec.missing > 1", "no such key: missing"),
    ("1 / 0", "division by zero"),
    ("[].min()", "min called on empty list"),
    ("quantity('1.5').asInteger()", "cannot convert value to integer"),
    ("quantity('x')", "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
    ("ip('1.2.3')", 'IP Address "1.2.3" parse error during conversion from string: ParseAddr("1.2.3"): '
                    "unable to parse IP"),
    ("ip('::ffff:1.2.3.4')", "IPv4-mapped IPv6 address is not allowed"),
    ("cidr('10.0.0.0')", 'network address parse error during conversion from string: '
                         "netip.ParsePrefix(\"10.0.0.0\"): no '/'"),
])
def test_evaluation_errors(expression: str, message: str) -> None:
    """Evaluation errors carry the text Kubernetes' CEL runtime and libraries give."""
    with pytest.raises(cel.EvalError) as err:
        cel.compile(expression).evaluate({"object": OBJ})
    assert str(err.value) == message


@pytest.mark.parametrize("expression,kwargs,detail", [
    ("object.spec.replicas <=", {}, "compilation failed: ERROR: <input>:1:24: Syntax error: mismatched input "
     "'<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, "
     "STRING, BYTES, IDENTIFIER}\n | object.spec.replicas <=\n | .......................^"),
    ("params.maxReplicas > 1", {"variables": ("object",)},
     "compilation failed: ERROR: <input>:1:1: undeclared reference to 'params' (in container '')\n"
     " | params.maxReplicas > 1\n | ^"),
    ("1 + 'a'", {}, "compilation failed: ERROR: <input>:1:3: found no matching overload for '_+_' applied to "
                    "'(int, string)'\n | 1 + 'a'\n | ..^"),
    ("'text'", {"returns": ("bool",)}, "must evaluate to bool"),
    ("1", {"returns": ("string", "null_type")}, "must evaluate to one of [string null_type]"),
])
def test_compile_errors(expression: str, kwargs: dict[str, Any], detail: str) -> None:
    """Compile errors read as the detail of kube's field error; result types are checked where kube checks them."""
    with pytest.raises(cel.CompileError) as err:
        cel.compile(expression, **kwargs)
    assert err.value.detail == detail


def test_dynamic_results_pass_the_type_check() -> None:
    """An expression over dynamically typed variables is accepted for any wanted type and checked when it runs."""
    assert cel.compile("object.spec.replicas", returns=("bool",)).output_type == "dyn"


def test_programs_are_cached() -> None:
    """Compiling the same expression twice gives the same program, and a compile error is cached too."""
    assert cel.compile("object.x == 1") is cel.compile("object.x == 1")
    with pytest.raises(cel.CompileError) as first:
        cel.compile("(((")
    with pytest.raises(cel.CompileError) as second:
        cel.compile("(((")
    assert first.value is second.value


def test_authorizer_checks_through_the_callback() -> None:
    """authorizer checks reach the callback with the built attributes; requestResource starts from the request."""
    seen: list[dict[str, Any]] = []

    def check(attrs: Any) -> tuple[bool, str]:
        seen.append(dict(attrs))
        return attrs.get("resource") == "pods", "RBAC: allowed"

    az = cel.Authorizer(check, request_resource={"group": "apps", "resource": "deployments", "namespace": "ns"})
    prog = cel.compile("authorizer.group('').resource('pods').namespace('ns').name('p').check('get').allowed() && "
                       "!authorizer.requestResource.subresource('scale').check('update').allowed()")
    assert prog.evaluate({"authorizer": az}) is True
    assert seen == [
        {"user": None, "group": "", "resource": "pods", "namespace": "ns", "name": "p", "verb": "get"},
        {"user": None, "group": "apps", "resource": "deployments", "namespace": "ns", "subresource": "scale",
         "verb": "update"}]
    sa = cel.compile("authorizer.serviceAccount('ns', 'sa').path('/healthz').check('get').reason()")
    assert sa.evaluate({"authorizer": az}) == "RBAC: allowed"
    assert seen[-1]["user"]["name"] == "system:serviceaccount:ns:sa" and seen[-1]["path"] == "/healthz"


def test_authorizer_errors_are_decisions() -> None:
    """A failing authorizer yields a decision that errored, not an evaluation error."""
    def boom(attrs: Any) -> tuple[bool, str]:
        raise RuntimeError("authorizer down")

    prog = cel.compile("authorizer.group('').resource('pods').check('get').errored()")
    assert prog.evaluate({"authorizer": cel.Authorizer(boom)}) is True


@pytest.mark.parametrize("name,ok", [("replicas", True), ("_x1", True), ("1x", False), ("namespace", False),
                                     ("a-b", False)])
def test_is_identifier(name: str, ok: bool) -> None:
    """Variable names must be CEL identifiers and not reserved words."""
    assert cel.is_identifier(name) is ok
