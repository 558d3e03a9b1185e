"""resource.Quantity parsing and canonical printing."""

import pytest

from pocketkube.api import quantity


@pytest.mark.parametrize("text,canonical", [
    ("0.5", "500m"), ("1", "1"), (1, "1"), (0.25, "250m"), ("1500", "1500"), ("2000", "2k"), ("100m", "100m"),
    ("1024Mi", "1Gi"), ("1000Mi", "1000Mi"), ("0.5Gi", "512Mi"), ("1.5Gi", "1536Mi"), ("512", "512"),
    ("1e3", "1e3"), ("1.5e3", "1500"), ("1E6", "1e6"), ("0", "0"), ("0Mi", "0"), ("12k", "12k"),
    ("1Ki", "1Ki"), ("100Ki", "100Ki"), ("0.1", "100m"), ("0.0000000001", "1n"), ("-1", "-1"), ("1.0", "1"),
    ("500Mi", "500Mi"), ("1G", "1G"), ("1000M", "1G"), ("+5", "5"),
])
def test_canonical_form(text, canonical):
    """Quantities print the way the apiserver re-serializes them."""
    assert quantity.canonical(text) == canonical


@pytest.mark.parametrize("text,message", [
    ("abc", quantity.FORMAT_ERROR), ("", quantity.FORMAT_ERROR), ("1Xi", quantity.FORMAT_ERROR),
    ("1KK", quantity.SUFFIX_ERROR), ("1.2.3", quantity.NUMERIC_ERROR), (True, quantity.FORMAT_ERROR),
])
def test_bad_quantities(text, message):
    """Malformed quantities raise with the Go parser's message."""
    with pytest.raises(quantity.QuantityError) as e:
        quantity.parse(text)
    assert str(e.value) == message


@pytest.mark.parametrize("a,b,result", [("1", "1000m", 0), ("1Gi", "1G", 1), ("100m", "0.2", -1)])
def test_compare(a, b, result):
    """Comparison is by exact value, across suffixes."""
    assert quantity.compare(a, b) == result
