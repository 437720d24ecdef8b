"""README claims about limits hold: rate-limit burst, website baseline warnings, paused routes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import ACCESS_TOKEN, ADMIN_TOKEN, FakeClock, auth, base_doc, runtime_of

from gateway.config import parse

UA = "Mozilla/5.0 (test)"
JSON = {"Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def lead(i: int, **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "Lead",
        "event_id": f"lead-{i}",
        "url": "https://shop.example/form",
        "user": {"email": f"c{i}@example.com", "user_agent": UA, "ip": "203.0.113.9"},
    }
    event.update(over)
    return event


def doc(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


class TestRateLimitBurst:
    """README: a token bucket at rate_limit_per_second holding max(rate, max_events_per_request)
    events, full at start."""

    async def post(self, client: Any, n: int, start: int) -> Any:
        events = [lead(start + i) for i in range(n)]
        return await client.post("/v1/events", data=doc(*events), headers={**JSON, **auth()})

    async def test_burst_is_one_full_request_when_the_rate_is_lower(
        self, make_config: Any, gateway: Any
    ) -> None:
        clock = FakeClock(time.time())
        config = make_config(
            site={"rate_limit_per_second": 5.0}, server={"max_events_per_request": 20}
        )
        client = await gateway(config, run_workers=False, clock=clock)
        assert (await self.post(client, 20, 0)).status == 202  # the whole burst at once
        refused = await self.post(client, 1, 100)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"  # one event at 5/s: 0.2 s, rounded up
        assert (await refused.json())["error"] == "rate_limited"
        clock.advance(1.0)  # refills 5 events
        assert (await self.post(client, 5, 200)).status == 202
        assert (await self.post(client, 1, 300)).status == 429

    async def test_burst_is_one_seconds_worth_when_the_rate_is_higher(
        self, make_config: Any, gateway: Any
    ) -> None:
        clock = FakeClock(time.time())
        config = make_config(
            site={"rate_limit_per_second": 30.0}, server={"max_events_per_request": 10}
        )
        client = await gateway(config, run_workers=False, clock=clock)
        for start in (0, 10, 20):  # 30 events: one second's worth
            assert (await self.post(client, 10, start)).status == 202
        refused = await self.post(client, 10, 30)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        clock.advance(10.0)  # the bucket holds at most 30, however long it rests
        for start in (100, 110, 120):
            assert (await self.post(client, 10, start)).status == 202
        assert (await self.post(client, 1, 200)).status == 429


class TestWebsiteBaselineWarnings:
    """README: an event Meta would refuse is accepted with a warning naming the field."""

    async def test_missing_user_agent_is_warned_at_202(
        self, make_config: Any, gateway: Any
    ) -> None:
        client = await gateway(make_config(), run_workers=False)
        no_ua = lead(1)
        del no_ua["user"]["user_agent"]
        resp = await client.post("/v1/events", data=doc(lead(0), no_ua), headers={**JSON, **auth()})
        assert resp.status == 202
        body = await resp.json()
        assert body["accepted"] == 2
        (warning,) = body["warnings"]
        assert warning["path"] == "events[1].user.user_agent"
        assert "meta" in warning["reason"]
        assert "user_agent" in warning["reason"]
        assert "dead-lettered" in warning["reason"]

    @pytest.mark.parametrize("typed", [True, False], ids=["typed-path", "general-path"])
    async def test_paths_count_only_accepted_events_and_name_the_field(
        self, make_config: Any, gateway: Any, typed: bool
    ) -> None:
        client = await gateway(make_config(), run_workers=False)
        weak = lead(2, user={"city": "Berlin", "country": "de", "user_agent": UA})
        bad = lead(1, event="")  # refused: the warnings' indexes must skip nothing
        listed = {"user": {"email": ["a@example.com"], "user_agent": UA}}  # the general parser
        extra: dict[str, Any] = {} if typed else listed
        events = [lead(0, **extra), bad, weak] if not typed else [lead(0), weak]
        resp = await client.post("/v1/events", data=doc(*events), headers={**JSON, **auth()})
        assert resp.status == 202
        body = await resp.json()
        weak_at = len(events) - 1
        assert [w["path"] for w in body["warnings"]] == [f"events[{weak_at}].user"]
        assert "baseline" in body["warnings"][0]["reason"]

    async def test_destinations_that_refuse_beyond_the_baseline_are_always_asked(
        self, gateway: Any, tmp_path: Any
    ) -> None:
        """An event every platform's common baseline accepts (e-mail + user agent) is still
        checked against LinkedIn, which has no conversion rule for `Lead` here."""
        raw = base_doc(tmp_path)
        raw["sites"][0]["destinations"]["linkedin"] = {
            "purchase_rule": "123456",
            "access_token": "linkedin-test-token",
        }
        client = await gateway(parse(raw, {}, tmp_path), run_workers=False)
        resp = await client.post("/v1/events", data=doc(lead(0)), headers={**JSON, **auth()})
        assert resp.status == 202
        (warning,) = (await resp.json())["warnings"]
        assert warning["path"] == "events[0].event"
        assert warning["reason"].startswith("linkedin would refuse this event (event name 'Lead'")

    async def test_event_that_meets_the_baseline_has_no_warnings(
        self, make_config: Any, gateway: Any
    ) -> None:
        client = await gateway(make_config(), run_workers=False)
        only_fbp = lead(0, user={"fbp": "fb.1.1596403881668.1116446470", "user_agent": UA})
        resp = await client.post(
            "/v1/events", data=doc(lead(1), only_fbp), headers={**JSON, **auth()}
        )
        assert resp.status == 202
        assert await resp.json() == {"accepted": 2, "deduplicated": 0, "rejected": []}

    async def test_warned_event_is_the_one_dead_lettered(
        self, make_config: Any, gateway: Any, meta_sandbox: Any
    ) -> None:
        sandbox, base = meta_sandbox
        client = await gateway(make_config(base), run_workers=False)
        no_ua = lead(1)
        del no_ua["user"]["user_agent"]
        resp = await client.post("/v1/events", data=doc(lead(0), no_ua), headers={**JSON, **auth()})
        assert [w["path"] for w in (await resp.json())["warnings"]] == ["events[1].user.user_agent"]
        await runtime_of(client).workers["shop:meta"].drain()
        assert [e["event_id"] for e in sandbox.recorder.accepted] == ["lead-0"]
        dead = await runtime_of(client).store.dead_letters("shop:meta", 10)
        assert [d.event_id for d in dead] == ["lead-1"]


class TestPausedRouteResumes:
    """README: a refused token pauses the route for delivery.pause_seconds; it then tries
    again by itself. A new token needs a restart (there is no reload); held events go out at
    the end of the pause, none is dropped."""

    async def test_route_retries_by_itself_after_the_pause(
        self, make_config: Any, gateway: Any, meta_sandbox: Any
    ) -> None:
        sandbox, base = meta_sandbox
        sandbox.faults.token_expired = True
        clock = FakeClock(time.time())
        config = make_config(base, delivery={"pause_seconds": 120})
        client = await gateway(config, run_workers=False, clock=clock)
        await client.post("/v1/events", data=doc(lead(0)), headers={**JSON, **auth()})
        worker = runtime_of(client).workers["shop:meta"]
        await worker.drain()
        assert (await client.get("/readyz")).status == 503
        clock.advance(119)
        await worker.drain()
        assert sandbox.recorder.requests == 1  # no hammering during the pause
        clock.advance(2)
        await worker.drain()  # token still refused: paused again, still nothing dropped
        assert sandbox.recorder.requests == 2
        assert (await client.get("/readyz")).status == 503
        sandbox.faults.token_expired = False  # fixed on Meta's side: no restart needed
        clock.advance(121)
        await worker.drain()
        assert [e["event_id"] for e in sandbox.recorder.accepted] == ["lead-0"]
        assert (await client.get("/readyz")).status == 200

    async def test_new_token_takes_a_restart_and_held_events_follow(
        self, make_config: Any, gateway: Any, meta_sandbox: Any
    ) -> None:
        sandbox, base = meta_sandbox
        clock = FakeClock(time.time())
        wrong = make_config(base, meta={"access_token": "revoked-token"})
        first = await gateway(wrong, run_workers=False, clock=clock)
        await first.post("/v1/events", data=doc(lead(0)), headers={**JSON, **auth()})
        await runtime_of(first).workers["shop:meta"].drain()
        assert runtime_of(first).workers["shop:meta"].paused
        assert sandbox.recorder.accepted == []
        await first.close()
        fixed = make_config(base, meta={"access_token": ACCESS_TOKEN})
        second = await gateway(fixed, run_workers=False, clock=clock)  # same outbox file
        worker = runtime_of(second).workers["shop:meta"]
        assert (await second.get("/readyz")).status == 200
        await worker.drain()
        assert sandbox.recorder.accepted == []  # held until the pause it was given ends
        clock.advance(fixed.delivery.pause_seconds + 1)
        await worker.drain()
        assert [e["event_id"] for e in sandbox.recorder.accepted] == ["lead-0"]


class TestDebugLimit:
    """Regression (schemathesis): an out-of-range or non-numeric `limit` was silently clamped
    or replaced by the default; it is now a 400 naming the parameter, as the document says."""

    @pytest.mark.parametrize("path", ["/v1/debug/recent", "/v1/debug/dead?route=shop:meta&"])
    @pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "1.5", "٣"])
    async def test_bad_limit_is_400(
        self, make_config: Any, gateway: Any, path: str, limit: str
    ) -> None:
        client = await gateway(make_config(), run_workers=False)
        sep = "" if path.endswith("&") else "?"
        resp = await client.get(f"{path}{sep}limit={limit}", headers=ADMIN)
        assert resp.status == 400
        assert (await resp.json())["errors"] == [
            {"path": "limit", "reason": "expected an integer from 1 to 500"}
        ]

    async def test_good_limit_and_default(self, make_config: Any, gateway: Any) -> None:
        client = await gateway(make_config(), run_workers=False)
        for query in ("", "?limit=1", "?limit=500"):
            assert (await client.get(f"/v1/debug/recent{query}", headers=ADMIN)).status == 200
        dead = await client.get("/v1/debug/dead?route=shop:meta&limit=7", headers=ADMIN)
        assert await dead.json() == {"dead": []}
