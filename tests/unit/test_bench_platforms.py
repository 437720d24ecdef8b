"""bench/platforms.py and sandboxes.py's counting middleware: the benches' platform table
yields settings the gateway accepts and sandboxes that build, unusable entries are left out with
a warning, and the sandboxes' tallies count what they accept and reject."""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse
from gateway.core.event import Data, Event, Source, User
from gateway.destinations import DESTINATIONS

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import platforms  # noqa: E402 - bench/ is not a package
import sandboxes  # noqa: E402
from platforms import PLATFORMS, BenchPlatform, destinations_toml, usable  # noqa: E402

EM = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"


def test_every_entry_of_a_registered_destination_is_usable() -> None:
    names = [n for n in DESTINATIONS if n in PLATFORMS]
    assert "meta" in names
    for name in names:
        platform = PLATFORMS[name]
        assert platforms.check_settings(name, platform.settings(name, "http://x")) is None, name
        sandbox = platform.build_sandbox(name)
        assert sandbox.recorder.accepted == [], name
        assert sandbox.app() is not None
    assert usable(names, sandbox=True) == names


def test_unusable_entries_are_left_out_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(PLATFORMS, "tiktok")
    monkeypatch.setitem(PLATFORMS, "meta", BenchPlatform("meta:MetaSandbox", {}))  # no pixel_id
    snap_ids = dict(PLATFORMS["snap"].ids)
    monkeypatch.setitem(PLATFORMS, "snap", BenchPlatform("snap:NoSuchSandbox", snap_ids))
    kept = usable(["meta", "tiktok", "snap", "pinterest"], sandbox=True)
    assert kept == ["pinterest"]
    err = capsys.readouterr().err
    assert "no bench entry for destination 'tiktok'" in err
    assert "destination 'meta' left out" in err
    assert "pixel_id" in err
    assert "destination 'snap' left out" in err
    assert "NoSuchSandbox" in err
    # without sandboxes (the fan-out bench) only the settings count
    assert usable(["snap", "pinterest"], sandbox=False) == ["snap", "pinterest"]


def test_destinations_toml_is_read_back_by_the_config() -> None:
    names = [n for n in DESTINATIONS if n in PLATFORMS]
    urls = {n: f"http://127.0.0.1:{9000 + i}" for i, n in enumerate(names)}
    text = '[[sites]]\nid = "shop"\napi_keys = ["sg_bench_key_0123456789abcdef"]\n'
    doc = tomllib.loads(text + destinations_toml(names, urls))
    site = parse(doc, {}, Path(".")).sites[0]
    assert list(site.destinations) == names
    for name in names:
        assert site.destinations[name].api_base == urls[name]
    assert platforms.toml_value({"a b": [1, True, 'x"y']}) == '{"a b" = [1, true, "x\\"y"]}'


def purchase(event_id: str) -> Event:
    return Event(
        event="Purchase",
        event_id=event_id,
        time=int(time.time()),
        source=Source.WEBSITE,
        url="https://shop.example/thanks",
        user=User(hashed={"meta": {"em": (EM,)}}, ip="203.0.113.7", user_agent="Mozilla/5.0"),
        data=Data(value=49.9, currency="EUR", order_id=event_id),
    )


async def test_counting_middleware_tallies_and_forgets(aiohttp_client: Any) -> None:
    entry = PLATFORMS["meta"]
    sandbox = entry.build_sandbox("meta")
    tally = sandboxes.Tally()
    app = sandbox.app()
    app.middlewares.append(sandboxes.counting(sandbox, tally))
    client = await aiohttp_client(app)
    config = parse(
        tomllib.loads(
            '[[sites]]\nid = "s"\napi_keys = ["sg_bench_key_0123456789abcdef"]\n'
            + destinations_toml(["meta"], "http://sandbox")
        ),
        {},
        Path("."),
    )
    meta = DESTINATIONS["meta"].factory(config.sites[0].destinations["meta"])

    request = meta.build_request([purchase("a"), purchase("b")])
    path = request.url.raw_path.decode()
    answer = await client.post(path, data=request.content, headers=dict(request.headers))
    assert answer.status == 200, await answer.text()
    assert (tally.accepted, tally.rejected, tally.requests) == (2, 0, 1)
    assert sandbox.recorder.accepted == []  # forgotten once counted
    assert tally.first <= tally.last

    wrong = path.replace(f"access_token={platforms.token('meta')}", "access_token=wrong")
    assert wrong != path
    answer = await client.post(wrong, data=request.content, headers=dict(request.headers))
    assert answer.status >= 400
    assert (tally.accepted, tally.rejected, tally.requests) == (2, 1, 2)
    assert tally.sample
    assert sandbox.recorder.rejected == []
