"""X Conversion API: settings, event-id table, Event → conversion, request, answer classification.

Facts from ../shared/platforms.md §9 (X): endpoint `POST {api_base}/{version}/measurement/
conversions/{pixel_id}`, OAuth 1.0a user-context signing, `{"conversions": [...]}` with at most
500 per request; the conversion object (`conversion_time` ISO-8601, `event_id`, `identifiers`,
`conversion_id`, `value`, `price_currency`, `number_items`, `contents`); the identifier table
(twclid plain; e-mail trimmed and SHA-256; phone E.164 and SHA-256; IP and user agent plain and
only counted next to another identifier); the documented 400 messages.

Event ids, not names: X has no event name in the API. Each conversion names the base-36 id of
an event created in X Events Manager (a single-event tag, "Install with Conversion API" or an
existing pixel event), and that event fixes the type (Purchase, Lead, …). So an event is sent
only when the site maps its name to an id: `purchase_event_id` for Purchase and `event_ids` for
the others (a custom name too). An event without an id is not sent: it is dead-lettered as
invalid_field with that reason (and the 202 answer warns about it), because no X event could
count it; routing it away is the router's job, not a guess here.

Identifiers: the "tiktok" rule set's digests — e-mail trimmed and lower-cased, phone as E.164
*with* '+' (X says "E164 standard"; whether the '+' is kept is not spelled out, integrators
differ: unverified) — each in its own identifier object, as in X's example; X's click id
`twclid` plain, never another platform's click ids or cookies; IP and user agent plain, and only
when a twclid, e-mail or phone is there too (X counts them only with another identifier).

Deduplication: `conversion_id` is the event id, the key X shares with the pixel's
`conversion_id` (`twq('event', …, {conversion_id})`) for the same conversion.

Answers: 2xx is delivered. 401 (signature or tokens refused), 403 (the user lacks AD_MANAGER /
ACCOUNT_ADMIN, or the app lacks Ads API access) and 404 (pixel or event tag unknown) pause the
route. 429 waits for Retry-After, else X's rate-limit reset headers (epoch seconds), else a
minute; 408 and 5xx retry. A 400 naming the event id ("… is not a single event tag (SET)", a
missing event id) concerns every event of the request — requests are batched per event id — and
dead-letters them without bisection; any other 400 ("At least one user identifier must be
provided", "Hashed_email is not a valid SHA-256 hash", …) rejects the request for one bad
conversion: it is bisected until that one stands alone and is dead-lettered as invalid_field.

X has no test mode: an event carrying a `test_code` is not sent (it would be counted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import httpx

from gateway.core.event import Event
from gateway.core.secret import Secret
from gateway.destinations.base import BatchVerdict, Delivered, Permanent, Retry, default_verdict
from gateway.destinations.common import (
    Configured,
    api_base_setting,
    item_count,
    json_object,
    max_batch_setting,
    past_window,
    post_json,
    put_present,
    reason_text,
    setting,
    status_verdict,
)
from gateway.destinations.x.signing import SYSTEM_ENTROPY, Credentials, Entropy, authorization
from gateway.store.base import DeadReason

MAX_BATCH: Final = 500
"""X accepts at most 500 conversions per request ("Conversion count limit is 500", §9)."""
WINDOW: Final = 30 * 86400
"""X states no age limit (§10.3); its longest attribution window is 30 days after the click, so
an older conversion can no longer be attributed and is not sent."""
RATE_LIMIT_WAIT: Final = 60.0
"""Seconds to wait after a 429 that says neither Retry-After nor when the limit resets."""
RESET_HEADERS: Final = ("x-account-rate-limit-reset", "x-rate-limit-reset")
"""X's rate-limit reset headers (epoch seconds): per ad account first, then per user."""

BASE36_ID: Final = r"[0-9a-z]{1,16}"
EVENT_ID: Final = rf"{BASE36_ID}|tw-{BASE36_ID}-{BASE36_ID}"
"""An Events Manager event id: base-36 (`o87ne`) or the pixel form `tw-<pixel>-<event>`."""
_EVENT_ID_RE: Final = re.compile(EVENT_ID)
_EVENT_ID_EXPECTED: Final = "a base-36 X event id such as o87ne (or tw-<pixel>-<event>)"

IDENTIFIER_KEYS: Final = frozenset({"em", "ph"})
"""The hashed identifiers X takes; everything else (names, places, external_id) stays home."""
_HASHED: Final = (("em", "hashed_email"), ("ph", "hashed_phone_number"))

_PAUSED: Final = {
    401: "OAuth 1.0a signature or tokens refused: check consumer_key/consumer_secret and"
    " access_token/access_token_secret",
    403: "no permission: the access token's user needs AD_MANAGER or ACCOUNT_ADMIN on the ad"
    " account, and the app needs Ads API access",
    404: "pixel or event not found: check pixel_id and the event ids",
}
"""Statuses that pause the route, with the hint each adds to the reason."""
_EVENT_ID_ERROR: Final = re.compile(
    r"single event tag|missing event[ _]?id|event[ _]?id\b.{0,20}\b(required|missing)",
    re.IGNORECASE,
)
"""A 400 message about the event id (X's "Event_id (…) is not a single event tag (SET)", or a
missing event id): it concerns every conversion of the request, which share one event id."""


@dataclass(frozen=True, slots=True)
class XSettings:
    """`[sites.destinations.x]`: one X pixel (base tag), its events and OAuth 1.0a keys."""

    pixel_id: str = setting(
        "Base-36 id of the X pixel (Base Tag) in Events Manager, e.g. o8z6j.",
        pattern=BASE36_ID,
        expected="a base-36 X pixel id such as o8z6j",
    )
    purchase_event_id: str = setting(
        "Base-36 id of the X event (Events Manager) that Purchase conversions count for.",
        pattern=EVENT_ID,
        expected=_EVENT_ID_EXPECTED,
    )
    consumer_key: Secret = setting("Ads API app's consumer (API) key, a secret.")
    consumer_secret: Secret = setting("Ads API app's consumer (API) secret, a secret.")
    access_token: Secret = setting(
        "OAuth 1.0a access token of a user with AD_MANAGER or ACCOUNT_ADMIN, a secret."
    )
    access_token_secret: Secret = setting("That access token's secret, a secret.")
    event_ids: Mapping[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Event name → X event id for other events, e.g."
            ' {Lead = "o87nf", AddToCart = "o87ng"}; events without an id are not sent.',
            "value_pattern": EVENT_ID,
            "expected": _EVENT_ID_EXPECTED,
        },
    )
    api_base: str = api_base_setting("https://ads-api.x.com", "X Ads API")
    api_version: str = field(
        default="12",
        metadata={"help": "X Ads API version.", "pattern": r"[0-9]{1,3}", "expected": "a number"},
    )
    max_batch: int = max_batch_setting("X", MAX_BATCH)


class X(Configured[XSettings]):
    """X Conversion API destination."""

    name: ClassVar[str] = "x"
    hash_rules: ClassVar[str] = "tiktok"
    """X's rules are TikTok's: e-mail trimmed + lower-cased, phone E.164 with '+'."""
    identifier_keys: ClassVar[frozenset[str]] = IDENTIFIER_KEYS

    def __init__(self, settings: XSettings, entropy: Entropy = SYSTEM_ENTROPY) -> None:
        super().__init__(settings)
        self.entropy = entropy
        base = settings.api_base.rstrip("/")
        self.url = f"{base}/{settings.api_version}/measurement/conversions/{settings.pixel_id}"
        self._credentials = Credentials(
            settings.consumer_key.value,
            settings.consumer_secret.value,
            settings.access_token.value,
            settings.access_token_secret.value,
        )

    def with_clock(self, clock: Callable[[], float]) -> X:
        """Return this destination signing with `clock`'s time (the app gives its own)."""
        return X(self.settings, replace(self.entropy, clock=clock))

    def event_id(self, event: Event) -> str | None:
        """Return the X event id configured for the event's name, or None."""
        found = self.settings.event_ids.get(event.event)
        if found is None and event.event == "Purchase":
            return self.settings.purchase_event_id
        return found

    def batch_key(self, event: Event) -> str:
        """Return "<test>:<event id>": one X event per request, test events never mixed in."""
        return f"{'test' if event.test_code else ''}:{self.event_id(event) or ''}"

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) past X's 30-day attribution window."""
        return past_window(event.time, now, WINDOW)

    def validate(self, event: Event) -> str | None:
        """Return why X would refuse (or must not get) the event, or None."""
        if event.test_code:
            return "X's Conversion API has no test mode: an event with a test_code would be counted"
        found = self.event_id(event)
        if found is None:
            return (
                f"event name {event.event!r} has no X event id: map it to the id of its event"
                " in X Events Manager in sites[].destinations.x.event_ids"
            )
        if _EVENT_ID_RE.fullmatch(found) is None:
            return f"X event id {found!r} for {event.event!r} is not {_EVENT_ID_EXPECTED}"
        if not self.identifiers(event):
            return (
                "X needs the twclid click id, an e-mail or a phone (IP address and user agent"
                " count only next to one of them)"
            )
        return None

    def identifiers(self, event: Event) -> list[dict[str, str]]:
        """Return `identifiers`: twclid, then the e-mail and phone digests, each in its own
        object; IP address and user agent are added only when one of those is there."""
        u = event.user
        out: list[dict[str, str]] = []
        click = u.click_ids.get("twclid")
        if click:
            out.append({"twclid": click})
        hashed = u.hashed.get(self.hash_rules, {})
        for key, name in _HASHED:
            out.extend({name: value} for value in hashed.get(key, ()))
        if out:
            if u.ip:
                out.append({"ip_address": u.ip})
            if u.user_agent:
                out.append({"user_agent": u.user_agent})
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the conversion object (§9) for one validated event."""
        body: dict[str, Any] = {
            "conversion_time": conversion_time(event.time),
            "event_id": self.event_id(event) or "",
            "identifiers": self.identifiers(event),
            "conversion_id": event.event_id,
        }
        d = event.data
        number = d.num_items if d.num_items else (item_count(d.contents) if d.contents else None)
        put_present(
            body,
            (
                ("value", d.value),
                ("price_currency", d.currency.upper() if d.currency else None),
                ("number_items", number if number and number > 0 else None),
            ),
        )
        if d.contents:
            body["contents"] = [_content(c.id, c.quantity, c.price) for c in d.contents]
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one POST of `{"conversions": [...]}`, signed with a fresh nonce and time."""
        doc = {"conversions": [self.payload(e) for e in events]}
        header = authorization(
            "POST",
            self.url,
            self._credentials,
            self.entropy.nonce(),
            int(self.entropy.clock()),
        )
        return post_json(self.url, doc, auth={"authorization": header})

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map X's answer to outcomes (see the module docstring)."""
        status = response.status_code
        if 200 <= status < 300:
            return BatchVerdict(Delivered())
        body = json_object(response)
        message = _message(status, body)
        if status == 429 and response.headers.get("retry-after") is None:
            return BatchVerdict(Retry(message, _reset_wait(response, now)))
        verdict = status_verdict(response, now, message, _PAUSED, RATE_LIMIT_WAIT)
        if verdict is not None:
            return verdict
        if status == 400:
            if _EVENT_ID_ERROR.search(message):
                return BatchVerdict(Permanent(DeadReason.INVALID_FIELD, message))
            return BatchVerdict(Permanent(DeadReason.INVALID_FIELD, message), bisect=True)
        return default_verdict(response, now)


def conversion_time(seconds: int) -> str:
    """Return the event time as X shows it: ISO-8601 UTC with milliseconds and 'Z'."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _content(content_id: str, quantity: int | None, price: float | None) -> dict[str, Any]:
    item: dict[str, Any] = {"content_id": content_id}
    put_present(item, (("content_price", price), ("num_items", quantity)))
    return item


def _reset_wait(response: httpx.Response, now: float) -> float:
    """Return the seconds until X's rate limit resets (its reset headers), else a minute."""
    for name in RESET_HEADERS:
        raw = response.headers.get(name)
        if raw is None:
            continue
        try:
            reset = float(raw.strip())
        except ValueError:
            continue
        if reset == reset:  # not NaN
            return max(0.0, min(reset - now, 3600.0))
    return RATE_LIMIT_WAIT


def _message(status: int, body: Mapping[str, Any] | None) -> str:
    """Return "HTTP n, CODE: message; message" from X's `{"errors": [{code, message}]}`."""
    parts = [f"HTTP {status}"]
    texts: list[str] = []
    errors = body.get("errors") if body is not None else None
    if isinstance(errors, list):
        for error in errors[:3]:
            if not isinstance(error, dict):
                continue
            code = error.get("code")
            if isinstance(code, str) and code not in parts:
                parts.append(code)
            text = error.get("message")
            if isinstance(text, str) and text:
                texts.append(text)
    return reason_text(parts, "; ".join(texts))
