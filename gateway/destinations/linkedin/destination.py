"""LinkedIn Conversions API: settings, Event → conversion event, request building, classification.

Facts from ../shared/platforms.md §6 (LinkedIn): endpoint, batch, headers, token life, limits,
time unit and 90-day window in the first table; the event element (`conversion` rule URN,
`conversionHappenedAt` in ms, `conversionValue` with a *string* amount, `eventId`, `user` with a
mandatory `userIds`) in the second; rule types per canonical event in §10.1; pitfall 25.
The version header default is LinkedIn's Marketing version 202607 (listed as current in
mid-2026 by LinkedIn's versioning page; each version lives about a year, so keep it configurable).

LinkedIn has no free-text event name: each conversion *rule* (Campaign Manager → Analyze →
Conversion tracking, data source "Conversions API") fixes the type (PURCHASE, LEAD, …), the
attribution windows and the value behaviour, and an event names its rule by URN. So an event is
sent only when the site maps it to a rule: `conversion_rules` keyed by event name or by LinkedIn
rule type (our canonical names map to types through `RULE_TYPES`), and `purchase_rule` for
Purchase. Anything else is dead-lettered with that reason: a custom event needs a rule as well.

Identifiers: the "meta" rule set's e-mail digest (LinkedIn hashes the trimmed, lower-cased
e-mail, as Meta does) as `SHA256_EMAIL`, and LinkedIn's own click id `li_fat_id` plain as
`LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID` — never another platform's ids, never a phone (LinkedIn
takes none). `userInfo` wants first and last name in plain text; signalgate keeps no plain names
(only digests leave the request), so it is not sent. LinkedIn takes no IP or user agent.

Consent: LinkedIn has no limited-data-use flag (§10.5: "send only consented events"), so an event
under LDU (US state opt-out, GPC) is not sent unless `send_limited_data_use` says otherwise.
There is no test mode either: an event carrying a `test_code` is not sent (it would be counted).

Answers (Rest.li): a batch is accepted with 200 and one `{"status": 201}` per element, in order
(LinkedIn's response schema); an element with another status failed alone (per-event outcome —
how LinkedIn words such an element's `error` is not documented, so only its status is relied
on). 401 (token expired or revoked — member tokens last 60 days), 403 (no role on the ad
account), 426 (a sunset `LinkedIn-Version`) and 404 (wrong `api_base`) pause the route. 429
(Retry-After honoured, else a minute), 408 and 5xx retry. 400/422 (validation: the body names
the offending field) reject the whole request: bisected until the bad event stands alone,
dead-lettered as invalid_field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Final

import httpx

from gateway.core.event import Event
from gateway.core.secret import Secret
from gateway.destinations.base import (
    BatchVerdict,
    Delivered,
    Outcome,
    Paused,
    Permanent,
    Retry,
    default_verdict,
)
from gateway.destinations.common import (
    Configured,
    api_base_setting,
    json_object,
    max_batch_setting,
    past_window,
    post_json,
    reason_text,
    setting,
    status_verdict,
)
from gateway.store.base import DeadReason

MAX_BATCH: Final = 5000
"""LinkedIn accepts up to 5,000 events in one BATCH_CREATE request (§6)."""
WINDOW: Final = 90 * 86400
"""Events older than 90 days are rejected (§6, §10.3)."""
RATE_LIMIT_WAIT: Final = 60.0
"""Seconds to wait after a 429 without Retry-After (LinkedIn's limits are per minute and day)."""
RULE_URN_PREFIX: Final = "urn:lla:llaPartnerConversion:"

RULE_TYPES: Final[Mapping[str, str]] = {
    "PageView": "KEY_PAGE_VIEW",
    "ViewContent": "VIEW_CONTENT",
    "Search": "SEARCH",
    "AddToCart": "ADD_TO_CART",
    "AddToWishlist": "ADD_TO_LIST",
    "InitiateCheckout": "START_CHECKOUT",
    "AddPaymentInfo": "ADD_BILLING_INFO",
    "Purchase": "PURCHASE",
    "Lead": "LEAD",
    "CompleteRegistration": "SIGN_UP",
    "Subscribe": "SUBSCRIBE",
    "Contact": "CONTACT",
    "SubmitApplication": "SUBMIT_APPLICATION",
    "Schedule": "BOOK_APPOINTMENT",
}
"""Canonical (Meta-style) event name → the LinkedIn conversion rule type it belongs to (§10.1,
§6). StartTrial, Donate, CustomizeProduct, FindLocation and custom names have no type: they are
sent only when `conversion_rules` maps the event name itself to a rule."""

IDENTIFIER_KEYS: Final = frozenset({"em"})
"""The hashed identifiers LinkedIn takes (`SHA256_EMAIL`); everything else stays home."""

ID_EMAIL: Final = "SHA256_EMAIL"
ID_CLICK: Final = "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID"

_RULE_ID = re.compile(r"[0-9]{1,19}")

_PAUSED: Final = {
    401: "access token expired or revoked: member tokens last 60 days",
    403: "no permission on the ad account or rule",
    426: "LinkedIn-Version sunset: raise api_version",
    404: "endpoint not found: check api_base",
}
"""Statuses that pause the route, with the hint each adds to the reason."""


@dataclass(frozen=True, slots=True)
class LinkedInSettings:
    """`[sites.destinations.linkedin]`: a LinkedIn ad account's conversion rules and its token."""

    purchase_rule: str = setting(
        "Id of the Conversions API conversion rule (type Purchase) that Purchase events go to.",
        pattern=_RULE_ID.pattern,
        expected="a conversion rule id (digits)",
    )
    access_token: Secret = setting(
        "OAuth 2.0 member access token with scope rw_conversions (lasts 60 days), a secret."
    )
    conversion_rules: Mapping[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Event name or LinkedIn rule type → conversion rule id for other events,"
            ' e.g. {LEAD = "2345678", Quiz = "3456789"}; events without a rule are not sent.'
        },
    )
    api_base: str = api_base_setting("https://api.linkedin.com", "LinkedIn API")
    api_version: str = field(
        default="202607",
        metadata={
            "help": "LinkedIn-Version header (YYYYMM); each version is sunset after about a year.",
            "pattern": r"20[0-9]{2}(0[1-9]|1[0-2])",
            "expected": "YYYYMM",
        },
    )
    max_batch: int = max_batch_setting("LinkedIn", MAX_BATCH, default=1000)
    send_limited_data_use: bool = field(
        default=False,
        metadata={"help": "Also send events under Limited Data Use (LinkedIn has no such flag)."},
    )


class LinkedIn(Configured[LinkedInSettings]):
    """LinkedIn Conversions API destination."""

    name: ClassVar[str] = "linkedin"
    hash_rules: ClassVar[str] = "meta"
    identifier_keys: ClassVar[frozenset[str]] = IDENTIFIER_KEYS

    def __init__(self, settings: LinkedInSettings) -> None:
        super().__init__(settings)
        self.url = f"{settings.api_base.rstrip('/')}/rest/conversionEvents"

    def batch_key(self, event: Event) -> str:
        """Return the test code (test events are refused, but never mixed with real ones)."""
        return event.test_code or ""

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside LinkedIn's 90-day window."""
        return past_window(event.time, now, WINDOW)

    def rule_type(self, event: Event) -> str | None:
        """Return the LinkedIn conversion type of the event's canonical name, if it has one."""
        return RULE_TYPES.get(event.event)

    def rule(self, event: Event) -> str | None:
        """Return the conversion rule the event goes to: by event name, by type, else None."""
        rules = self.settings.conversion_rules
        found = rules.get(event.event)
        if found is not None:
            return found
        kind = RULE_TYPES.get(event.event)
        if kind is not None:
            found = rules.get(kind)
            if found is not None:
                return found
            if kind == "PURCHASE":
                return self.settings.purchase_rule
        return None

    def validate(self, event: Event) -> str | None:
        """Return why LinkedIn would refuse (or must not get) the event, or None."""
        rule = self.rule(event)
        if rule is None:
            kind = self.rule_type(event)
            key = kind if kind is not None else event.event
            return (
                f"event name {event.event!r} has no LinkedIn conversion rule: map"
                f" {key!r} to a rule id in sites[].destinations.linkedin.conversion_rules"
            )
        if _rule_urn(rule) is None:
            return (
                f"conversion rule {rule!r} for event {event.event!r} is neither a rule id"
                f" (digits) nor a {RULE_URN_PREFIX}<id> URN"
            )
        if event.test_code:
            return "LinkedIn has no test mode: an event with a test_code would be counted"
        if event.ldu and not self.settings.send_limited_data_use:
            return (
                "limited data use applies and LinkedIn has no restricted-processing flag"
                " (send_limited_data_use is off)"
            )
        if not self.user_ids(event):
            return "LinkedIn needs an e-mail or the li_fat_id click id (user.userIds)"
        return None

    def user_ids(self, event: Event) -> list[dict[str, str]]:
        """Return `user.userIds`: the hashed e-mail and LinkedIn's click id, one of each."""
        u = event.user
        out: list[dict[str, str]] = []
        emails = u.hashed.get(self.hash_rules, {}).get("em")
        if emails:
            out.append({"idType": ID_EMAIL, "idValue": emails[0]})
        click = u.click_ids.get("li_fat_id")
        if click:
            out.append({"idType": ID_CLICK, "idValue": click})
        return out

    def payload(self, event: Event) -> dict[str, Any]:
        """Return the conversion event element (§6) for one validated event."""
        rule = self.rule(event) or ""
        body: dict[str, Any] = {
            "conversion": _rule_urn(rule) or rule,
            "conversionHappenedAt": event.time * 1000,
            "user": {"userIds": self.user_ids(event)},
            "eventId": event.event_id,
        }
        d = event.data
        if d.value is not None and d.currency:
            body["conversionValue"] = {
                "currencyCode": d.currency.upper(),
                "amount": _amount(d.value),
            }
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one BATCH_CREATE POST carrying `{"elements": [...]}` with a bearer token."""
        doc = {"elements": [self.payload(e) for e in events]}
        return post_json(
            self.url,
            doc,
            auth={"authorization": f"Bearer {self.settings.access_token.value}"},
            extra={
                "linkedin-version": self.settings.api_version,
                "x-restli-protocol-version": "2.0.0",
                "x-restli-method": "BATCH_CREATE",
            },
        )

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map LinkedIn's answer to outcomes (see the module docstring)."""
        status = response.status_code
        body = json_object(response)
        message = _message(status, body)
        if 200 <= status < 300:
            return _per_element(events, body)
        verdict = status_verdict(response, now, message, _PAUSED, RATE_LIMIT_WAIT)
        if verdict is not None:
            return verdict
        if status in (400, 422):
            # Validation refused the whole request; isolate the event it is about.
            return BatchVerdict(Permanent(DeadReason.INVALID_FIELD, message), bisect=True)
        return default_verdict(response, now)


def _rule_urn(rule: str) -> str | None:
    """Return the rule's URN from a rule id or a URN, or None if it is neither."""
    rule = rule.strip()
    if rule.startswith(RULE_URN_PREFIX):
        rule = rule[len(RULE_URN_PREFIX) :]
    return RULE_URN_PREFIX + rule if _RULE_ID.fullmatch(rule) else None


def _amount(value: float) -> str:
    """Return the amount as LinkedIn wants it: a decimal string with at least two decimals
    ("99.50", as in LinkedIn's example), never a number or an exponent (pitfall 25)."""
    text = format(Decimal(repr(float(value))), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _per_element(events: Sequence[Event], body: Mapping[str, Any] | None) -> BatchVerdict:
    """Return the verdict of a 2xx answer: per element when LinkedIn reported a failure."""
    elements = body.get("elements") if body is not None else None
    if not isinstance(elements, list) or len(elements) != len(events):
        return BatchVerdict(Delivered())
    outcomes: list[Outcome] = []
    failed = False
    for index, element in enumerate(elements):
        outcome = _element_outcome(index, element)
        failed = failed or not isinstance(outcome, Delivered)
        outcomes.append(outcome)
    if not failed:
        return BatchVerdict(Delivered())
    return BatchVerdict(Delivered(), per_event=tuple(outcomes))


def _element_outcome(index: int, element: object) -> Outcome:
    if not isinstance(element, dict):
        return Delivered()
    status = element.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or 200 <= status < 300:
        return Delivered()
    error = element.get("error")
    text = _message(status, error if isinstance(error, dict) else None)
    detail = f"element {index}: {text}"[:500]
    if status in (408, 429) or status >= 500:
        return Retry(detail)
    if status == 401:
        return Paused(detail)
    if status in (403, 404):
        return Permanent(DeadReason.AUTH, detail)
    return Permanent(DeadReason.INVALID_FIELD, detail)


def _message(status: int, body: Mapping[str, Any] | None) -> str:
    parts = [f"HTTP {status}"]
    text = ""
    if body is not None:
        code = body.get("serviceErrorCode")
        if isinstance(code, int) and not isinstance(code, bool):
            parts.append(f"serviceErrorCode {code}")
        if isinstance(body.get("code"), str):
            parts.append(body["code"])
        if isinstance(body.get("message"), str):
            text = body["message"]
    return reason_text(parts, text)
