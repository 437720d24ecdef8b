"""Tests for the control surface every emulator shares (gateway.sandbox.base.SandboxBase)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.sandbox.base import SandboxBase, loads_strict, read_json


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _EchoSandbox(SandboxBase):
    """The smallest emulator: one endpoint that echoes its JSON body through `read_json`."""

    page_title = "Echo <sandbox>"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64)
        self.add_control_routes(app)
        app.router.add_post("/echo", self._handle_echo)
        return app

    async def _handle_echo(self, request: web.Request) -> web.Response:
        self.recorder.requests += 1
        fault = await self._injector.decide()
        if fault is not None:
            return web.json_response({"fault": str(fault)}, status=503)
        try:
            body = await read_json(
                request,
                too_large=lambda: _Refused("too large"),
                invalid=lambda: _Refused("not json"),
            )
        except _Refused as refused:
            self.recorder.rejected.append({"reason": refused.reason})
            return web.json_response({"error": refused.reason}, status=400)
        self.recorder.accepted.append({"body": body})
        return web.json_response({"ok": True})


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient[Any, Any]:
    sandbox = _EchoSandbox(access_tokens=None, clock=lambda: 0.0, seed=3, max_batch=10)
    test_client: TestClient[Any, Any] = await aiohttp_client(sandbox.app())
    return test_client


def _sandbox(client: TestClient[Any, Any]) -> _EchoSandbox:
    for route in client.server.app.router.routes():
        owner = getattr(route.handler, "__self__", None)
        if isinstance(owner, _EchoSandbox):
            return owner
    raise AssertionError("no sandbox route")


async def test_control_routes_show_faults_events_and_page(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/echo", data=b'{"a": 1}')).status == 200
    faults = await client.get("/_sandbox/faults")
    assert faults.status == 200
    assert (await faults.json())["error_rate"] == 0.0
    recorded = await (await client.get("/_sandbox/events")).json()
    assert recorded == {"accepted": [{"body": {"a": 1}}], "rejected": [], "requests": 1}
    page = await client.get("/")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.content_type == "text/html"
    text = await page.text()
    assert "<title>Echo &lt;sandbox&gt;</title>" in text
    assert "1 accepted" in text


@pytest.mark.parametrize(
    "body",
    [b"[1]", b"not json", b'{"latency": NaN}', b"\xff"],
)
async def test_set_faults_refuses_anything_but_a_strict_json_object(
    client: TestClient[Any, Any], body: bytes
) -> None:
    answer = await client.post("/_sandbox/faults", data=body)
    assert answer.status == 400
    assert await answer.json() == {"error": "body must be a JSON object"}


async def test_set_faults_names_the_bad_knob_and_changes_nothing(
    client: TestClient[Any, Any],
) -> None:
    answer = await client.post("/_sandbox/faults", json={"burst_429": 2, "error_rate": 2})
    assert answer.status == 400
    assert "error_rate" in (await answer.json())["error"]
    assert _sandbox(client).faults.burst_429 == 0


async def test_faults_apply_and_reset_restores_everything(client: TestClient[Any, Any]) -> None:
    answer = await client.post("/_sandbox/faults", json={"burst_429": 1})
    assert answer.status == 200
    assert (await answer.json())["burst_429"] == 1
    assert (await client.post("/echo", data=b"{}")).status == 503
    assert (await client.post("/echo", data=b"{}")).status == 200
    sandbox = _sandbox(client)
    assert sandbox.recorder.requests == 2
    reset = await client.post("/_sandbox/reset")
    assert reset.status == 200
    assert await reset.json() == {"ok": True, "faults": sandbox.faults.to_json()}
    assert sandbox.recorder.snapshot() == {"accepted": [], "rejected": [], "requests": 0}


async def test_read_json_raises_the_platform_errors(client: TestClient[Any, Any]) -> None:
    too_large = await client.post("/echo", data=b'{"pad": "' + b"x" * 100 + b'"}')
    assert (await too_large.json()) == {"error": "too large"}
    for bad in (b"{", b'{"v": Infinity}', b"\xfe\xff"):
        answer = await client.post("/echo", data=bad)
        assert (await answer.json()) == {"error": "not json"}
    assert (
        _sandbox(client).recorder.rejected
        == [{"reason": "too large"}] + [{"reason": "not json"}] * 3
    )


def test_accepts_token_checks_the_configured_tokens() -> None:
    open_sandbox = _EchoSandbox(access_tokens=None, clock=lambda: 0.0, seed=0, max_batch=1)
    assert open_sandbox.accepts_token("anything")
    closed = _EchoSandbox(access_tokens=["t1", "t2"], clock=lambda: 0.0, seed=0, max_batch=1)
    assert closed.access_tokens == frozenset({"t1", "t2"})
    assert closed.accepts_token("t2")
    assert not closed.accepts_token("t3")


def test_loads_strict_refuses_non_finite_constants() -> None:
    assert loads_strict(b'{"a": [1.5, null]}') == {"a": [1.5, None]}
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match=constant):
            loads_strict(f"[{constant}]")
