"""Name, label and DNS format checks against Kubernetes' exact wording."""

import pytest

from pocketkube.api import names

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
QNAME_PART = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
              "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
              "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")


@pytest.mark.parametrize("fn,value,expected", [
    (names.is_dns1123_subdomain, "example.com", []),
    (names.is_dns1123_subdomain, "Bad_Name", [SUBDOMAIN_MSG]),
    (names.is_dns1123_subdomain, "a" * 254, ["must be no more than 253 characters"]),
    (names.is_dns1123_label, "my-name", []),
    (names.is_dns1123_label, "a.b", ["must not contain dots"]),
    (names.is_dns1123_label, "-x", [LABEL_MSG]),
    (names.is_dns1123_label, "a" * 64, ["must be no more than 63 characters"]),
    (names.is_dns1035_label, "1abc", [DNS1035_MSG]),
    (names.is_dns1035_label, "abc", []),
    (names.is_qualified_name, "example.com/MyName", []),
    (names.is_qualified_name, "bad key", [QNAME_PART]),
    (names.is_qualified_name, "/x", ["prefix part must be non-empty"]),
    (names.is_label_value, "", []),
    (names.is_label_value, "a" * 64, ["must be no more than 63 characters"]),
    (names.is_config_map_key, "..x", ["must not start with '..'"]),
    (names.is_config_map_key, "key.name", []),
    (names.is_relaxed_env_var_name, "1X", []),
    (names.is_relaxed_env_var_name, "A=B", ["a valid environment variable name must consist only of printable "
                                            "ASCII characters other than '='"]),
    (names.is_valid_port_num, 70000, ["must be between 1 and 65535, inclusive"]),
    (names.is_valid_port_name, "http--x", ["must not contain consecutive hyphens"]),
    (names.is_valid_port_name, "1234", ["must contain at least one letter (a-z)"]),
    (names.is_path_segment_name, "..", ["may not be '..'"]),
    (names.is_path_segment_name, "a/b%", ["may not contain '/'", "may not contain '%'"]),
    (names.is_valid_ip, "10.0.0.1", []),
    (names.is_valid_ip, "10.0.0", ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]),
])
def test_format_checks(fn, value, expected):
    """Each checker returns exactly the messages apimachinery returns for the value."""
    assert fn(value) == expected


@pytest.mark.parametrize("name,valid", [("web-", True), ("Web-", False), ("x", True)])
def test_generate_name_prefix_allows_trailing_dash(name, valid):
    """generateName prefixes are checked with their trailing dash masked, as Kubernetes does."""
    assert (names.name_is_dns_subdomain(name, True) == []) is valid


def test_labels_errors_name_the_whole_map():
    """Label errors are reported on the labels path with the bad key or value, not per key."""
    errs = names.validate_labels({"ok": "fine", "bad key": "v", "k": "-bad"}, "metadata.labels")
    assert [e.field for e in errs] == ["metadata.labels", "metadata.labels"]
    assert errs[0].text().startswith('metadata.labels: Invalid value: "bad key": name part must consist')


def test_annotations_total_size_limit():
    """More than 256KiB of annotation keys and values is Too long on the annotations path."""
    errs = names.validate_annotations({"a": "x" * (256 * 1024)}, "metadata.annotations")
    assert [e.text() for e in errs] == ["metadata.annotations: Too long: must have at most 262144 bytes"]
    assert names.validate_annotations({"Example.COM/Key": "v"}, "metadata.annotations") == []
