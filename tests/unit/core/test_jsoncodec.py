"""The request-path JSON codec: orjson, with the stdlib deciding what orjson refuses."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.jsoncodec import dumps, loads


def test_nan_and_lone_surrogates_decode_as_the_stdlib_does() -> None:
    assert math.isnan(loads(b'{"v": NaN}')["v"])
    assert loads(b'{"v": Infinity}')["v"] == math.inf
    assert loads(b'"ab\\ud800cd"') == "ab\ud800cd"


@pytest.mark.parametrize("text", [b"", b"[1,2", b"\xff\xfe", b'{"a" 1}', b"nul", b'{"a": 1} x'])
def test_what_neither_decodes_raises_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract is "some ValueError"
        loads(text)


def test_deep_nesting_raises_rather_than_crashing() -> None:
    with pytest.raises((ValueError, RecursionError)):
        loads(b"[" * 100_000 + b"]" * 100_000)


def test_integers_beyond_64_bits_come_back_as_floats() -> None:
    # documented difference: the event parser refuses such ids with a precise error
    assert loads(b"123456789012345678901234567890") == pytest.approx(1.2345678901234568e29)
    assert loads(b"9223372036854775807") == 2**63 - 1


def test_dumps_is_compact_utf8() -> None:
    obj = {"a": [1, 2.5, None, True], "é": "ü\u2028"}
    assert dumps(obj) == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_agrees_with_the_stdlib(value: object) -> None:
    text = json.dumps(value).encode()
    assert loads(text) == json.loads(text)
    assert json.loads(dumps(value)) == json.loads(text)
