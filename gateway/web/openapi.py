"""The OpenAPI 3.1 document of the public HTTP API, served at GET /v1/openapi.json.

The document is plain data built here (no file to ship); `tests/integration/test_openapi.py`
runs schemathesis against a live gateway so every answer keeps matching it. Limits that come
from configuration (body size, events per request) are stated in descriptions, not as schema
bounds, so the document is the same for every deployment.

Sections by API area: intake (gateway/web/openapi_events.py), dead letters, gaps and debug
(openapi_admin.py), stats (openapi_stats.py); this module holds the operator paths (health,
readiness, recent deliveries, metrics, erasure, this document), merges the sections in a fixed
order into the document and serves it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from aiohttp import web

from gateway import __version__
from gateway.core.jsoncodec import dumps
from gateway.web.openapi_admin import (
    dead_paths,
    dead_schemas,
    debug_paths,
    debug_schemas,
    gap_paths,
    gap_schemas,
)
from gateway.web.openapi_events import (
    API_KEY,
    COUNT,
    JSON,
    STRING,
    UNAUTHORIZED,
    JSONSchema,
    error_answer,
    event_paths,
    event_schemas,
    json_answer,
    ref,
)
from gateway.web.openapi_stats import stats_paths, stats_schemas

PATH: Final = "/v1/openapi.json"


def _schemas() -> dict[str, JSONSchema]:
    """The component schemas of health, readiness, debug and erasure answers."""
    return {
        "Erasure": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                k: {"type": "string", "minLength": 1, "maxLength": 1024}
                for k in ("email", "phone", "external_id")
            },
        },
        "Erased": {
            "type": "object",
            "required": ["profiles", "deliveries"],
            "properties": {"profiles": COUNT, "deliveries": COUNT},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "problems", "routes"],
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "problems": {"type": "array", "items": STRING},
                "degraded": {"type": "array", "items": STRING},
                "routes": {"type": "object", "additionalProperties": ref("RouteHealth")},
            },
        },
        "RouteHealth": {
            "type": "object",
            "required": ["route", "paused"],
            "properties": {
                "route": STRING,
                "paused": {"type": "boolean"},
                "paused_reason": {"type": ["string", "null"]},
                "waiting_seconds": {"type": "number", "minimum": 0},
                "delivered": COUNT,
                "dead": COUNT,
                "retried": COUNT,
                "requests": COUNT,
                "last_error": {"type": ["string", "null"]},
                "breaker": {"enum": ["closed", "open"]},
                "breaker_reason": {"type": ["string", "null"]},
                "breaker_failures": COUNT,
                "breaker_open_seconds": {"type": "number", "minimum": 0},
                "next_probe_seconds": {"type": "number", "minimum": 0},
            },
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "route", "event", "event_id", "state", "attempts"],
            "properties": {
                "id": {"type": "integer"},
                "route": STRING,
                "event": STRING,
                "event_id": STRING,
                "state": {"enum": ["pending", "leased", "done", "retry", "dead"]},
                "attempts": COUNT,
                "reason": {"type": ["string", "null"]},
                "updated_at": {"type": "number"},
            },
        },
        "Recent": {
            "type": "object",
            "required": ["deliveries", "totals", "routes"],
            "properties": {
                "deliveries": {"type": "array", "items": ref("Delivery")},
                "totals": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "additionalProperties": COUNT},
                },
                "deduplicated": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "additionalProperties": COUNT},
                },
                "consent_denied": {"type": "object", "additionalProperties": COUNT},
                "routed_away": {"type": "object", "additionalProperties": COUNT},
                "routes": {"type": "object", "additionalProperties": ref("RouteHealth")},
                "browser": {"type": "object"},
            },
        },
        "DeadLetters": {
            "type": "object",
            "required": ["dead"],
            "properties": {"dead": {"type": "array", "items": ref("Delivery")}},
        },
    }


_ADMIN: Final[list[dict[str, list[str]]]] = [{"adminToken": []}]
_LIMIT: Final = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "Rows to return, 1-500 (default 50).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
}


def _admin_answers(ok: dict[str, Any], bad: str) -> dict[str, Any]:
    return {
        "200": ok,
        "400": error_answer(bad),
        "401": error_answer("Missing or wrong admin token."),
        "403": error_answer("Admin surfaces are off: server.admin_token is not set."),
    }


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": json_answer(ref("Health"), "The process serves requests.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the store takes writes and no destination is paused",
                "responses": {
                    "200": json_answer(ref("Readiness"), "Ready."),
                    "503": json_answer(ref("Readiness"), "Not ready; problems says why."),
                },
            }
        },
        "/v1/debug/recent": {
            "get": {
                "operationId": "debugRecent",
                "summary": "Recent deliveries, totals per state, route health",
                "security": _ADMIN,
                "parameters": [
                    _LIMIT,
                    {
                        "name": "route",
                        "in": "query",
                        "required": False,
                        "description": "Only this route (<site>:<destination>).",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": _admin_answers(
                    json_answer(ref("Recent"), "Recent deliveries."), "An invalid limit."
                ),
            }
        },
        "/v1/debug/dead": {
            "get": {
                "operationId": "debugDead",
                "summary": "Dead letters of one route, with their reasons",
                "security": _ADMIN,
                "parameters": [
                    _LIMIT,
                    {
                        "name": "route",
                        "in": "query",
                        "required": True,
                        "description": "<site>:<destination>, e.g. shop:meta.",
                        "schema": {"type": "string", "minLength": 1},
                    },
                ],
                "responses": _admin_answers(
                    json_answer(ref("DeadLetters"), "Dead letters."),
                    "The route parameter is missing, or an invalid limit.",
                ),
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text format 0.0.4; README 'Metrics')",
                "security": _ADMIN,
                "responses": {
                    "200": {
                        "description": "Every metric family, as read now.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": error_answer("Missing or wrong admin token."),
                    "403": error_answer("Admin surfaces are off: server.admin_token is not set."),
                },
            }
        },
        "/v1/visitors/{visitor_id}": {
            "delete": {
                "operationId": "eraseVisitor",
                "summary": "Erase a visitor's profile and undelivered events",
                "security": API_KEY,
                "parameters": [
                    {
                        "name": "visitor_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                ],
                "responses": {
                    "200": json_answer(ref("Erased"), "Erased (counts may be 0)."),
                    "400": error_answer("Invalid visitor id."),
                    "401": UNAUTHORIZED,
                },
            }
        },
        "/v1/erase": {
            "post": {
                "operationId": "erase",
                "summary": "Erase by e-mail, phone and/or external id (raw or SHA-256)",
                "security": API_KEY,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": ref("Erasure")}},
                },
                "responses": {
                    "200": json_answer(ref("Erased"), "Erased (counts may be 0)."),
                    "400": error_answer("Not an erasure request, or no usable identifier."),
                    "401": UNAUTHORIZED,
                    "413": error_answer("Body over 16 KiB."),
                },
            }
        },
        PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": json_answer({"type": "object"}, "The OpenAPI document.")},
            }
        },
    }


def document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the public HTTP API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "signalgate",
            "version": __version__,
            "description": "Self-hosted first-party tracking gateway: server API, browser"
            " collect endpoint, health, operator and erasure surfaces.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": {
            **event_paths(),
            **_paths(),
            **dead_paths(),
            **gap_paths(),
            **stats_paths(),
            **debug_paths(),
        },
        "components": {
            "schemas": {
                **event_schemas(),
                **_schemas(),
                **dead_schemas(),
                **gap_schemas(),
                **stats_schemas(),
                **debug_schemas(),
            },
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A site API key (sites[].api_keys).",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (server.admin_token).",
                },
            },
        },
    }


class OpenApi:
    """Serves the document: built once, no auth, cacheable, with a strong ETag."""

    def __init__(self) -> None:
        self.body = dumps(document())
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    async def get(self, request: web.Request) -> web.Response:
        """Return the document (304 to a matching If-None-Match)."""
        headers = {"Cache-Control": "public, max-age=3600", "ETag": self.etag}
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.body, content_type=JSON, headers=headers)
