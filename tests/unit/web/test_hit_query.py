"""The hit proxy's query decoding agrees with yarl's (`request.query`) on every admitted query."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from gateway.web.hits import _QUERY_RE, decode_query


def yarl_pairs(raw: str) -> list[tuple[str, str]]:
    return list(URL.build(query_string=raw, encoded=True).query.items())


ADMITTED = st.text(alphabet=st.sampled_from([chr(c) for c in (0x21, *range(0x24, 0x7F))]))
ESCAPES = st.binary(max_size=8).map(lambda b: "".join(f"%{x:02X}" for x in b))
PIECES = st.lists(
    st.one_of(ADMITTED, ESCAPES, st.sampled_from(["&", "=", "+", "%", "%2", "%zz", "%2B", "&&"])),
    max_size=12,
).map("".join)
ENCODED = st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=6).map(
    lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
)


@given(raw=PIECES | ENCODED)
def test_decoding_matches_yarl(raw: str) -> None:
    assert _QUERY_RE.fullmatch(raw)
    assert decode_query(raw) == yarl_pairs(raw)


def test_examples() -> None:
    assert decode_query("") == []
    assert decode_query("a=1&&b&c=x+y&=v") == [("a", "1"), ("b", ""), ("c", "x y"), ("", "v")]
    assert decode_query("dl=https%3A%2F%2Fshop.test%2F%3Fq%3D1&p=%2B") == [
        ("dl", "https://shop.test/?q=1"),
        ("p", "+"),
    ]
    assert decode_query("bad=%FF%FE") == yarl_pairs("bad=%FF%FE")  # yarl decides invalid UTF-8
