"""glmdata.jsontext: exact JSON text, the same as the standard library's, faster where it can be."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmdata import jsontext

_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)
_finite = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
              st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)  # fmt: skip


def _same(a, b) -> bool:
    """Equal as JSON values, NaN equal to NaN, and the same types (an integer is not its float)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(_values)
def test_loads_reads_what_json_loads_reads(value) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert _same(jsontext.loads(text), json.loads(text))
    assert _same(jsontext.loads(text.encode("utf-8", "surrogatepass")), json.loads(text)) or "\\ud" in text


def test_loads_keeps_integers_beyond_64_bits() -> None:
    big = 98765432109876543210987
    assert jsontext.loads(f'{{"n": {big}}}') == {"n": big}
    assert type(jsontext.loads(str(big))) is int


def test_loads_raises_json_errors_with_their_position() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        jsontext.loads('{"a": }')
    assert caught.value.pos == 6


@settings(max_examples=300, deadline=None)
@given(_finite)
def test_compact_writes_the_value_exactly_and_dumps_as_json_does(value) -> None:
    """compact: the same value back (orjson may spell a float differently: 0.00001 for 1e-05),
    integers beyond 64 bits included; dumps: json.dumps's text, byte for byte."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 text holds it
        return
    assert _same(json.loads(jsontext.compact(value)), value)
    assert b"\n" not in jsontext.compact(value) and b", " not in jsontext.compact([1, 2])
    assert jsontext.dumps(value) == json.dumps(value, ensure_ascii=False)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), _finite, max_size=6))
def test_canonical_is_the_same_for_any_key_order(value) -> None:
    reordered = dict(reversed(list(value.items())))
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return
    assert jsontext.canonical(value) == jsontext.canonical(reordered)
    assert json.loads(jsontext.canonical(value)) == value


def test_may_hold_long_number() -> None:
    assert jsontext.may_hold_long_number('{"n": 1234567890123456789}')
    assert not jsontext.may_hold_long_number('{"n": 123456789012345678}')
    assert jsontext.may_hold_long_number(b"x" * 5 + b"9" * 19)
