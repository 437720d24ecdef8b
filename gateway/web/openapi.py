"""The OpenAPI 3.1 document of the public HTTP API, served at GET /v1/openapi.json.

The document is plain data built here (no file to ship); `tests/integration/test_openapi.py`
runs schemathesis against a live gateway so every answer keeps matching it. Limits that come
from configuration (body size, events per request) are stated in descriptions, not as schema
bounds, so the document is the same for every deployment.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from aiohttp import web

from gateway import __version__
from gateway.core.event import CLICK_ID_KEYS, CONSENT_KEYS, STANDARD_EVENTS, Source
from gateway.core.jsoncodec import dumps
from gateway.web.openapi_admin import (
    dead_paths,
    dead_schemas,
    debug_paths,
    debug_schemas,
    gap_paths,
    gap_schemas,
)
from gateway.web.openapi_stats import stats_paths, stats_schemas

JSONSchema = dict[str, Any]

PATH: Final = "/v1/openapi.json"

_JSON: Final = "application/json"
_REF: Final = "#/components/schemas/"


def _ref(name: str) -> JSONSchema:
    return {"$ref": _REF + name}


def _json(schema: JSONSchema, description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}, **extra}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return _json(_ref("Error"), description, **extra)


_STRING: Final[JSONSchema] = {"type": "string"}
_COUNT: Final[JSONSchema] = {"type": "integer", "minimum": 0}
_STRINGS: Final[JSONSchema] = {
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 10}]
}
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before sending again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_CONSENT_VALUE: Final[JSONSchema] = {
    "enum": ["granted", "denied", True, False],
    "description": '"granted" or "denied" (true and false are read the same).',
}


def _nullable(obj: JSONSchema) -> JSONSchema:
    """`obj` with each optional property also taking null (the parser reads null as absent)."""
    required = set(obj.get("required", ()))
    obj["properties"] = {
        name: schema if name in required else {"anyOf": [schema, {"type": "null"}]}
        for name, schema in obj["properties"].items()
    }
    return obj


def _schemas() -> dict[str, JSONSchema]:
    """The component schemas: the canonical Event and the answer bodies."""
    user: JSONSchema = {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "Who did it. E-mail, phone, names, city, state, zip, country, date of birth, gender"
            " and external id are normalised and SHA-256-hashed on arrival (a value that already"
            " is a SHA-256 hex digest is kept); ip, user_agent, fbc, fbp and click ids are sent"
            " plain. A value that cannot be normalised is dropped with a warning."
        ),
        "properties": {
            "email": _STRINGS,
            "phone": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "integer"},
                    {"type": "array", "items": {"type": ["string", "integer"]}, "maxItems": 10},
                ]
            },
            "external_id": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "integer"},
                    {"type": "array", "items": {"type": ["string", "integer"]}, "maxItems": 10},
                ]
            },
            "first_name": _STRING,
            "last_name": _STRING,
            "city": _STRING,
            "state": _STRING,
            "zip": {"type": ["string", "integer"]},
            "country": _STRING,
            "date_of_birth": {"type": ["string", "integer"]},
            "gender": _STRING,
            "ip": {"type": "string", "description": "IPv4 or IPv6 address of the customer."},
            "user_agent": {"type": "string", "maxLength": 1024},
            "visitor_id": {
                "type": "string",
                "maxLength": 256,
                "description": (
                    "The gateway's visitor id: the event is enriched from its profile and those"
                    " linked to it. The `_sgv` cookie value as read (`<id>.<signature>`) is"
                    " verified; a wrong signature drops it with a warning."
                ),
            },
            "fbc": {"type": "string", "description": "fb.<index>.<ms>.<fbclid>"},
            "fbp": {"type": "string", "description": "fb.<index>.<ms>.<random>"},
            "click_ids": {
                "type": "object",
                "description": (
                    "Click ids and first-party browser ids by key; `ga` is GA4's client id"
                    " (`<random>.<seconds>`, or the `_ga` cookie value as read)."
                ),
                "propertyNames": {"enum": sorted(CLICK_ID_KEYS)},
                "additionalProperties": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,500}$"},
            },
        },
    }
    content: JSONSchema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id"],
        "properties": {
            "id": {"type": ["string", "integer"]},
            "quantity": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "price": {"type": ["number", "string"]},
        },
    }
    data: JSONSchema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "value": {"type": ["number", "string"], "description": "Required for Purchase."},
            "currency": {
                "type": "string",
                "pattern": "^[A-Za-z]{3}$",
                "description": "ISO 4217; required for Purchase.",
            },
            "order_id": {
                "type": ["string", "integer"],
                "description": "Also the event_id when none is given.",
            },
            "contents": {"type": "array", "items": content, "maxItems": 500},
            "content_type": _STRING,
            "content_name": _STRING,
            "content_category": _STRING,
            "num_items": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "search_string": _STRING,
            "status": _STRING,
            "predicted_ltv": {"type": ["number", "string"]},
            "custom": {
                "type": "object",
                "maxProperties": 50,
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        },
    }
    event: JSONSchema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["event"],
        "description": (
            "The canonical event (README, Server API). A website event (source website, the"
            " default when url is given) needs url; Meta also needs user.user_agent and enough"
            " identifiers to match: an event accepted without them carries a warning, since it"
            " would be dead-lettered at delivery."
        ),
        "properties": {
            "event": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_ .:\-]{0,99}$",
                "description": "A standard name (" + ", ".join(sorted(STANDARD_EVENTS)) + ")"
                " or a custom one.",
            },
            "event_id": {
                "type": ["string", "integer"],
                "description": "Dedup key shared with the browser pixel; default: data.order_id,"
                " else random.",
            },
            "time": {
                "type": ["integer", "number", "string"],
                "description": "Unix seconds or ISO-8601 with a zone; default now. Older than"
                " the site's max_event_age_days or more than 5 minutes ahead is refused.",
            },
            "source": {"enum": [s.value for s in Source]},
            "url": {"type": "string", "description": "Absolute http(s) URL of the page."},
            "referrer": {"type": "string", "description": "Absolute http(s) URL."},
            "user": user,
            "data": data,
            "consent": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k: _CONSENT_VALUE for k in CONSENT_KEYS},
            },
            "test_code": {"type": "string", "maxLength": 100},
        },
    }
    for obj in (user, content, data, event["properties"]["consent"], event):
        _nullable(obj)
    field_error: JSONSchema = {
        "type": "object",
        "required": ["path", "reason"],
        "properties": {"path": _STRING, "reason": _STRING},
    }
    return {
        "Event": event,
        "EventsDocument": {
            "type": "object",
            "additionalProperties": False,
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "items": _ref("Event"),
                    "minItems": 1,
                    "description": "At most server.max_events_per_request events.",
                }
            },
        },
        "FieldError": field_error,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": _STRING,
                "message": _STRING,
                "errors": {"type": "array", "items": _ref("FieldError")},
            },
        },
        "IngestResult": {
            "type": "object",
            "required": ["accepted", "deduplicated", "rejected"],
            "properties": {
                "accepted": _COUNT,
                "deduplicated": _COUNT,
                "rejected": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "errors"],
                        "properties": {
                            "index": _COUNT,
                            "errors": {"type": "array", "items": _ref("FieldError")},
                        },
                    },
                },
                "warnings": {"type": "array", "items": _ref("FieldError")},
                "error": _STRING,
                "message": _STRING,
            },
        },
        "CollectEvent": _nullable(
            {
                "type": "object",
                "description": (
                    "A browser event from the loader: the Event's event, event_id, url, referrer,"
                    " data and consent, with user holding identify() fields only (ip, user agent,"
                    " cookies and click ids come from the request). Other keys are ignored."
                ),
                "properties": {
                    "event": _STRING,
                    "event_id": {"type": ["string", "integer"]},
                    "url": _STRING,
                    "referrer": _STRING,
                    "data": {"type": ["object", "null"]},
                    "consent": {
                        "description": "As the Event's; anything but an object is ignored."
                    },
                    "user": {
                        "description": "identify() fields; anything but an object is ignored."
                    },
                    "vid": {"description": "The loader's visitor id candidate (<ms>-<16 hex>)."},
                },
            }
        ),
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
            "properties": {"profiles": _COUNT, "deliveries": _COUNT},
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
                "problems": {"type": "array", "items": _STRING},
                "degraded": {"type": "array", "items": _STRING},
                "routes": {"type": "object", "additionalProperties": _ref("RouteHealth")},
            },
        },
        "RouteHealth": {
            "type": "object",
            "required": ["route", "paused"],
            "properties": {
                "route": _STRING,
                "paused": {"type": "boolean"},
                "paused_reason": {"type": ["string", "null"]},
                "waiting_seconds": {"type": "number", "minimum": 0},
                "delivered": _COUNT,
                "dead": _COUNT,
                "retried": _COUNT,
                "requests": _COUNT,
                "last_error": {"type": ["string", "null"]},
                "breaker": {"enum": ["closed", "open"]},
                "breaker_reason": {"type": ["string", "null"]},
                "breaker_failures": _COUNT,
                "breaker_open_seconds": {"type": "number", "minimum": 0},
                "next_probe_seconds": {"type": "number", "minimum": 0},
            },
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "route", "event", "event_id", "state", "attempts"],
            "properties": {
                "id": {"type": "integer"},
                "route": _STRING,
                "event": _STRING,
                "event_id": _STRING,
                "state": {"enum": ["pending", "leased", "done", "retry", "dead"]},
                "attempts": _COUNT,
                "reason": {"type": ["string", "null"]},
                "updated_at": {"type": "number"},
            },
        },
        "Recent": {
            "type": "object",
            "required": ["deliveries", "totals", "routes"],
            "properties": {
                "deliveries": {"type": "array", "items": _ref("Delivery")},
                "totals": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "additionalProperties": _COUNT},
                },
                "deduplicated": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "additionalProperties": _COUNT},
                },
                "consent_denied": {"type": "object", "additionalProperties": _COUNT},
                "routed_away": {"type": "object", "additionalProperties": _COUNT},
                "routes": {"type": "object", "additionalProperties": _ref("RouteHealth")},
                "browser": {"type": "object"},
            },
        },
        "DeadLetters": {
            "type": "object",
            "required": ["dead"],
            "properties": {"dead": {"type": "array", "items": _ref("Delivery")}},
        },
    }


_API_KEY: Final[list[dict[str, list[str]]]] = [{"apiKey": []}]
_ADMIN: Final[list[dict[str, list[str]]]] = [{"adminToken": []}]
_UNAUTHORIZED: Final = _error("Missing or unknown API key.")
_LIMIT: Final = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "Rows to return, 1-500 (default 50).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
}


_DEBUG_HEADER: Final = {
    "name": "X-Signalgate-Debug",
    "in": "header",
    "required": False,
    "description": "A test code: every event without its own test_code takes it and goes to"
    " each platform's test channel (README 'Debug'); 1 is enough for platforms that take no"
    " code; 0, false, off, no or empty: no flag.",
    "schema": {"type": "string", "maxLength": 100},
}
_EVENTS_EXAMPLE: Final = {
    "events": [
        {
            "event": "Purchase",
            "event_id": "ORDER-1001",
            "source": "website",
            "url": "https://shop.example/thank-you",
            "user": {
                "email": "jane@example.com",
                "phone": "+1 650 555 1212",
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            },
            "data": {
                "value": 49.9,
                "currency": "EUR",
                "order_id": "ORDER-1001",
                "contents": [{"id": "SKU-1", "quantity": 1, "price": 49.9}],
            },
        }
    ]
}
_COLLECT_EXAMPLE: Final = {
    "event": "ViewContent",
    "event_id": "view-1",
    "url": "https://shop.example/p/sku-1?fbclid=IwAR0abc",
    "data": {"content_name": "SKU 1"},
}


def _admin_answers(ok: dict[str, Any], bad: str) -> dict[str, Any]:
    return {
        "200": ok,
        "400": _error(bad),
        "401": _error("Missing or wrong admin token."),
        "403": _error("Admin surfaces are off: server.admin_token is not set."),
    }


def _paths() -> dict[str, Any]:
    ingest = _ref("IngestResult")
    return {
        "/v1/events": {
            "post": {
                "operationId": "postEvents",
                "summary": "Accept a batch of events from a shop backend",
                "description": (
                    "A 202 is sent after the accepted events are durably committed. The body"
                    " may be gzip-encoded; the size limit (server.max_body_bytes) counts"
                    " decoded bytes."
                ),
                "security": _API_KEY,
                "parameters": [_DEBUG_HEADER],
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {"schema": _ref("EventsDocument"), "example": _EVENTS_EXAMPLE}
                    },
                },
                "responses": {
                    "202": _json(ingest, "At least one event accepted and committed."),
                    "400": _error(
                        "Not JSON, not an events document, empty, too many events, an"
                        " undecodable gzip body or an invalid X-Signalgate-Debug header."
                    ),
                    "401": _UNAUTHORIZED,
                    "413": _error("Body (after decompression) over server.max_body_bytes."),
                    "422": _json(ingest, "A valid document, but every event was rejected."),
                    "429": _error(
                        "Over the site's rate_limit_per_second (burst: one second's worth, at"
                        " least server.max_events_per_request events).",
                        headers=_RETRY_AFTER,
                    ),
                },
            }
        },
        "/e": {
            "post": {
                "operationId": "collect",
                "summary": "Browser collect endpoint (the loader's events)",
                "description": (
                    "The path is the site's collect_path (default /e). The loader sends the"
                    " JSON as text/plain (no CORS preflight). The site is chosen by Host;"
                    " an Origin must be the request's own or in allowed_origins. Answers set"
                    " first-party cookies when consent allows."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/plain": {
                            "schema": {"type": "string", "description": "A CollectEvent as JSON."},
                            "example": dumps(_COLLECT_EXAMPLE).decode(),
                        },
                        _JSON: {"schema": _ref("CollectEvent"), "example": _COLLECT_EXAMPLE},
                    },
                },
                "responses": {
                    "204": {"description": "Taken (or counted and dropped for consent)."},
                    "400": _error("Not a JSON object, or the event was refused (errors)."),
                    "403": _error("Origin not allowed."),
                    "404": _error("No site serves this Host."),
                    "413": _error("Body over 64 KiB."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": _json(_ref("Health"), "The process serves requests.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the store takes writes and no destination is paused",
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready."),
                    "503": _json(_ref("Readiness"), "Not ready; problems says why."),
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
                    _json(_ref("Recent"), "Recent deliveries."), "An invalid limit."
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
                    _json(_ref("DeadLetters"), "Dead letters."),
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
                    "401": _error("Missing or wrong admin token."),
                    "403": _error("Admin surfaces are off: server.admin_token is not set."),
                },
            }
        },
        "/v1/visitors/{visitor_id}": {
            "delete": {
                "operationId": "eraseVisitor",
                "summary": "Erase a visitor's profile and undelivered events",
                "security": _API_KEY,
                "parameters": [
                    {
                        "name": "visitor_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                ],
                "responses": {
                    "200": _json(_ref("Erased"), "Erased (counts may be 0)."),
                    "400": _error("Invalid visitor id."),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/v1/erase": {
            "post": {
                "operationId": "erase",
                "summary": "Erase by e-mail, phone and/or external id (raw or SHA-256)",
                "security": _API_KEY,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("Erasure")}},
                },
                "responses": {
                    "200": _json(_ref("Erased"), "Erased (counts may be 0)."),
                    "400": _error("Not an erasure request, or no usable identifier."),
                    "401": _UNAUTHORIZED,
                    "413": _error("Body over 16 KiB."),
                },
            }
        },
        PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
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
        "paths": {**_paths(), **dead_paths(), **gap_paths(), **stats_paths(), **debug_paths()},
        "components": {
            "schemas": {
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
        return web.Response(body=self.body, content_type=_JSON, headers=headers)
