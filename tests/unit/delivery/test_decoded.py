"""DecodeCache: one decode of a stored record serves every route (gateway/delivery/decoded.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Event, Source
from gateway.core.record import decode, encode
from gateway.delivery import decoded as decoded_module
from gateway.delivery.decoded import DecodeCache

text = st.text(max_size=12)
digests = st.lists(st.text("0123456789abcdef", min_size=64, max_size=64), min_size=1, max_size=2)
records = st.fixed_dictionaries(
    {
        "e": text,
        "id": text,
        "t": st.integers(0, 2**40),
        "s": st.sampled_from([s.value for s in Source]),
        "u": st.fixed_dictionaries(
            {},
            optional={
                "ip": text,
                "h": st.dictionaries(
                    st.sampled_from(["meta", "google"]),
                    st.dictionaries(st.sampled_from(["em", "ph"]), digests),
                ),
                "cid": st.dictionaries(st.sampled_from(["ga", "gclid"]), text),
            },
        ),
        "d": st.fixed_dictionaries(
            {},
            optional={
                "value": st.floats(0, 1e6),
                "currency": text,
                "contents": st.lists(st.tuples(text, st.integers(1, 9), st.floats(0, 99))),
            },
        ),
    },
    optional={"url": text, "ch": st.sampled_from(["api", "loader"]), "ldu": st.just(1)},
)


@given(doc=records)
@settings(max_examples=50, deadline=None)
def test_a_cached_event_equals_a_fresh_decode(doc: dict[str, Any]) -> None:
    record = encode(decode(json.dumps(doc).encode()))
    cache = DecodeCache()
    first = cache.event(record)
    assert first == decode(record)
    assert cache.event(bytes(record)) is first  # equal bytes from another lease: same event


def test_each_record_is_decoded_once_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = decoded_module.decode

    def counting(raw: bytes) -> Event:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(decoded_module, "decode", counting)
    records = [
        b'{"e":"Purchase","id":"e%d","t":1700000000,"s":"website","u":{},"d":{}}' % i
        for i in range(5)
    ]
    cache = DecodeCache(size=3)
    for _ in range(10):  # ten routes, one record
        assert cache.event(records[0]).event_id == "e0"
    assert len(calls) == 1
    for record in records:
        cache.event(record)
    assert len(cache) == 3  # the oldest went first
    cache.event(records[0])
    assert len(calls) == 1 + 4 + 1  # records[0] had been dropped: decoded again


def test_a_bad_record_raises_and_is_not_kept() -> None:
    cache = DecodeCache()
    for bad in (b"not json", b'{"e":"x"}', b'{"e":"x","id":"y","t":1,"s":"nowhere"}'):
        with pytest.raises((ValueError, KeyError, TypeError)):
            cache.event(bad)
    assert len(cache) == 0
