"""POST /e: cookies, visitor identity and hostile input (never a 500, never an injected header)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from conftest import runtime_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"


def site(**extra: Any) -> dict[str, Any]:
    return {"hosts": [HOST, "www.shop.test"], "allowed_origins": [ORIGIN], **extra}


def headers(**extra: str) -> dict[str, str]:
    return {"Host": HOST, "Origin": ORIGIN, "Content-Type": "text/plain",
            "User-Agent": "Mozilla/5.0 (test)", **extra}  # fmt: skip


def page(url: str = "https://www.shop.test/?fbclid=AbC-123", **extra: Any) -> str:
    return json.dumps({"event": "PageView", "url": url, **extra})


def set_cookies(resp: Any) -> dict[str, str]:
    out = {}
    for line in resp.headers.getall("Set-Cookie", []):
        name, _, rest = line.partition("=")
        out[name] = rest.split(";")[0]
    return out


@pytest.fixture
async def client(make_config: Any, gateway: Any) -> Any:
    return await gateway(make_config(site=site()), run_workers=False)


async def test_first_hit_sets_first_party_cookies_and_appends(client: Any) -> None:
    resp = await client.post("/e", data=page(), headers=headers())
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    cookies = set_cookies(resp)
    assert re.fullmatch(r"fb\.1\.\d{13}\.AbC-123", cookies["_fbc"])
    assert re.fullmatch(r"fb\.1\.\d{13}\.\d+", cookies["_fbp"])
    lines = resp.headers.getall("Set-Cookie")
    assert all("Domain=shop.test" in line and "SameSite=Lax" in line for line in lines)
    assert all('"' not in line and "Partitioned" not in line for line in lines)
    assert [line for line in lines if "HttpOnly" in line] == [
        line for line in lines if line.startswith("_sgv=")
    ]
    counts = await runtime_of(client).store.counts()
    assert sum(counts.values()) == 1


async def test_returning_visitor_keeps_fbc_creation_time_and_fbp(client: Any) -> None:
    first = set_cookies(await client.post("/e", data=page(), headers=headers()))
    jar = "; ".join(f"{k}={v}" for k, v in first.items())
    again = set_cookies(await client.post("/e", data=page(), headers=headers(Cookie=jar)))
    assert again["_fbc"] == first["_fbc"]
    assert again["_fbp"] == first["_fbp"]
    assert again["_sgv"] == first["_sgv"]


async def test_lost_vendor_cookie_is_restored_from_the_profile(client: Any) -> None:
    first = set_cookies(await client.post("/e", data=page(), headers=headers()))
    only_visitor = f"_sgv={first['_sgv']}"
    plain = page("https://www.shop.test/cart")
    again = set_cookies(await client.post("/e", data=plain, headers=headers(Cookie=only_visitor)))
    assert again["_fbc"] == first["_fbc"]
    assert again["_fbp"] == first["_fbp"]


async def test_simultaneous_first_hits_with_one_candidate_get_one_fbp(client: Any) -> None:
    vid = f"{int(time.time() * 1000)}-0123456789abcdef"
    a = set_cookies(await client.post("/e", data=page(vid=vid), headers=headers()))
    b = set_cookies(await client.post("/e", data=page(vid=vid), headers=headers()))
    assert a["_fbp"] == b["_fbp"]
    assert a["_sgv"] == b["_sgv"]


async def test_forged_visitor_cookie_is_replaced(client: Any) -> None:
    forged = "_sgv=1795778394546-f42428d7e54d4882.AAAAAAAAAAAAAAAAAAAAAA"
    cookies = set_cookies(await client.post("/e", data=page(), headers=headers(Cookie=forged)))
    assert cookies["_sgv"] != forged.split("=", 1)[1]


async def test_malformed_vendor_cookie_is_replaced_not_echoed(client: Any) -> None:
    jar = '_fbc=garbage; _fbp="fb.1.x"; _gcl_aw=nope'
    cookies = set_cookies(await client.post("/e", data=page(), headers=headers(Cookie=jar)))
    assert cookies["_fbc"].endswith(".AbC-123")
    assert cookies["_fbp"].startswith("fb.1.")
    assert "_gcl_aw" not in cookies


async def test_untrusted_x_forwarded_for_is_ignored(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(site=site()), run_workers=False)
    await client.post("/e", data=page(), headers=headers(**{"X-Forwarded-For": "203.0.113.9"}))
    rows = await runtime_of(client).store.lease("shop:meta", 10, time.time(), 30)
    assert json.loads(rows[0].record)["u"]["ip"] == "127.0.0.1"


async def test_trusted_proxy_x_forwarded_for_is_used(make_config: Any, gateway: Any) -> None:
    config = make_config(site=site(), server={"trusted_proxies": ["127.0.0.0/8"]})
    client = await gateway(config, run_workers=False)
    xff = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    await client.post("/e", data=page(), headers=headers(**xff))
    rows = await runtime_of(client).store.lease("shop:meta", 10, time.time(), 30)
    assert json.loads(rows[0].record)["u"]["ip"] == "203.0.113.9"


async def test_same_origin_path_mode_needs_no_origin_entry(client: Any) -> None:
    same = {"Host": "www.shop.test", "Origin": "http://www.shop.test"}
    resp = await client.post("/e", data=page(), headers=headers(**same))
    assert resp.status == 204


async def test_preflight_only_for_allowed_origins(client: Any) -> None:
    ok = await client.options("/e", headers={"Host": HOST, "Origin": ORIGIN})
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    bad = await client.options("/e", headers={"Host": HOST, "Origin": "https://evil.example"})
    assert bad.status == 403
    assert "Access-Control-Allow-Origin" not in bad.headers


async def test_loader_is_served_with_collect_reference_and_validators(client: Any) -> None:
    resp = await client.get("/sg.js", headers={"Host": HOST, "Accept-Encoding": "gzip"})
    assert resp.status == 200
    body = await resp.text()
    assert "__SG_COLLECT__" not in body
    assert resp.headers["Content-Type"].startswith("application/javascript")
    etag = resp.headers["ETag"]
    cached = await client.get("/sg.js", headers={"Host": HOST, "If-None-Match": etag})
    assert cached.status == 304


BAD = [
    ("not-json", b"{nope", {}, 400),
    ("array", b"[]", {}, 400),
    ("huge", b'{"event":"PageView","x":"' + b"a" * 70_000 + b'"}', {}, 413),
    ("foreign-origin", page().encode(), {"Origin": "https://evil.example"}, 403),
    ("unknown-host", page().encode(), {"Host": "evil.example"}, 404),
    ("crlf-event", json.dumps({"event": "A\r\nSet-Cookie: x=1"}).encode(), {}, 400),
    ("bad-url", json.dumps({"event": "PageView", "url": "javascript:1"}).encode(), {}, 400),
    ("crlf-in-fbclid", page("https://www.shop.test/?fbclid=a%0d%0aSet-Cookie:%20x=1").encode(),
     {}, 204),
    ("quote-cookie", page().encode(), {"Cookie": '_fbc="a;b"; _sgv="x y"; =; ;;'}, 204),
    ("gzip-garbage", b"\x1f\x8b\x08\x00junk", {"Content-Encoding": "gzip"}, 400),
]  # fmt: skip


@pytest.mark.parametrize(("body", "extra", "status"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
async def test_hostile_input(client: Any, body: bytes, extra: dict[str, str], status: int) -> None:
    resp = await client.post("/e", data=body, headers=headers(**extra))
    assert resp.status == status, await resp.text()
    for line in resp.headers.getall("Set-Cookie", []):
        assert "\r" not in line
        assert "\n" not in line
        assert not line.startswith("x=")
    if status == 403:
        assert "Access-Control-Allow-Origin" not in resp.headers


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["event", "url", "data", "user", "consent",
                                                       "vid", "referrer", "event_id", "x"]),
                                      inner, max_size=5), max_leaves=15))  # fmt: skip
async def test_arbitrary_json_never_500(client: Any, body: Any) -> None:
    resp = await client.post("/e", data=json.dumps(body), headers=headers())
    assert resp.status < 500


async def test_ldu_region_header_marks_events_for_meta(make_config: Any, gateway: Any) -> None:
    consent = {"ldu_regions": ["US-CA"], "region_header": "X-Region"}
    client = await gateway(make_config(site=site(consent=consent)), run_workers=False)
    await client.post("/e", data=page(), headers=headers(**{"X-Region": "us-ca"}))
    await client.post("/e", data=page(), headers=headers(**{"X-Region": "US-NY"}))
    rows = await runtime_of(client).store.lease("shop:meta", 10, time.time(), 30)
    assert [json.loads(r.record).get("ldu") for r in rows] == [1, None]
