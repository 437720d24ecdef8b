"""OpenAPI path and schemas of GET /v1/admin/stats (gateway/web/admin_stats.py).

Kept apart from gateway/web/openapi.py, which merges them into the served document.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.core.rollup import METRICS
from gateway.web.admin_stats import MAX_POINTS, MAX_STEP, MAX_TIME, PATH

_JSON: Final = "application/json"
_COUNT: Final = {"type": "integer", "minimum": 0}
_TIME: Final = {"type": "integer", "minimum": 0}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_SECONDS: Final = {"type": ["number", "null"], "minimum": 0}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": "#/components/schemas/" + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def stats_schemas() -> dict[str, dict[str, Any]]:
    """The component schemas of the stats API."""
    return {
        "StatsSeries": {
            "type": "object",
            "required": ["site", "destination", "event", "metric", "detail", "values"],
            "properties": {
                "site": {"type": "string"},
                "destination": {
                    **_NULLABLE_STRING,
                    "description": "null for the site-wide received / accepted / rejected.",
                },
                "event": {
                    **_NULLABLE_STRING,
                    "description": "A standard event name or custom; null when not per event.",
                },
                "metric": {"enum": list(METRICS)},
                "detail": {
                    **_NULLABLE_STRING,
                    "description": "Source, reason, identifier kind or latency bucket bound.",
                },
                "values": {"type": "array", "items": _COUNT, "description": "One per time."},
            },
        },
        "StatsLatency": {
            "type": "object",
            "required": ["site", "destination", "count", "p50", "p95"],
            "properties": {
                "site": {"type": "string"},
                "destination": {"type": "string"},
                "count": {"type": "array", "items": _COUNT},
                "p50": {"type": "array", "items": _SECONDS},
                "p95": {"type": "array", "items": _SECONDS},
            },
        },
        "Stats": {
            "type": "object",
            "required": [
                "from",
                "to",
                "step",
                "site",
                "destination",
                "times",
                "series",
                "latency",
            ],
            "properties": {
                "from": _TIME,
                "to": _TIME,
                "step": {"type": "integer", "minimum": 60, "maximum": MAX_STEP},
                "site": _NULLABLE_STRING,
                "destination": _NULLABLE_STRING,
                "times": {
                    "type": "array",
                    "maxItems": MAX_POINTS,
                    "items": _TIME,
                    "description": "Start of each step (Unix seconds).",
                },
                "series": {"type": "array", "items": _ref("StatsSeries")},
                "latency": {"type": "array", "items": _ref("StatsLatency")},
            },
        },
    }


def stats_paths() -> dict[str, Any]:
    """The path of the stats API (admin token)."""
    error = _ref("Error")
    when = {
        "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_TIME}, {"format": "date-time"}]
    }
    return {
        PATH: {
            "get": {
                "operationId": "getStats",
                "summary": "Per-minute counters of a time range, summed per step",
                "description": (
                    "The rollups the gateway writes every minute (kept audit.retention_days):"
                    " per site, destination and event received by source, accepted, rejected,"
                    " queued, deduplicated, consent-dropped, routed away, delivered, retried,"
                    " dead by reason, identifier coverage and the delivery latency histogram,"
                    " with estimated p50 / p95 per step."
                ),
                "security": [{"adminToken": []}],
                "parameters": [
                    {**_query("site", {"type": "string"}, "Only this site."), "example": "shop"},
                    _query("destination", {"type": "string"}, "Only this destination."),
                    _query(
                        "from", when, "Range start: Unix seconds or ISO 8601 (default: to - 1 h)."
                    ),
                    _query("to", when, "Range end: Unix seconds or ISO 8601 (default: now)."),
                    _query(
                        "metric",
                        {"type": "string", "maxLength": 500},
                        "Only these metrics, comma-separated (default: all): "
                        + ", ".join(METRICS)
                        + ".",
                    ),
                    _query(
                        "step",
                        {"type": "integer", "minimum": 60, "maximum": MAX_STEP, "multipleOf": 60},
                        f"Seconds per value (default 60); at most {MAX_POINTS} steps.",
                    ),
                ],
                "responses": {
                    "200": _json(_ref("Stats"), "The series of the range."),
                    "400": _json(error, "An unknown site or destination, or a bad range."),
                    "401": _json(error, "Missing or wrong admin token."),
                    "403": _json(error, "Admin surfaces are off: server.admin_token is not set."),
                },
            }
        }
    }
