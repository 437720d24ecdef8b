"""Cross-device orders through the real routes: click on device A, buy on device B.

Device A lands from an ad (?fbclid=…&gclid=…), the buyer enters her e-mail there (identify);
days later device B enters the same e-mail; the backend then posts the Purchase (with B's
signed `_sgv` cookie value, or with no visitor id at all). The order must reach Meta with A's
click (fbc built on A), and its stored record must carry A's click ids of every platform.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import FakeClock, auth, runtime_of

from gateway.app import cookie_key
from gateway.destinations.meta.clickids import parse_fbc
from gateway.store.base import ProfileQuery
from gateway.web.cookies import sign_visitor_id

ORIGIN = "https://www.shop.test"
HEADERS = {"Host": "track.shop.test", "Origin": ORIGIN, "Content-Type": "text/plain"}
SITE = {"hosts": ["track.shop.test"], "allowed_origins": [ORIGIN]}
DAY = 86400.0
AD_URL = (
    "https://www.shop.test/?fbclid=ClickOnPhoneA&gclid=GclidA&ttclid=TtclidA"
    "&msclkid=0123456789abcdef0123456789abcdef&ScCid=SccidA&epik=EpikA&li_fat_id=LiFatA"
    "&rdt_cid=RdtA&twclid=TwclidA"
)
PHONE_CLICKS = {
    "gclid": "GclidA",
    "ttclid": "TtclidA",
    "msclkid": "0123456789abcdef0123456789abcdef",
    "sccid": "SccidA",
    "epik": "EpikA",
    "li_fat_id": "LiFatA",
    "rdt_cid": "RdtA",
    "twclid": "TwclidA",
}
"""Every platform's click id from the phone's ad landing (Meta's fbclid travels as its _fbc)."""


class Device:
    """One browser: keeps the cookies the gateway sets, sends them back on the next hit."""

    def __init__(self, client: Any, user_agent: str) -> None:
        self.client = client
        self.user_agent = user_agent
        self.cookies: dict[str, str] = {}

    async def hit(self, event: str, url: str, **extra: Any) -> None:
        headers = {**HEADERS, "User-Agent": self.user_agent}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        doc = {"event": event, "url": url, **extra}
        resp = await self.client.post("/e", data=json.dumps(doc), headers=headers)
        assert resp.status == 204, await resp.text()
        for header in resp.headers.getall("Set-Cookie", []):
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]

    async def identify(self, email: str) -> None:
        await self.hit("sg:identify", "https://www.shop.test/checkout", user={"email": email})

    @property
    def signed(self) -> str:
        return self.cookies["_sgv"]

    @property
    def visitor_id(self) -> str:
        return self.signed.rsplit(".", 1)[0]


async def shop_story(client: Any, clock: FakeClock) -> tuple[Device, Device]:
    """A clicks the ad and identifies; two days later B identifies with the same e-mail."""
    phone, laptop = Device(client, "PhoneUA"), Device(client, "LaptopUA")
    await phone.hit("PageView", AD_URL)
    clock.advance(60)
    await phone.identify("Jane.Doe@Example.com")
    clock.advance(2 * DAY)
    await laptop.hit("PageView", "https://www.shop.test/")
    await laptop.identify(" jane.doe@example.com ")
    clock.advance(DAY - 600)
    assert phone.visitor_id != laptop.visitor_id
    return phone, laptop


def purchase(event_id: str, visitor_id: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {"email": "jane.doe@example.com"}
    if visitor_id is not None:
        user["visitor_id"] = visitor_id
    return {
        "event": "Purchase",
        "event_id": event_id,
        "url": "https://www.shop.test/thanks",
        "user": user,
        "data": {"value": 42, "currency": "EUR", "order_id": event_id},
    }


@pytest.mark.parametrize("names_laptop", [True, False], ids=["with-B-sgv", "no-visitor-id"])
async def test_click_on_phone_purchase_on_laptop_reaches_meta_with_the_phone_click(
    make_config: Any, gateway: Any, meta_sandbox: Any, names_laptop: bool
) -> None:
    sandbox, base = meta_sandbox
    clock = FakeClock(time.time() - 3 * DAY)
    client = await gateway(make_config(base, site=SITE), clock=clock)
    phone, laptop = await shop_story(client, clock)
    clock.now = time.time()
    vid = laptop.signed if names_laptop else None
    resp = await client.post("/v1/events", json={"events": [purchase("o-1", vid)]}, headers=auth())
    assert resp.status == 202
    assert await resp.json() == {"accepted": 1, "deduplicated": 0, "rejected": []}

    def purchases() -> list[dict[str, Any]]:
        return [e for e in sandbox.recorder.accepted if e["event_name"] == "Purchase"]

    deadline = time.monotonic() + 30
    while not purchases():
        assert time.monotonic() < deadline, "the purchase never reached the Meta sandbox"
        await asyncio.sleep(0.05)
    (delivered,) = purchases()
    fbc = delivered["user_data"]["fbc"]
    assert fbc == phone.cookies["_fbc"]  # the phone's own _fbc: its creation time and fbclid
    parsed = parse_fbc(fbc)
    assert parsed is not None
    assert parsed.fbclid == "ClickOnPhoneA"
    # The browser ids are the named visitor's (the laptop), else the freshest one's (also B).
    assert delivered["user_data"]["fbp"] == laptop.cookies["_fbp"]
    assert delivered["user_data"]["client_user_agent"] == "LaptopUA"


async def test_stored_order_carries_every_platform_click_of_the_phone(
    make_config: Any, gateway: Any
) -> None:
    clock = FakeClock(time.time() - 3 * DAY)
    client = await gateway(make_config(site=SITE), clock=clock, run_workers=False)
    phone, laptop = await shop_story(client, clock)
    events = [purchase("o-plain", laptop.visitor_id), purchase("o-signed", laptop.signed)]
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202
    assert "warnings" not in await resp.json()
    leased = await runtime_of(client).store.lease("shop:meta", 100, 9e9, 30)
    records = {json.loads(d.record)["id"]: json.loads(d.record) for d in leased}
    for event_id in ("o-plain", "o-signed"):
        user = records[event_id]["u"]
        assert user["vid"] == laptop.visitor_id  # the signature checked, the bare id kept
        assert user["fbc"] == phone.cookies["_fbc"]
        for key, value in PHONE_CLICKS.items():
            assert user["cid"].get(key) == value, f"the phone's {key} is missing on the laptop"


async def test_a_tampered_signed_visitor_id_is_ignored_with_a_warning(
    make_config: Any, gateway: Any
) -> None:
    clock = FakeClock(time.time() - 3 * DAY)
    client = await gateway(make_config(site=SITE), clock=clock, run_workers=False)
    phone, laptop = await shop_story(client, clock)
    raw, sig = laptop.signed.rsplit(".", 1)
    forged = f"{phone.visitor_id}.{sig}"  # another visitor's id under the laptop's signature
    events = [purchase("o-1", forged), purchase("o-2", "plain-backend-id")]
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202
    body = await resp.json()
    assert body["accepted"] == 2
    assert body["warnings"] == [
        {
            "path": "events[0].user.visitor_id",
            "reason": "signed visitor cookie with a wrong signature: visitor id ignored",
        }
    ]
    leased = await runtime_of(client).store.lease("shop:meta", 100, 9e9, 30)
    records = {json.loads(d.record)["id"]: json.loads(d.record) for d in leased}
    # Not the forged id: the order is found by its e-mail, the freshest visitor (the laptop).
    assert records["o-1"]["u"]["vid"] == laptop.visitor_id
    assert records["o-1"]["u"]["fbc"] == phone.cookies["_fbc"]
    assert records["o-2"]["u"]["vid"] == "plain-backend-id"  # a plain id works as before
    assert raw == laptop.visitor_id


async def test_a_signed_visitor_id_on_the_stored_road_is_verified(
    make_config: Any, gateway: Any
) -> None:
    """A site with no profiles yet takes the stored road: the id is still checked there."""
    client = await gateway(make_config(site=SITE), run_workers=False)
    assert not await runtime_of(client).pipeline.needs_enrich(runtime_of(client).sites[0])
    signed = sign_visitor_id("v-123", cookie_key(runtime_of(client).config))
    events = [purchase("s-1", signed), purchase("s-2", "v-123." + "A" * 22)]
    compact = json.dumps({"events": events}, separators=(",", ":"))
    resp = await client.post("/v1/events", data=compact, headers=auth())
    assert resp.status == 202
    body = await resp.json()
    paths = [w["path"] for w in body["warnings"] if w["path"].endswith(".visitor_id")]
    assert paths == ["events[1].user.visitor_id"]
    leased = await runtime_of(client).store.lease("shop:meta", 100, 9e9, 30)
    records = {json.loads(d.record)["id"]: json.loads(d.record) for d in leased}
    assert records["s-1"]["u"]["vid"] == "v-123"
    assert "vid" not in records["s-2"]["u"]


async def test_erasing_the_email_removes_both_devices_and_their_links(
    make_config: Any, gateway: Any
) -> None:
    clock = FakeClock(time.time() - 3 * DAY)
    client = await gateway(make_config(site=SITE), clock=clock, run_workers=False)
    phone, laptop = await shop_story(client, clock)
    resp = await client.post("/v1/erase", json={"email": "JANE.DOE@example.com"}, headers=auth())
    assert resp.status == 200
    assert (await resp.json())["profiles"] == 2
    store = runtime_of(client).store
    found = await store.find_profiles(
        "shop", [ProfileQuery(phone.visitor_id), ProfileQuery(laptop.visitor_id)]
    )
    assert found == [None, None]
    resp = await client.post("/v1/events", json={"events": [purchase("o-9", None)]}, headers=auth())
    assert resp.status == 202
    leased = await store.lease("shop:meta", 100, 9e9, 30)
    (record,) = [json.loads(d.record) for d in leased if json.loads(d.record)["id"] == "o-9"]
    assert "fbc" not in record["u"]
    assert "cid" not in record["u"]
