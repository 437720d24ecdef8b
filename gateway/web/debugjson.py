"""How the debug view shows events and payloads: readable JSON with no secret in it.

Events are shown from their stored form (gateway/core/record.py): hashed identifiers, browser
ids, click ids, event data; raw e-mail addresses and phone numbers never reach it (`PiiHasher`
replaced them before the event was stored). A payload is the request body a destination builds
for one event; the URL and headers, where tokens travel, are never part of it. Two further
guards run on everything shown: values under secret-looking keys are replaced, and every
configured secret value (API keys, admin token, platform credentials) is cut out of every
string, so a mapping that put a credential into a body would still not show it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.core.event import CONSENT_KEYS, Event
from gateway.core.secret import Secret
from gateway.destinations.base import Destination

log = logging.getLogger("signalgate.debug")

REMOVED: Final = "[removed]"
SECRET_KEYS: Final = frozenset(
    {
        "access_token",
        "accesstoken",
        "api_secret",
        "apisecret",
        "api_key",
        "apikey",
        "authorization",
        "client_secret",
        "consumer_key",
        "consumer_secret",
        "developer_token",
        "oauth_signature",
        "oauth_token",
        "password",
        "refresh_token",
        "secret",
        "token",
        "token_secret",
        "access_token_secret",
    }
)
"""Keys (lower case, '-' read as '_') whose values are never shown, whatever they hold."""
MIN_SECRET: Final = 6
"""Configured secrets shorter than this are not searched for (they would cut ordinary text)."""


def secrets_of(*roots: object) -> tuple[str, ...]:
    """Every `Secret` value found in config objects (dataclasses, mappings, sequences)."""
    found: set[str] = set()
    stack: list[object] = list(roots)
    while stack:
        item = stack.pop()
        if isinstance(item, Secret):
            if len(item.value) >= MIN_SECRET:
                found.add(item.value)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return tuple(sorted(found, key=len, reverse=True))  # the longest first: no partial cuts


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with secret-looking keys' values and every configured secret replaced."""
    cut = tuple(secrets)

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {
                key: REMOVED if _secret_key(key) else walk(inner) for key, inner in item.items()
            }
        if isinstance(item, list | tuple):
            return [walk(inner) for inner in item]
        if isinstance(item, str):
            for secret in cut:
                if secret in item:
                    item = item.replace(secret, REMOVED)
            return item
        return item

    return walk(value)


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def event_json(event: Event) -> dict[str, Any]:
    """An event as the debug view shows it (hashed identifiers only)."""
    user, data, consent = event.user, event.data, event.consent
    return {
        "event": event.event,
        "event_id": event.event_id,
        "time": event.time,
        "source": event.source.value,
        "channel": event.channel,
        "url": event.url,
        "referrer": event.referrer,
        "test_code": event.test_code,
        "ldu": event.ldu,
        "consent": None
        if consent is None
        else {key: getattr(consent, key) for key in CONSENT_KEYS},
        "user": {
            "hashed": {
                rules: {k: list(v) for k, v in ids.items()} for rules, ids in user.hashed.items()
            },
            "ip": user.ip,
            "user_agent": user.user_agent,
            "visitor_id": user.visitor_id,
            "fbc": user.fbc,
            "fbp": user.fbp,
            "click_ids": dict(user.click_ids),
        },
        "data": {
            **{f.name: getattr(data, f.name) for f in dataclasses.fields(data)},
            "contents": [dataclasses.asdict(c) for c in data.contents],
            "custom": dict(data.custom),
        },
    }


def payload_json(destination: Destination, event: Event) -> Any:
    """The body `destination` builds for `event` alone, as JSON (or text), or None."""
    try:
        body = bytes(destination.build_request([event]).content)
    except Exception as exc:  # a mapping bug must not break the debug page
        log.warning(
            "Could not rebuild a payload for the debug view.",
            extra={"reason": type(exc).__name__},
        )
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return body.decode("utf-8", "replace")
