"""Shared samples and helpers of the pixel hit parser tests (tests/unit/destinations/)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote

from gateway.core.event import Event
from gateway.core.eventparse import parse_event
from gateway.core.hits import Hit

NOW = 1_790_000_000.0
NOW_MS = int(NOW * 1000)
H_EMAIL = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
H_PHONE = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
H_EXT = "3469a9d1e1b9f0c7b3f2a3a5d4b2c1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4"
FBP = "fb.1.1642534104092.1825265756"
FBC = "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(url.partition("?")[2], keep_blank_values=True)


def parsed(event: dict[str, Any], now: float = NOW) -> Event:
    result = parse_event(event, now=now, new_id=lambda: "x")
    assert isinstance(result, Event), result
    return result


def field_errors(event: dict[str, Any], now: float = NOW) -> dict[str, str]:
    result = parse_event(event, now=now, new_id=lambda: "x")
    assert isinstance(result, list), result
    return {e.path: e.reason for e in result}


def one(hit: Hit | None) -> Hit:
    assert hit is not None
    return hit


def ga4_line(params: list[tuple[str, str]]) -> str:
    """Return one GA4 body line as gtag writes it (encodeURIComponent-style escapes)."""
    return "&".join(
        f"{quote(k, safe='.', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}"
        for k, v in params
    )
