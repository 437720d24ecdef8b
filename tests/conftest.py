"""Shared fixtures: config factory, fake clock, Meta sandbox, gateway client factory."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import logleak
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseRunner, TestClient, TestServer
from logleak import LeakCheck

from gateway.app import RUNTIME, Runtime, create_app, make_runner
from gateway.config import Config, parse
from gateway.sandbox.cdn import FakeCdn
from gateway.sandbox.meta import MetaSandbox

API_KEY = "sg_test_key_0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789"
PLANTED_EMAIL = "Jane@Example.com"
"""Raw PII the suite posts through the real HTTP paths (test_log_leaks, test_fastlane_api)."""
PLANTED_PHONE = "+1 650 555 1212"
X_CONSUMER_KEY = "x-consumer-key-0123456789"
X_CONSUMER_SECRET = "x-consumer-secret-0123456789"
X_ACCESS_TOKEN = "x-access-token-0123456789"
X_ACCESS_TOKEN_SECRET = "x-token-secret-0123456789"
"""X's four OAuth 1.0a values, used by tests/integration/test_delivery_x.py: never logged."""
GOOGLE_ADS_CLIENT_SECRET = "gads-client-secret-0123456789"
GOOGLE_ADS_REFRESH_TOKEN = "1//gads-refresh-token-0123456789"
GOOGLE_ADS_DEVELOPER_TOKEN = "gads-developer-token-0123456789"
PLANTED = {
    "api key": API_KEY,
    "admin token": ADMIN_TOKEN,
    "e-mail": PLANTED_EMAIL,
    "phone": PLANTED_PHONE,
    "x consumer key": X_CONSUMER_KEY,
    "x consumer secret": X_CONSUMER_SECRET,
    "x access token": X_ACCESS_TOKEN,
    "x access token secret": X_ACCESS_TOKEN_SECRET,
    "google ads client secret": GOOGLE_ADS_CLIENT_SECRET,
    "google ads refresh token": GOOGLE_ADS_REFRESH_TOKEN,
    "google ads developer token": GOOGLE_ADS_DEVELOPER_TOKEN,
}
"""Values no log line of the whole suite may carry (tests/logleak.py)."""
PIXEL_ID = "1234567890"
ACCESS_TOKEN = "meta-test-token"


# --- suite-wide log-leak check (tests/logleak.py) ---
LEAK_CHECK = LeakCheck(PLANTED)


def pytest_configure(config: pytest.Config) -> None:
    """Capture every logger for the whole session; fail the run if a planted value leaks."""
    config.pluginmanager.register(LEAK_CHECK, "signalgate-log-leaks")


def assert_no_planted(texts: Iterable[str], where: str) -> None:
    """Fail if a planted value occurs in a subprocess' captured log."""
    logleak.assert_no_planted(texts, where, PLANTED)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide SIGNALGATE_* variables of the developer's shell from every test."""
    for key in list(os.environ):
        if key.startswith("SIGNALGATE"):
            monkeypatch.delenv(key)


def base_doc(tmp_path: Path, api_base: str = "http://127.0.0.1:9") -> dict[str, Any]:
    """Return a minimal valid config document pointing Meta at `api_base`."""
    return {
        "server": {"admin_token": ADMIN_TOKEN, "max_body_bytes": 262_144},
        "storage": {"path": str(tmp_path / "outbox.db")},
        "delivery": {
            "poll_interval": 0.01,
            "retry_base_seconds": 0.01,
            "retry_cap_seconds": 0.05,
            "timeout_seconds": 5.0,
            "merge_seconds": 0.0,
            "probe_interval_min_seconds": 0.05,
            "probe_interval_max_seconds": 0.5,
        },
        "sites": [
            {
                "id": "shop",
                "api_keys": [API_KEY],
                "default_country": "us",
                "destinations": {
                    "meta": {
                        "pixel_id": PIXEL_ID,
                        "access_token": ACCESS_TOKEN,
                        "api_base": api_base,
                    }
                },
            }
        ],
    }


ConfigFactory = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Return a factory: make_config(api_base=..., server={...}, site={...}, meta={...})."""

    def factory(
        api_base: str = "http://127.0.0.1:9",
        *,
        server: dict[str, Any] | None = None,
        delivery: dict[str, Any] | None = None,
        site: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Config:
        doc = copy.deepcopy(base_doc(tmp_path, api_base))
        doc["server"].update(server or {})
        doc["delivery"].update(delivery or {})
        doc["sites"][0].update(site or {})
        doc["sites"][0]["destinations"]["meta"].update(meta or {})
        return parse(doc, {}, tmp_path)

    return factory


@pytest.fixture
async def meta_sandbox() -> AsyncIterator[tuple[MetaSandbox, str]]:
    """Start the Meta CAPI sandbox on 127.0.0.1:<ephemeral>; yield it and its base URL."""
    sandbox = MetaSandbox(access_tokens={ACCESS_TOKEN}, seed=1234)
    server = TestServer(sandbox.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield sandbox, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def cdn() -> AsyncIterator[tuple[FakeCdn, str]]:
    """Start the fake vendor CDN (scripts and pixel-hit endpoints); yield it and its base URL."""
    fake = FakeCdn()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


GatewayFactory = Callable[..., Any]


class GatewayTestServer(TestServer):
    """A TestServer on the runner `signalgate run` uses (fast lane included)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return make_runner(self.app, **kwargs)


@pytest.fixture
async def gateway() -> AsyncIterator[Callable[..., Any]]:
    """Return an async factory: `client = await gateway(config, **create_app_kwargs)`."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def factory(config: Config, **kwargs: Any) -> TestClient[web.Request, web.Application]:
        app = create_app(config, **kwargs)
        client: TestClient[web.Request, web.Application] = TestClient(
            GatewayTestServer(app, host="127.0.0.1")
        )
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


def runtime_of(client: TestClient[web.Request, web.Application]) -> Runtime:
    """Return the live runtime of a test gateway."""
    return client.app[RUNTIME]


def auth(key: str = API_KEY) -> dict[str, str]:
    """Return the Authorization header for the test site."""
    return {"Authorization": f"Bearer {key}"}


# --- a throwaway PostgreSQL (tests/pgserver.py): one server per session, a database per test ---
from pgserver import pg_dsn, pg_server  # noqa: E402, F401
