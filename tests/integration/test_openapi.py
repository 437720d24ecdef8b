"""GET /v1/openapi.json, kept true by schemathesis against a live gateway.

The gateway (with the Meta sandbox behind it and its delivery workers running) serves on
127.0.0.1 from a background thread; schemathesis generates requests from the served document
for every operation, valid and invalid ones, and every answer must be no server error, have a
documented status and Content-Type and match the documented body schema.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from conftest import ACCESS_TOKEN, ADMIN_TOKEN, API_KEY, base_doc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import JsonSchemaError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app, make_runner
from gateway.config import parse
from gateway.sandbox.meta import MetaSandbox
from gateway.web.openapi import document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SCALE = float(os.environ.get("OPENAPI_FUZZ_SCALE", "1"))
"""Raise it by hand for a longer hunt (OPENAPI_FUZZ_SCALE=20); CI runs the default."""
EXAMPLES = {GenerationMode.POSITIVE: int(25 * SCALE), GenerationMode.NEGATIVE: int(15 * SCALE)}
"""Examples per operation and mode: 16 operations x 40 ≈ 640 requests, well under a minute."""
ADMIN_PATHS = ("/v1/debug/", "/metrics", "/v1/admin/")


@dataclass
class LiveGateway:
    """A gateway and a Meta sandbox served from a background event loop."""

    base_url: str
    sandbox_url: str


def _serve(tmp: Path, ready: Future[LiveGateway], stop: threading.Event) -> None:
    async def main() -> None:
        sandbox = MetaSandbox(access_tokens={ACCESS_TOKEN}, seed=7)
        sandbox_runner = web.AppRunner(sandbox.app(), access_log=None)
        await sandbox_runner.setup()
        sandbox_site = _site(sandbox_runner)
        await sandbox_site.start()
        sandbox_url = f"http://127.0.0.1:{_port(sandbox_runner)}"
        doc = copy.deepcopy(base_doc(tmp, sandbox_url))
        doc["sites"][0]["hosts"] = ["127.0.0.1"]
        runner = make_runner(create_app(parse(doc, {}, tmp)), access_log=None)
        await runner.setup()
        await _site(runner).start()
        ready.set_result(LiveGateway(f"http://127.0.0.1:{_port(runner)}", sandbox_url))
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()
            await sandbox_runner.cleanup()

    try:
        asyncio.run(main())
    except BaseException as exc:  # surface start-up failures to the waiting test
        if not ready.done():
            ready.set_exception(exc)
        raise


def _site(runner: web.BaseRunner) -> web.TCPSite:
    return web.TCPSite(runner, "127.0.0.1", 0)


def _port(runner: web.BaseRunner) -> int:
    (site,) = runner.sites
    server = site._server
    assert server is not None
    return int(server.sockets[0].getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    ready: Future[LiveGateway] = Future()
    stop = threading.Event()
    thread = threading.Thread(
        target=_serve, args=(tmp_path_factory.mktemp("openapi"), ready, stop), daemon=True
    )
    thread.start()
    try:
        yield ready.result(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)


def _auth(path: str) -> dict[str, str]:
    token = ADMIN_TOKEN if path.startswith(ADMIN_PATHS) else API_KEY
    return {"Authorization": f"Bearer {token}"}


def _operations(doc: dict[str, Any]) -> list[Any]:
    schema = schemathesis.openapi.from_dict(doc)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: Any, mode: GenerationMode, call: Callable[[Any], None]) -> None:
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=SCALE == 1,  # CI: the same cases every run; a longer hunt: new ones
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        call(case)

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): only the positive run applies.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_document_is_served_cacheable_and_unauthenticated(live: LiveGateway) -> None:
    first = requests.get(f"{live.base_url}/v1/openapi.json", timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("application/json")
    assert "public" in first.headers["Cache-Control"]
    served = first.json()
    assert served == document()
    assert served["openapi"].startswith("3.1")
    assert {"/v1/events", "/e", "/healthz", "/readyz", "/v1/erase"} <= set(served["paths"])
    again = requests.get(
        f"{live.base_url}/v1/openapi.json",
        headers={"If-None-Match": first.headers["ETag"]},
        timeout=10,
    )
    assert again.status_code == 304


def test_every_answer_matches_the_document(live: LiveGateway) -> None:
    served = requests.get(f"{live.base_url}/v1/openapi.json", timeout=10).json()
    operations = _operations(served)
    assert len(operations) == 16
    session = requests.Session()
    started = time.monotonic()
    seen: dict[str, set[int]] = {}

    def call(case: Any) -> None:
        response = case.call_and_validate(
            base_url=live.base_url,
            session=session,
            headers=_auth(case.path),
            checks=CHECKS,
            timeout=10,
        )
        seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)

    for operation in operations:
        for mode in EXAMPLES:
            _fuzz(operation, mode, call)
    assert time.monotonic() - started < 120 * SCALE
    # The run reached the handlers, not only the error paths.
    assert 200 in seen["GET /healthz"]
    assert 202 in seen["POST /v1/events"]  # the documented example is accepted
    assert 204 in seen["POST /e"]
    assert seen["POST /v1/events"] & {400}
    assert 200 in seen["GET /v1/debug/recent"]
    assert 200 in seen["GET /metrics"]
    assert 200 in seen["GET /v1/admin/dead"]
    assert 200 in seen["GET /v1/admin/stats"]
    assert 200 in seen["GET /v1/admin/events"]


def test_a_schema_violation_fails_the_run(live: LiveGateway) -> None:
    """The checks bite: a document that lies about an answer makes the run fail."""
    broken = document()
    health = broken["components"]["schemas"]["Health"]
    health["properties"]["status"] = {"const": "fine"}
    (operation,) = [op for op in _operations(broken) if op.path == "/healthz"]
    session = requests.Session()

    def call(case: Any) -> None:
        case.call_and_validate(base_url=live.base_url, session=session, checks=CHECKS, timeout=10)

    with pytest.raises(FailureGroup) as info:
        _fuzz(operation, GenerationMode.POSITIVE, call)
    assert any(isinstance(e, JsonSchemaError) for e in info.value.exceptions)
    assert '"fine" was expected' in str(info.value.exceptions[0])
