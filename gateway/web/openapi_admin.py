"""OpenAPI paths and schemas of the dead-letter admin API (gateway/web/admin_dead.py).

Kept apart from gateway/web/openapi.py, which merges them into the served document.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.store.base import NOT_REPLAYABLE, DeadReason
from gateway.web.admin_dead import MAX_PAGE, MAX_REPLAY

_JSON: Final = "application/json"
_ID_MAX: Final = 2**62 - 1
_REPLAYABLE: Final = sorted(r.value for r in DeadReason if r not in NOT_REPLAYABLE)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": "#/components/schemas/" + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _answers(ok: dict[str, Any], bad: str, *, body: bool) -> dict[str, Any]:
    error = _ref("Error")
    out = {
        "200": ok,
        "400": _json(error, bad),
        "401": _json(error, "Missing or wrong admin token."),
        "403": _json(error, "Admin surfaces are off: server.admin_token is not set."),
    }
    if body:
        out["404"] = _json(error, "The route is not a configured <site>:<destination>.")
        out["408"] = _json(error, "The body did not arrive in time.")
        out["413"] = _json(error, "Body over 64 KiB.")
    return out


_ROUTE: Final = {"type": "string", "minLength": 1, "maxLength": 200}
_COUNT: Final = {"type": "integer", "minimum": 0}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}


def dead_schemas() -> dict[str, dict[str, Any]]:
    """The component schemas of the dead-letter API."""
    return {
        "DeadLetter": {
            "type": "object",
            "required": ["id", "route", "event", "event_id", "reason", "replayable", "sent"],
            "properties": {
                "id": {"type": "integer"},
                "route": {"type": "string"},
                "event": {"type": "string"},
                "event_id": {"type": "string"},
                "event_time": {"type": "number"},
                "attempts": _COUNT,
                "reason": {"type": "string", "description": "A dead reason (closed set)."},
                "detail": {"type": "string"},
                "dead_at": {"type": "number", "description": "Unix seconds."},
                "replayable": {
                    "type": "boolean",
                    "description": "False for consent_denied and erased: never replayed.",
                },
                "sent": {
                    "type": "boolean",
                    "description": "False when the gateway's own check refused it unsent.",
                },
                "answer": {
                    "description": "The platform's answer (null: kept before schema v7).",
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["status", "error"],
                            "properties": {
                                "status": {"type": ["integer", "null"]},
                                "error": {"type": "string"},
                            },
                        },
                        {"type": "null"},
                    ],
                },
                "payload": {
                    "description": "The request body built for this one event, as sent"
                    " (hashed identifiers; no tokens), or null."
                },
            },
        },
        "DeadLetterPage": {
            "type": "object",
            "required": ["dead", "next_after"],
            "properties": {
                "dead": {"type": "array", "items": _ref("DeadLetter")},
                "next_after": {
                    "type": ["integer", "null"],
                    "description": "Pass as after for the next page; null on the last page.",
                },
            },
        },
        "ReplayRequest": {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["route", "ids"],
                    "properties": {
                        "route": _ROUTE,
                        "ids": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_REPLAY,
                            "items": {"type": "integer", "minimum": 1, "maximum": _ID_MAX},
                        },
                        "reason": {"enum": _REPLAYABLE},
                    },
                },
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["route", "all"],
                    "properties": {
                        "route": _ROUTE,
                        "all": {"const": True},
                        "reason": {"enum": _REPLAYABLE},
                        "after": {"type": "integer", "minimum": 0, "maximum": _ID_MAX},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_REPLAY},
                    },
                },
            ]
        },
        "ReplayResult": {
            "type": "object",
            "required": ["route", "replayed", "skipped", "remaining", "last_id", "paused"],
            "properties": {
                "route": {"type": "string"},
                "replayed": _COUNT,
                "skipped": _COUNT,
                "remaining": _COUNT,
                "last_id": {"type": ["integer", "null"]},
                "paused": {"type": "boolean"},
                "paused_reason": _NULLABLE_STRING,
            },
        },
        "ResumeRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["route"],
            "properties": {"route": _ROUTE},
        },
        "ResumeResult": {
            "type": "object",
            "required": ["route", "was_paused", "released"],
            "properties": {
                "route": {"type": "string"},
                "was_paused": {"type": "boolean"},
                "paused_reason": _NULLABLE_STRING,
                "released": _COUNT,
            },
        },
    }


def dead_paths() -> dict[str, Any]:
    """The paths of the dead-letter API (admin token)."""
    security: list[dict[str, list[str]]] = [{"adminToken": []}]
    return {
        "/v1/admin/dead": {
            "get": {
                "operationId": "listDeadLetters",
                "summary": "Dead letters with the payload sent and the platform's answer",
                "description": "In id order; filters combine. Page on with after=next_after.",
                "security": security,
                "parameters": [
                    _query("route", _ROUTE, "Only this <site>:<destination>."),
                    _query("reason", {"enum": [r.value for r in DeadReason]}, "Only this reason."),
                    _query(
                        "since",
                        {"anyOf": [{"type": "number", "minimum": 0}, {"format": "date-time"}]},
                        "Only rows given up at or after this time: Unix seconds or ISO 8601.",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        f"Rows per page, 1-{MAX_PAGE} (default 50).",
                    ),
                    _query(
                        "after",
                        {"type": "integer", "minimum": 0, "maximum": _ID_MAX},
                        "Only ids above this one (the previous page's next_after).",
                    ),
                ],
                "responses": _answers(
                    _json(_ref("DeadLetterPage"), "One page of dead letters."),
                    "An invalid filter, limit or cursor.",
                    body=False,
                ),
            }
        },
        "/v1/admin/replay": {
            "post": {
                "operationId": "replayDeadLetters",
                "summary": "Make dead letters of a route pending again",
                "description": (
                    "The route's worker delivers them like new rows (attempts reset, due now)."
                    " Rows no longer dead (delivered since) are skipped, so a second replay"
                    " sends nothing; consent_denied and erased rows are never replayed. With"
                    " all, pass the answer's last_id as after until remaining is 0. A paused"
                    " route stays paused (paused: true): resume it once fixed."
                ),
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("ReplayRequest")}},
                },
                "responses": _answers(
                    _json(_ref("ReplayResult"), "What was replayed."),
                    "Not a replay request.",
                    body=True,
                ),
            }
        },
        "/v1/admin/resume": {
            "post": {
                "operationId": "resumeRoute",
                "summary": "Lift a route's credentials pause now",
                "description": (
                    "Rows the pause (or a backoff) held back become due at once. The resume is"
                    " recorded in the store: the route's workers in every other process sharing"
                    " it lift their pause within about 2 seconds."
                ),
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("ResumeRequest")}},
                },
                "responses": {
                    **_answers(
                        _json(_ref("ResumeResult"), "Resumed (or was not paused)."),
                        "Not a resume request.",
                        body=True,
                    ),
                    "503": _json(_ref("Error"), "The store could not record it: nothing resumed."),
                },
            }
        },
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


# -- the conversion gap (gateway/web/admin_gap.py) ---------------------------------------------

_SHARE: Final = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_TIME: Final = {"anyOf": [{"type": "number", "minimum": 0}, {"format": "date-time"}]}


def gap_schemas() -> dict[str, dict[str, Any]]:
    """The component schemas of the conversion gap."""
    return {
        "MissingOrder": {
            "type": "object",
            "required": ["order_id", "event_id", "reason"],
            "properties": {
                "order_id": {"type": "string"},
                "event_id": {"type": "string"},
                "reason": {
                    "enum": [
                        "consent_denied",
                        "routed_away",
                        "dead_letter",
                        "queued",
                        "unknown",
                    ]
                },
                "dead_reason": {"type": "string", "description": "dead_letter: the dead reason."},
                "detail": {"type": "string"},
                "state": {"enum": ["pending", "leased", "retry"]},
                "attempts": _COUNT,
                "next_try": {"type": "number", "description": "retry: Unix seconds."},
                "last_error": {"type": "string"},
            },
        },
        "DestinationGap": {
            "type": "object",
            "required": ["route", "orders", "delivered", "missing", "gap", "missing_orders"],
            "properties": {
                "route": {"type": "string"},
                "orders": _COUNT,
                "delivered": _COUNT,
                "missing": _COUNT,
                "gap": _SHARE,
                "sent": _COUNT,
                "paired": {
                    **_COUNT,
                    "description": "Orders deduplicated with a browser copy (loader or pixel).",
                },
                "fresh": {**_COUNT, "description": "Delivered within fresh_seconds."},
                "fresh_share": _SHARE,
                "missing_orders": {"type": "array", "items": _ref("MissingOrder")},
            },
        },
        "ConversionGap": {
            "type": "object",
            "required": ["site", "since", "until", "orders", "coverage", "destinations"],
            "properties": {
                "site": {"type": "string"},
                "since": {"type": "number"},
                "until": {"type": "number"},
                "truncated": {"type": "boolean"},
                "fresh_seconds": {"type": "number"},
                "orders": _COUNT,
                "coverage": {
                    "type": "object",
                    "description": "Share of orders carrying each field (null: no orders).",
                    "properties": {
                        "email": _SHARE,
                        "value": _SHARE,
                        "currency": _SHARE,
                        "event_id": _SHARE,
                    },
                },
                "destinations": {
                    "type": "object",
                    "additionalProperties": _ref("DestinationGap"),
                },
            },
        },
    }


def gap_paths() -> dict[str, Any]:
    """The path of the conversion gap (admin token)."""
    answers = _answers(
        _json(_ref("ConversionGap"), "The site's orders per destination, and the missing ones."),
        "An invalid or unknown parameter, or since not before until.",
        body=False,
    )
    answers["404"] = _json(_ref("Error"), "The site is not configured.")
    return {
        "/v1/admin/gap": {
            "get": {
                "operationId": "conversionGap",
                "summary": "Orders the backend reported vs those each platform accepted",
                "description": (
                    "Orders are backend events of the site's order_events carrying an order_id."
                    " Each missing order says why: consent_denied, routed_away, dead_letter"
                    " (with the dead reason), queued (attempts, next try) or unknown."
                ),
                "security": [{"adminToken": []}],
                "parameters": [
                    {**_query("site", _ROUTE, "The site id."), "required": True},
                    _query("since", _TIME, "Orders timed at or after: default until - 7 days."),
                    _query("until", _TIME, "Orders timed before: default now."),
                ],
                "responses": answers,
            }
        }
    }


# --- the debug view (gateway/web/debugview.py) ---

_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
_OUTCOME: Final = {
    "enum": ["delivered", "retry", "dead", "paused", "split", "refused"],
    "description": "What the answer meant for the event (split: the platform refused the"
    " batch for one of its events, which was resent in halves; refused: the gateway gave it"
    " up unsent, e.g. a test event for a platform without test mode).",
}


def debug_schemas() -> dict[str, dict[str, Any]]:
    """The component schemas of the debug view."""
    answer = {
        "type": "object",
        "required": ["sent_at", "status", "outcome"],
        "properties": {
            "sent_at": {"type": "number"},
            "status": {"type": ["integer", "null"]},
            "outcome": _OUTCOME,
            "reason": _NULLABLE_STRING,
        },
    }
    return {
        "ReceivedEvent": {
            "type": "object",
            "required": ["received_at", "event", "event_id", "routes", "answers", "record"],
            "properties": {
                "received_at": {"type": "number", "description": "Unix seconds."},
                "event": {"type": "string"},
                "event_id": {"type": "string"},
                "routes": {
                    "type": "object",
                    "description": "Destination → queued, or duplicate (the outbox had it).",
                    "additionalProperties": {"enum": ["queued", "duplicate"]},
                },
                "answers": {
                    "type": "object",
                    "description": "Destination → the latest answer to it still remembered.",
                    "additionalProperties": answer,
                },
                "record": {
                    "type": "object",
                    "description": "The event as stored: hashed identifiers only.",
                },
            },
        },
        "SentEvent": {
            "type": "object",
            "required": ["destination", "sent_at", "event", "event_id", "endpoint", "status"],
            "properties": {
                "destination": {"type": "string"},
                "sent_at": {"type": "number"},
                "event": {"type": "string", "description": "The name the platform got."},
                "event_id": {"type": "string"},
                "test_code": _NULLABLE_STRING,
                "endpoint": {
                    "type": ["string", "null"],
                    "description": "The URL without its query (null: refused unsent).",
                },
                "status": {
                    "type": ["integer", "null"],
                    "description": "The platform's HTTP status (null: refused unsent).",
                },
                "outcome": _OUTCOME,
                "reason": _NULLABLE_STRING,
                "request_events": {"type": "integer", "minimum": 0},
                "payload": {
                    "description": "The body the destination builds for this event alone"
                    " (hashed identifiers; no tokens), or null."
                },
            },
        },
        "DebugEvents": {
            "type": "object",
            "required": ["site", "capacity", "received", "sent"],
            "properties": {
                "site": {"type": "string"},
                "capacity": {
                    "type": "integer",
                    "description": "sites[].debug_events: how many events each ring keeps.",
                },
                "received": {"type": "array", "items": _ref("ReceivedEvent")},
                "sent": {"type": "array", "items": _ref("SentEvent")},
            },
        },
    }


def debug_paths() -> dict[str, Any]:
    """The path of the debug view (admin token)."""
    error = _ref("Error")
    return {
        "/v1/admin/events": {
            "get": {
                "operationId": "debugEvents",
                "summary": "The last events received and sent to each platform (in memory)",
                "description": "Newest first. Received events are shown as stored (hashed"
                " identifiers only); sent ones with the body built for them, the endpoint"
                " without its query and the platform's answer. Nothing survives a restart.",
                "security": [{"adminToken": []}],
                "parameters": [
                    _query(
                        "site",
                        {"type": "string", "maxLength": 40},
                        "The site id; optional when one site is configured.",
                    ),
                    _query(
                        "destination",
                        {"type": "string", "maxLength": 40},
                        "Only events routed or sent to this destination.",
                    ),
                    _query(
                        "event_id",
                        {"type": "string", "maxLength": 256},
                        "Only this event id.",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                        "Events per list, 1-1000 (default 50).",
                    ),
                ],
                "responses": {
                    "200": _json(_ref("DebugEvents"), "The last events."),
                    "400": _json(error, "An invalid limit or event_id, or no site named."),
                    "401": _json(error, "Missing or wrong admin token."),
                    "403": _json(error, "Admin surfaces are off: server.admin_token is not set."),
                    "404": _json(error, "No such site, or not a destination of the site."),
                },
            }
        }
    }
