"""OpenAPI paths and schemas of event intake: the server API (POST /v1/events and the canonical
Event) and the browser collect endpoint (/e), with the answer bodies they share with every
other path (Error, FieldError). Kept apart from gateway/web/openapi.py, which merges them into
the served document (first, in this order).

The parts the document is built from (a `$ref`, a JSON answer, the error answer, the small
common schemas, the API-key security) are defined here too, beside the Error schema they
point to; gateway/web/openapi.py builds the operator paths with them.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.core.event import CLICK_ID_KEYS, CONSENT_KEYS, STANDARD_EVENTS, Source
from gateway.core.jsoncodec import dumps

JSONSchema = dict[str, Any]

JSON: Final = "application/json"
_REF: Final = "#/components/schemas/"


def ref(name: str) -> JSONSchema:
    """A reference to the component schema `name`."""
    return {"$ref": _REF + name}


def json_answer(schema: JSONSchema, description: str, **extra: Any) -> dict[str, Any]:
    """An answer with a JSON body of `schema`."""
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def error_answer(description: str, **extra: Any) -> dict[str, Any]:
    """An answer with the Error body."""
    return json_answer(ref("Error"), description, **extra)


STRING: Final[JSONSchema] = {"type": "string"}
COUNT: Final[JSONSchema] = {"type": "integer", "minimum": 0}

API_KEY: Final[list[dict[str, list[str]]]] = [{"apiKey": []}]
UNAUTHORIZED: Final = error_answer("Missing or unknown API key.")

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


def event_schemas() -> dict[str, JSONSchema]:
    """The component schemas of intake: the canonical Event, the collect event, their answers."""
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
            "first_name": STRING,
            "last_name": STRING,
            "city": STRING,
            "state": STRING,
            "zip": {"type": ["string", "integer"]},
            "country": STRING,
            "date_of_birth": {"type": ["string", "integer"]},
            "gender": STRING,
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
            "content_type": STRING,
            "content_name": STRING,
            "content_category": STRING,
            "num_items": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "search_string": STRING,
            "status": STRING,
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
        "properties": {"path": STRING, "reason": STRING},
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
                    "items": ref("Event"),
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
                "error": STRING,
                "message": STRING,
                "errors": {"type": "array", "items": ref("FieldError")},
            },
        },
        "IngestResult": {
            "type": "object",
            "required": ["accepted", "deduplicated", "rejected"],
            "properties": {
                "accepted": COUNT,
                "deduplicated": COUNT,
                "rejected": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "errors"],
                        "properties": {
                            "index": COUNT,
                            "errors": {"type": "array", "items": ref("FieldError")},
                        },
                    },
                },
                "warnings": {"type": "array", "items": ref("FieldError")},
                "error": STRING,
                "message": STRING,
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
                    "event": STRING,
                    "event_id": {"type": ["string", "integer"]},
                    "url": STRING,
                    "referrer": STRING,
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


def event_paths() -> dict[str, Any]:
    """The paths of intake: POST /v1/events and the collect endpoint."""
    ingest = ref("IngestResult")
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
                "security": API_KEY,
                "parameters": [_DEBUG_HEADER],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": ref("EventsDocument"), "example": _EVENTS_EXAMPLE}
                    },
                },
                "responses": {
                    "202": json_answer(ingest, "At least one event accepted and committed."),
                    "400": error_answer(
                        "Not JSON, not an events document, empty, too many events, an"
                        " undecodable gzip body or an invalid X-Signalgate-Debug header."
                    ),
                    "401": UNAUTHORIZED,
                    "413": error_answer("Body (after decompression) over server.max_body_bytes."),
                    "422": json_answer(ingest, "A valid document, but every event was rejected."),
                    "429": error_answer(
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
                        JSON: {"schema": ref("CollectEvent"), "example": _COLLECT_EXAMPLE},
                    },
                },
                "responses": {
                    "204": {"description": "Taken (or counted and dropped for consent)."},
                    "400": error_answer("Not a JSON object, or the event was refused (errors)."),
                    "403": error_answer("Origin not allowed."),
                    "404": error_answer("No site serves this Host."),
                    "413": error_answer("Body over 64 KiB."),
                },
            }
        },
    }
