"""Shared machinery for local ad-platform emulators: fault knobs, a recorder and a viewer page.

Nothing here knows about a particular platform. A platform emulator (see `meta.py`) owns a
`Faults` (knobs a test or the demo may change while the server runs), a `FaultInjector` that turns
those knobs into a per-request decision *before* anything is recorded, and a `Recorder` that keeps
what was accepted and what was refused. `SandboxBase` wires those three together and serves the
control surface every emulator shares (viewer page, recorded events, fault knobs, reset).
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from aiohttp import web

__all__ = [
    "Fault",
    "FaultInjector",
    "Faults",
    "Recorder",
    "SandboxBase",
    "loads_strict",
    "read_json",
    "render_events_page",
    "retry_after_header",
]


@dataclass
class Faults:
    """Mutable fault-injection knobs, changeable while the emulator runs."""

    error_rate: float = 0.0
    error_status: int = 503
    burst_429: int = 0
    retry_after: float = 1.0
    latency: float = 0.0
    token_expired: bool = False
    down: bool = False
    """Every request fails with `error_status` (after `latency`): a platform outage."""
    reject_event_ids: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """Return the knobs as a JSON-ready dict (reject_event_ids as a sorted list)."""
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "burst_429": self.burst_429,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "token_expired": self.token_expired,
            "down": self.down,
            "reject_event_ids": sorted(self.reject_event_ids),
        }

    def update(self, changes: Mapping[str, object]) -> None:
        """Validate and apply `changes` all-or-nothing; raise ValueError on any bad field."""
        staged: dict[str, object] = {}
        for name, value in changes.items():
            staged[name] = _coerce_knob(name, value)
        for name, value in staged.items():
            setattr(self, name, value)

    def reset(self) -> None:
        """Put every knob back to its default, in place (references to this object stay valid)."""
        defaults = Faults()
        for f in fields(self):
            setattr(self, f.name, getattr(defaults, f.name))


def _number(name: str, value: object, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return number


def _integer(name: str, value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def _coerce_knob(name: str, value: object) -> object:
    if name == "error_rate":
        return _number(name, value, low=0.0, high=1.0)
    if name == "error_status":
        return _integer(name, value, low=500, high=599)
    if name == "burst_429":
        return _integer(name, value, low=0, high=1_000_000)
    if name in ("retry_after", "latency"):
        return _number(name, value, low=0.0)
    if name in ("token_expired", "down"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if name == "reject_event_ids":
        if not isinstance(value, list | set | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("reject_event_ids must be a list of strings")
        return {str(v) for v in value}
    raise ValueError(f"unknown fault knob: {name}")


@dataclass
class Recorder:
    """What an emulator saw: accepted events, rejected requests and the request count."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0

    def clear(self) -> None:
        """Forget everything, in place."""
        self.accepted.clear()
        self.rejected.clear()
        self.requests = 0

    def snapshot(self) -> dict[str, Any]:
        """Return a JSON-ready view of everything recorded."""
        return {
            "accepted": list(self.accepted),
            "rejected": list(self.rejected),
            "requests": self.requests,
        }


class Fault(StrEnum):
    """A fault chosen for one request, before the request is looked at."""

    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    AUTH_EXPIRED = "auth_expired"


class FaultInjector:
    """Turns the `Faults` knobs into one decision per request (seeded, hence reproducible)."""

    def __init__(self, faults: Faults, seed: int = 0) -> None:
        """Bind to `faults` (read on every request) and seed the error-rate PRNG."""
        self.faults = faults
        self._seed = seed
        self._rng = random.Random(seed)

    def reseed(self) -> None:
        """Restart the PRNG from the original seed."""
        self._rng = random.Random(self._seed)

    async def decide(self) -> Fault | None:
        """Sleep the configured latency, then pick this request's fault (or None)."""
        faults = self.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        if faults.down:
            return Fault.SERVER_ERROR
        if faults.burst_429 > 0:
            faults.burst_429 -= 1
            return Fault.THROTTLED
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            return Fault.SERVER_ERROR
        if faults.token_expired:
            return Fault.AUTH_EXPIRED
        return None


def retry_after_header(seconds: float) -> str:
    """Format a Retry-After value: an integer string when whole, else a float string."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return repr(float(seconds))


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}"
    "h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:2rem}"
    "pre{background:#fff;border:1px solid #ddd;border-radius:4px;padding:.6rem;overflow-x:auto}"
    ".muted{color:#666}"
)


def render_events_page(title: str, recorder: Recorder, *, limit: int = 50) -> str:
    """Render a self-contained HTML page with the latest accepted events (newest first)."""
    accepted = recorder.accepted[-limit:][::-1] if limit > 0 else []
    rejected = recorder.rejected[-10:][::-1]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="refresh" content="5">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_PAGE_STYLE}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (
            f'<p class="muted">{recorder.requests} requests, {len(recorder.accepted)} accepted'
            f" events, {len(recorder.rejected)} rejected requests. Showing the latest"
            f" {len(accepted)} accepted events, newest first.</p>"
        ),
    ]
    if not accepted:
        parts.append('<p class="muted">No events accepted yet.</p>')
    for event in accepted:
        parts.append(f"<pre>{_pretty(event)}</pre>")
    if rejected:
        parts.append("<h2>Latest rejected requests</h2>")
        for entry in rejected:
            parts.append(f"<pre>{_pretty(entry)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _pretty(value: object) -> str:
    return html.escape(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(raw: str | bytes) -> object:
    """Parse JSON like the platforms do: NaN and +/-Infinity are refused (ValueError)."""
    return json.loads(raw, parse_constant=_reject_constant)


async def read_json(
    request: web.Request,
    *,
    too_large: Callable[[], Exception],
    invalid: Callable[[], Exception],
) -> object:
    """Read and parse a request body, raising the platform's own error for each failure.

    `too_large()` is raised when the body exceeds the app's `client_max_size`; `invalid()` when
    it is not strict JSON (see `loads_strict`) or not UTF-8.
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large() from None
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid() from None


class SandboxBase:
    """The control surface every platform emulator shares.

    Owns `access_tokens`, `clock`, `max_batch`, `faults`, `recorder` and the fault injector,
    and serves `GET /` (viewer page), `GET /_sandbox/events`, `GET`/`POST /_sandbox/faults` and
    `POST /_sandbox/reset`.
    A subclass sets `page_title` and adds its platform routes next to `add_control_routes`.
    """

    page_title: ClassVar[str] = "Sandbox"

    def __init__(
        self,
        *,
        access_tokens: Collection[str] | None,
        clock: Callable[[], float],
        seed: int,
        max_batch: int,
    ) -> None:
        """Keep the accepted tokens (None: any), clock and batch cap; start faults and recorder."""
        self.access_tokens: frozenset[str] | None = (
            None if access_tokens is None else frozenset(access_tokens)
        )
        self.clock = clock
        self.max_batch = max_batch
        self.faults = Faults()
        self.recorder = Recorder()
        self._injector = FaultInjector(self.faults, seed)

    def accepts_token(self, token: str) -> bool:
        """True when `token` is one of `access_tokens` (or any token is accepted)."""
        return self.access_tokens is None or token in self.access_tokens

    def add_control_routes(self, app: web.Application) -> None:
        """Register the five sandbox control routes on `app`."""
        app.router.add_get("/", self._handle_index)
        app.router.add_get("/_sandbox/events", self._handle_recorded)
        app.router.add_get("/_sandbox/faults", self._handle_get_faults)
        app.router.add_post("/_sandbox/faults", self._handle_set_faults)
        app.router.add_post("/_sandbox/reset", self._handle_reset)

    def reset(self) -> None:
        """Clear the recorder, restore default faults and restart the fault PRNG."""
        self.recorder.clear()
        self.faults.reset()
        self._injector.reseed()

    async def _handle_index(self, request: web.Request) -> web.Response:
        page = render_events_page(self.page_title, self.recorder)
        return web.Response(
            text=page, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def _handle_recorded(self, request: web.Request) -> web.Response:
        return web.json_response(self.recorder.snapshot())

    async def _handle_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json())

    async def _handle_set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = loads_strict(await request.read())
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            self.faults.update(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.to_json())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True, "faults": self.faults.to_json()})
