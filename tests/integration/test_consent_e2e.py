"""Consent end to end (issue #10 item 7): explicit denial deletes every tracking cookie, restricted
tiers never become a platform's dead letter, known visitors keep their vendor ids, and
`/v1/events` honours an explicit `consent` object like the browser."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import ADMIN_TOKEN, FakeClock, auth, runtime_of

from gateway.store.base import ProfileQuery

ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"
MSCLKID = "0123456789abcdef0123456789abcdef"
LANDING = (
    "https://www.shop.test/?fbclid=AbC-123&gclid=Cj0KCQ&ttclid=E.C.P.x"
    f"&sccid=snapclick123&msclkid={MSCLKID}"
)
TRACKING = {
    "_fbc",
    "_fbp",
    "_gcl_aw",
    "ttclid",
    "_ttp",
    "_scid",
    "_scclid",
    "_uetmsclkid",
    "_ga",
    "_sgv",
}
DENIED = {k: "denied" for k in ("ad_storage", "analytics_storage", "ad_user_data")}
UA = "Mozilla/5.0 (consent test)"


def site(**extra: Any) -> dict[str, Any]:
    return {"hosts": [HOST, "www.shop.test"], "allowed_origins": [ORIGIN], **extra}


def headers(**extra: str) -> dict[str, str]:
    return {"Host": HOST, "Origin": ORIGIN, "Content-Type": "text/plain", "User-Agent": UA,
            **extra}  # fmt: skip


def body(event: str = "PageView", url: str = LANDING, **extra: Any) -> str:
    return json.dumps({"event": event, "url": url, **extra})


def set_cookie_lines(resp: Any) -> dict[str, str]:
    return {line.split("=", 1)[0]: line for line in resp.headers.getall("Set-Cookie", [])}


def jar_of(lines: dict[str, str]) -> str:
    return "; ".join(line.split(";", 1)[0] for line in lines.values())


async def debug_recent(client: Any) -> dict[str, Any]:
    resp = await client.get("/v1/debug/recent", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


# --- 1. explicit denial deletes every tracking cookie -------------------------------------------


@pytest.mark.parametrize("cookie_domain", [None, "shop.test"])
async def test_consent_denial_deletes_every_tracking_cookie_on_its_domain(
    make_config: Any, gateway: Any, cookie_domain: str | None
) -> None:
    extra = {"cookie_domain": cookie_domain} if cookie_domain else {}
    client = await gateway(make_config(site=site(**extra)), run_workers=False)
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers()))
    assert set(first) >= TRACKING, "the landing hit sets every tracking cookie"
    deny = json.dumps({"event": "sg:consent", "consent": DENIED})
    resp = await client.post("/e", data=deny, headers=headers(Cookie=jar_of(first)))
    assert resp.status == 204
    lines = set_cookie_lines(resp)
    assert set(lines) == TRACKING | {"_sgc"}
    for name in TRACKING:
        attrs = lines[name].split("; ")
        assert attrs[0] == f"{name}=", lines[name]
        assert "Max-Age=0" in attrs
        assert "Path=/" in attrs
        assert "Domain=shop.test" in attrs, "deleted on the domain it was set on"
    assert "Max-Age=0" not in lines["_sgc"], "the consent state itself is kept"


async def test_a_cmp_cookie_mapped_to_none_is_an_explicit_denial(
    make_config: Any, gateway: Any
) -> None:
    consent = {"cmp_cookie": "cmp", "cmp_mapping": {"reject": "none", "accept": "full"}}
    client = await gateway(make_config(site=site(consent=consent)), run_workers=False)
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers()))
    jar = jar_of(first) + "; cmp=reject"
    resp = await client.post("/e", data=body(url=ORIGIN + "/cart"), headers=headers(Cookie=jar))
    lines = set_cookie_lines(resp)
    assert set(lines) == TRACKING
    assert all("Max-Age=0" in line for line in lines.values())


def tc_string_without_purposes() -> str:
    """A TCF v2 core segment with no purpose consent at all (fields in specification order)."""
    bits = (
        "000010" + "0" * 72 + "0" * 24 + "0" * 6 + "000100" * 2 + "0" * 12 + "000100"
        + "0" * 2 + "0" * 12 + "0" * 48 + "0" + "000100" * 2 + "0" * 17 + "0" * 17 + "0" * 12
    )  # fmt: skip
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


async def test_a_tcf_string_without_purpose_one_deletes_them_too(
    make_config: Any, gateway: Any
) -> None:
    client = await gateway(make_config(site=site(consent={"tcf": True})), run_workers=False)
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers()))
    jar = jar_of(first) + f"; euconsent-v2={tc_string_without_purposes()}"
    resp = await client.post("/e", data=body(url=ORIGIN + "/cart"), headers=headers(Cookie=jar))
    lines = set_cookie_lines(resp)
    assert set(lines) == TRACKING
    assert all("Max-Age=0" in line for line in lines.values())
    assert runtime_of(client).collect.stats.consent_reasons["tcf:purpose1_denied"] == 1  # type: ignore[union-attr]


async def test_the_default_tier_alone_deletes_nothing(make_config: Any, gateway: Any) -> None:
    client = await gateway(make_config(site=site()), run_workers=False)
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers()))
    # The operator switches the default to none: not the visitor's choice, nothing is deleted.
    strict = await gateway(make_config(site=site(consent={"default": "none"})), run_workers=False)
    resp = await strict.post("/e", data=body(), headers=headers(Cookie=jar_of(first)))
    assert resp.status == 204
    assert resp.headers.getall("Set-Cookie", []) == []


# --- 2. GPC / analytics tier: consent_denied, never an invalid_field dead letter ----------------


async def test_gpc_and_analytics_tier_events_are_consent_denied_not_dead(
    make_config: Any, gateway: Any, meta_sandbox: Any
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(make_config(base, site=site()), run_workers=False)
    gpc = await client.post("/e", data=body(), headers=headers(**{"Sec-GPC": "1"}))
    assert gpc.status == 204
    analytics = {"ad_storage": "denied", "ad_user_data": "denied", "analytics_storage": "granted"}
    resp = await client.post("/e", data=body(consent=analytics), headers=headers())
    assert resp.status == 204
    full = await client.post("/e", data=body(url=ORIGIN + "/full"), headers=headers())
    assert full.status == 204
    runtime = runtime_of(client)
    await runtime.workers["shop:meta"].drain()
    assert await runtime.store.dead_letters("shop:meta", 10) == []
    assert [e["event_source_url"] for e in sandbox.recorder.accepted] == [ORIGIN + "/full"]
    assert (await debug_recent(client))["consent_denied"] == {"shop:meta": 2}
    assert runtime.collect is not None
    assert runtime.collect.stats.by_tier["analytics"] == 2


# --- 3. a malformed vendor cookie of a known visitor is restored from the profile -------------


async def test_malformed_vendor_cookies_of_a_known_visitor_are_restored(
    make_config: Any, gateway: Any
) -> None:
    client = await gateway(make_config(site=site()), run_workers=False)
    # The vendors' own scripts set these before the gateway ever saw the visitor.
    own = "_fbp=fb.1.1700000000000.987654321; _ttp=abcdefghijklmnopqrst; _scid=ABCDEFGHIJKLMNOPQRST"
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers(Cookie=own)))
    assert first["_fbp"].startswith("_fbp=fb.1.1700000000000.987654321;")
    visitor = first["_sgv"].split(";", 1)[0]
    fbc = first["_fbc"].split(";", 1)[0]
    broken = f"{visitor}; {fbc}; _fbp=garbage; _ttp=bad; _scid=%%"
    plain = body(url=ORIGIN + "/cart")
    again = set_cookie_lines(await client.post("/e", data=plain, headers=headers(Cookie=broken)))
    for name in ("_fbp", "_ttp", "_scid", "_fbc"):
        assert again[name].split(";", 1)[0] == first[name].split(";", 1)[0], name
    # A malformed click cookie alone sends the hit to the profile too.
    whole = "; ".join(again[n].split(";", 1)[0] for n in ("_sgv", "_fbc", "_fbp", "_ttp", "_scid"))
    jar = whole + "; _gcl_aw=nope"
    third = set_cookie_lines(await client.post("/e", data=plain, headers=headers(Cookie=jar)))
    assert third["_gcl_aw"].split(";", 1)[0] == first["_gcl_aw"].split(";", 1)[0]


# --- 4. /v1/events with an explicit consent object ---------------------------------------------


def api_event(event_id: str, consent: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event": "Purchase",
        "event_id": event_id,
        "time": int(time.time()) - 5,
        "url": "https://www.shop.test/thanks",
        "user": {"email": "jane@example.com", "ip": "203.0.113.7", "user_agent": UA},
        "data": {"value": 10, "currency": "EUR"},
    }
    if consent is not None:
        doc["consent"] = consent
    return doc


@pytest.mark.parametrize("single", [True, False])
async def test_api_events_with_denied_consent_are_not_forwarded(
    make_config: Any, gateway: Any, meta_sandbox: Any, single: bool
) -> None:
    sandbox, base = meta_sandbox
    client = await gateway(make_config(base), run_workers=False)
    denied = api_event("o-denied", {"ad_storage": "denied", "ad_user_data": "denied"})
    user_data = api_event("o-user-data", {"ad_storage": "granted", "ad_user_data": "denied"})
    analytics = api_event(
        "o-analytics",
        {"ad_storage": "denied", "ad_user_data": "denied", "analytics_storage": "granted"},
    )
    granted = api_event("o-granted", {"ad_storage": "granted", "ad_user_data": "granted"})
    plain = api_event("o-plain")
    events = [denied, user_data, analytics, granted, plain]
    if single:  # one event per request: the typed fast road must not skip the consent check
        for event in events:
            resp = await client.post("/v1/events", json={"events": [event]}, headers=auth())
            assert resp.status == 202, await resp.text()
    else:
        resp = await client.post("/v1/events", json={"events": events}, headers=auth())
        assert resp.status == 202
        assert (await resp.json())["accepted"] == 5
    runtime = runtime_of(client)
    recent = await debug_recent(client)
    assert recent["consent_denied"] == {"shop:meta": 3}
    assert sorted(d["event_id"] for d in recent["deliveries"]) == ["o-granted", "o-plain"]
    await runtime.workers["shop:meta"].drain()
    assert sorted(e["event_id"] for e in sandbox.recorder.accepted) == ["o-granted", "o-plain"]
    assert await runtime.store.dead_letters("shop:meta", 10) == []


async def test_api_denied_event_does_not_teach_the_visitor_profile(
    make_config: Any, gateway: Any
) -> None:
    client = await gateway(make_config(site=site()), run_workers=False)
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers()))
    vid = first["_sgv"].split("=", 1)[1].split(";", 1)[0].rsplit(".", 1)[0]
    event = api_event("o-1", {"ad_storage": "denied", "ad_user_data": "denied"})
    event["user"]["visitor_id"] = vid
    resp = await client.post("/v1/events", json={"events": [event]}, headers=auth())
    assert resp.status == 202
    (profile,) = await runtime_of(client).store.find_profiles("shop", [ProfileQuery(vid)])
    assert profile is not None
    assert not any(profile.hashed.values()), "a denied event teaches the profile nothing"


async def test_a_known_visitor_missing_only_its_ga_cookie_gets_the_same_one_back(
    make_config: Any, gateway: Any
) -> None:
    """`_ga` is carried like `_fbp` (GA4's CookieSpec): a known visitor whose other cookies are
    all there but `_ga` is gone reads the profile and keeps its GA client id, not a new one."""
    clock = FakeClock(time.time())
    client = await gateway(make_config(site=site()), run_workers=False, clock=clock)
    first = set_cookie_lines(await client.post("/e", data=body(), headers=headers()))
    kept = ("_sgv", "_fbc", "_fbp", "_ttp", "_scid")
    jar = "; ".join(first[n].split(";", 1)[0] for n in kept)
    clock.advance(86_400.0)  # a new _ga would carry another creation time
    again = set_cookie_lines(
        await client.post("/e", data=body(url=ORIGIN + "/cart"), headers=headers(Cookie=jar))
    )
    assert again["_ga"].split(";", 1)[0] == first["_ga"].split(";", 1)[0]
