"""POST /e and vendor cookies of the later platforms: `_ga` re-issued, `_epik`/`_rdt_uuid` read."""

from __future__ import annotations

import json
from typing import Any

from conftest import runtime_of

ORIGIN = "https://www.shop.test"
HOST = "track.shop.test"
GA = "GA1.2.1234567890.1700000000"
UUID = "1700000000123.8f3c0d6e-1b2a-4c5d-9e8f-0a1b2c3d4e5f"
EPIK = "dj0yJnU9bG9uZ2VyLWlkJm49MTIz"


def headers(**extra: str) -> dict[str, str]:
    return {"Host": HOST, "Origin": ORIGIN, "Content-Type": "text/plain",
            "User-Agent": "Mozilla/5.0 (test)", **extra}  # fmt: skip


def set_cookies(resp: Any) -> dict[str, str]:
    out = {}
    for line in resp.headers.getall("Set-Cookie", []):
        name, _, rest = line.partition("=")
        out[name] = rest.split(";")[0]
    return out


async def stored_click_ids(client: Any) -> list[dict[str, str]]:
    runtime = runtime_of(client)
    site_id = runtime.config.sites[0].id
    leased = await runtime.store.lease(f"{site_id}:meta", 100, 9e9, 30)
    return [json.loads(d.record)["u"].get("cid", {}) for d in leased]


async def test_ga_is_issued_kept_and_read_and_read_only_cookies_are_read_not_written(
    make_config: Any, gateway: Any
) -> None:
    site = {"hosts": [HOST, "www.shop.test"], "allowed_origins": [ORIGIN]}
    client = await gateway(make_config(site=site), run_workers=False)
    body = json.dumps({"event": "PageView", "url": "https://www.shop.test/"})

    first = await client.post("/e", data=body, headers=headers())
    assert first.status == 204
    new_ga = set_cookies(first)["_ga"]
    assert new_ga.startswith("GA1.1.")
    assert [line.split("=", 1)[0] for line in first.headers.getall("Set-Cookie")][-2:] == [
        "_ga",
        "_sgv",
    ]

    jar = f"_ga={GA}; _epik={EPIK}; _rdt_uuid={UUID}"
    again = await client.post("/e", data=body, headers=headers(Cookie=jar))
    assert again.status == 204
    cookies = set_cookies(again)
    assert cookies["_ga"] == GA  # a known _ga is kept (and its lifetime renewed)
    assert "_epik" not in cookies
    assert "_rdt_uuid" not in cookies  # read only: never written

    first_ids, second_ids = await stored_click_ids(client)
    assert first_ids["ga"] == new_ga.removeprefix("GA1.1.")
    assert second_ids["ga"] == "1234567890.1700000000"
    assert second_ids["epik"] == EPIK
    assert second_ids["rdt_uuid"] == UUID
