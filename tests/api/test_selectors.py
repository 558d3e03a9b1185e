"""Label selector parsing, matching and metav1.LabelSelector conversion (expected messages recorded from kubectl 1.32's parser)."""

import pytest

from pocketkube.api import errors, selectors

QNAME = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
         "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
         "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LVALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
          "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
          "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


@pytest.mark.parametrize("text,canonical", [
    ("", ""),
    ("app=web", "app=web"),
    ("app==web", "app==web"),
    ("app!=web", "app!=web"),
    ("b=1,a=2", "a=2,b=1"),
    ("env in (prod, dev)", "env in (dev,prod)"),
    ("env notin (a)", "env notin (a)"),
    ("tier", "tier"),
    ("!tier", "!tier"),
    ("a in ()", "a in ()"),
    ("a in (,b)", "a in (,b)"),
    ("a=", "a="),
    ("x>5,y<10", "x>5,y<10"),
    ("  a =  b ,\tc\n", "a=b,c"),
    ("example.com/x in (a,b), !y ,z>5", "example.com/x in (a,b),!y,z>5"),
    ("p/" + "a" * 63 + "=v", "p/" + "a" * 63 + "=v"),
])
def test_parse_round_trips_to_kube_canonical_form(text, canonical):
    """A valid selector parses and prints sorted by key in kube's String() form."""
    assert str(selectors.parse(text)) == canonical


@pytest.mark.parametrize("text,message", [
    ("a+b=c", f'unable to parse requirement: <nil>: Invalid value: "a+b": name part {QNAME}'),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("x y", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a=b,", "found '', expected: identifier after ','"),
    ("a=-x", f'unable to parse requirement: values[0][a]: Invalid value: "-x": {LVALUE}'),
    ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, "
            "the value must be an integer"),
    ("a>-x", "unable to parse requirement: [values[0]: Invalid value: \"-x\": for 'Gt', 'Lt' operators, "
             f"the value must be an integer, values[0][a]: Invalid value: \"-x\": {LVALUE}]"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("a,,b", "found ',', expected: identifier after ','"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("(", "found '(', expected: !, identifier, or 'end of string'"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
    ("a/", f'unable to parse requirement: <nil>: Invalid value: "a/": name part must be non-empty; name part {QNAME}'),
    ("a" * 64, f'unable to parse requirement: <nil>: Invalid value: "{"a" * 64}": name part must be no more than 63 characters'),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a!b", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
    ("a<99999999999999999999", "unable to parse requirement: values[0]: Invalid value: \"99999999999999999999\": "
                               "for 'Gt', 'Lt' operators, the value must be an integer"),
])
def test_parse_errors_match_kube_wording(text, message):
    """A bad selector is a 400 BadRequest worded exactly as kube-apiserver's labels.Parse error."""
    with pytest.raises(errors.BadRequest) as e:
        selectors.parse(text)
    assert e.value.message == message
    assert e.value.status()["code"] == 400


@pytest.mark.parametrize("text,labels,expected", [
    ("", None, True),
    ("app=web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app=web", {}, False),
    ("app!=web", {}, True),
    ("app!=web", {"app": "web"}, False),
    ("env in (a,b)", {"env": "b"}, True),
    ("env notin (a,b)", {"env": "c"}, True),
    ("env notin (a,b)", {}, True),
    ("tier", {"tier": ""}, True),
    ("!tier", {"tier": ""}, False),
    ("x>5", {"x": "6"}, True),
    ("x>5", {"x": "5"}, False),
    ("x<5", {"x": "-1"}, True),
    ("x>5", {"x": "six"}, False),
    ("x>5", {}, False),
    ("a=1,b=2", {"a": "1", "b": "2"}, True),
    ("a=1,b=2", {"a": "1"}, False),
])
def test_matches(text, labels, expected):
    """Requirements are ANDed and follow labels.Requirement.Matches per operator."""
    assert selectors.parse(text).matches(labels) is expected


def test_empty_and_exact_match():
    """The empty selector is Empty(); an = or single-value in requirement pins a key."""
    assert selectors.parse("").empty
    sel = selectors.parse("a=1,b in (x),c in (y,z)")
    assert not sel.empty
    assert sel.requires_exact_match("a") == "1"
    assert sel.requires_exact_match("b") == "x"
    assert sel.requires_exact_match("c") is None


@pytest.mark.parametrize("sel,text", [
    ({"matchLabels": {"app": "web"}}, "app=web"),
    ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}]}, "env in (a,b)"),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["x"]}]}, "env notin (x)"),
    ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, "t"),
    ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, "!t"),
    ({"matchLabels": {"z": "1"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]}, "a,z=1"),
])
def test_from_label_selector_and_format(sel, text):
    """metav1.LabelSelector converts like LabelSelectorAsSelector and formats like FormatLabelSelector."""
    assert str(selectors.from_label_selector(sel)) == text
    assert selectors.format(sel) == text


def test_nil_versus_empty_label_selector():
    """A nil selector matches nothing (or everything on request); an empty one matches everything."""
    assert not selectors.from_label_selector(None).matches({"a": "b"})
    assert selectors.from_label_selector(None, nil_matches_everything=True).matches({"a": "b"})
    assert selectors.from_label_selector({}).matches({"a": "b"})
    assert selectors.from_label_selector({}).empty
    assert selectors.format(None) == "<none>"
    assert selectors.format({}) == "<none>"


@pytest.mark.parametrize("sel,message", [
    ({"matchExpressions": [{"key": "a", "operator": "In"}]},
     "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist'),
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
     '"Gt" is not a valid label selector operator'),
    ({"matchLabels": {"a b": "x"}}, f'key: Invalid value: "a b": name part {QNAME}'),
    ({"matchLabels": {"a": "-x"}}, f'values[0][a]: Invalid value: "-x": {LVALUE}'),
    ({"matchLabels": ["a"]}, "matchLabels must be an object, not array"),
    ({"matchLabels": {"a": 1}}, "matchLabels[a] must be a string, not number"),
    ({"matchExpressions": {"key": "a"}}, "matchExpressions must be an array, not object"),
    ("app=web", "label selector must be an object, not string"),
])
def test_bad_label_selector_is_bad_request(sel, message):
    """Invalid or ill-typed metav1.LabelSelectors raise BadRequest, and format() says <error>."""
    with pytest.raises(errors.BadRequest) as e:
        selectors.from_label_selector(sel)
    assert e.value.message == message
    assert selectors.format(sel) == "<error>"


@pytest.mark.parametrize("value", [None, 5, ["a=b"], {"a": "b"}])
def test_parse_rejects_non_strings(value):
    """Only strings parse; anything else is a BadRequest, never a crash."""
    with pytest.raises(errors.BadRequest):
        selectors.parse(value)


def test_from_set():
    """labels.SelectorFromSet selects objects carrying every pair."""
    sel = selectors.from_set({"b": "2", "a": "1"})
    assert str(sel) == "a=1,b=2"
    assert sel.matches({"a": "1", "b": "2", "c": "3"})
    assert not sel.matches({"a": "1"})
