"""Erasure requests: DELETE /v1/visitors/{visitor_id} and POST /v1/erase (site API key).

A visitor's profile is deleted (by identifier: every profile linked to it, with its
cross-device links) and every undelivered event that carries the visitor id or one
of the hashed identifiers is dead-lettered as `erased` with its record blanked, so nothing about
the person is sent afterwards. Identifiers in the request are hashed here exactly as on ingest,
so the raw values are never stored or logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web

from gateway.core.event import Event, Source, User
from gateway.core.identity import hash_identifiers
from gateway.core.profile import lookup_keys
from gateway.web.api import KeyRing
from gateway.web.middleware import BodyError, error_response, read_json_body
from gateway.web.pipeline import Pipeline, Site

_FIELDS: Final = {"email": "em", "phone": "ph", "external_id": "external_id"}


class Erasure:
    """Handlers of the erasure API."""

    def __init__(
        self, pipeline: Pipeline, sites: Sequence[Site], clock: Callable[[], float]
    ) -> None:
        self.pipeline = pipeline
        self.keys = KeyRing(sites)
        self.clock = clock

    def _site(self, request: web.Request) -> Site | None:
        return self.keys.site_for(request.headers.get("Authorization"))

    async def delete_visitor(self, request: web.Request) -> web.Response:
        """Erase one visitor by the gateway's visitor id."""
        site = self._site(request)
        if site is None:
            return error_response(401, "unauthorized", "missing or invalid API key")
        visitor_id = request.match_info["visitor_id"]
        if not 0 < len(visitor_id) <= 128:
            return error_response(
                400,
                "bad_request",
                "invalid visitor id",
                [{"path": "visitor_id", "reason": "1-128 characters"}],
            )
        result = await self.pipeline.store.erase(
            site.config.id, visitor_id=visitor_id, keys=(), now=self.clock()
        )
        if self.pipeline.debug is not None:  # the debug view's rings (web/debugview.py)
            self.pipeline.debug.forget(site.config.id, visitor_id, ())
        return web.json_response({"profiles": result.profiles, "deliveries": result.deliveries})

    async def erase(self, request: web.Request) -> web.Response:
        """Erase by e-mail, phone and/or external id (raw or already SHA-256 hashed)."""
        site = self._site(request)
        if site is None:
            return error_response(401, "unauthorized", "missing or invalid API key")
        try:
            doc = await read_json_body(request, 16_384)
        except BodyError as exc:
            return error_response(exc.status, exc.code, exc.reason)
        errors = _check(doc)
        if errors:
            return error_response(400, "bad_request", "invalid erasure request", errors)
        pii = {_FIELDS[k]: (v,) for k, v in doc.items()}
        probe = Event(
            event="Erase", event_id="erase", time=0, source=Source.OTHER, user=User(pii=pii)
        )
        hashed, dropped = hash_identifiers(
            probe, ["meta"], default_country=site.config.default_country
        )
        if dropped and len(dropped) == len(pii):
            errors = [{"path": _request_field(d.path), "reason": d.reason} for d in dropped]
            return error_response(400, "bad_request", "no usable identifier", errors)
        keys = lookup_keys(hashed.user.hashed)
        result = await self.pipeline.store.erase(
            site.config.id, visitor_id=None, keys=keys, now=self.clock()
        )
        if self.pipeline.debug is not None:  # the debug view's rings (web/debugview.py)
            self.pipeline.debug.forget(site.config.id, None, keys)
        return web.json_response({"profiles": result.profiles, "deliveries": result.deliveries})


def _request_field(path: str) -> str:
    """The request's own field for a path of the probe event (`.user.email` → `email`)."""
    name = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return name if name in _FIELDS else path


def _check(doc: Any) -> list[dict[str, str]]:
    if not isinstance(doc, dict) or not doc:
        return [{"path": "", "reason": "expected an object with email, phone or external_id"}]
    errors = [{"path": k, "reason": "unknown field"} for k in doc if k not in _FIELDS]
    errors += [
        {"path": k, "reason": "expected a non-empty string"}
        for k, v in doc.items()
        if k in _FIELDS and (not isinstance(v, str) or not v.strip() or len(v) > 1024)
    ]
    return errors
