"""Google Ads API click-conversion upload: settings, Event → ClickConversion, request, answers.

Facts from ../shared/platforms.md §4.3 (click ids), §4.4 (upload, auth headers, body, limits,
timing, errors, test mode), §10.3-§10.5 (time format, hashing, consent) and pitfalls 20-21.

Which events go: Google Ads has no event names, only conversion actions (Google Ads → Goals →
Conversions, source "Import from clicks", type UPLOAD_CLICKS). Purchase goes to
`purchase_action`; any other event only when `conversion_actions` maps its name to an action
id. Every other event is dead-lettered at once (invalid_field, "has no Google Ads conversion
action"), without a request — the same rule as LinkedIn's conversion rules.

One ClickConversion per event (§4.4):

* click id: exactly one of `gclid`, `gbraid`, `wbraid`, in that order of preference — a gclid
  identifies the click itself; gbraid (app) and wbraid (web) are the aggregated ids Google uses
  where a gclid cannot be set (iOS), so they are sent only when no gclid is known. Sent exactly
  as received (pitfall 21). No other platform's click id ever goes to Google.
* `userIdentifiers`: the "google" rule set's e-mail digests (trimmed, lowercased, gmail dots
  removed) then phone digests (E.164 *with* '+'), at most 5, each object holding exactly one of
  `hashedEmail` / `hashedPhoneNumber` (a oneof, pitfall 20), source FIRST_PARTY. Without any
  click id these alone make it an *enhanced conversion for leads*.
* `conversionDateTime`: the event time in UTC, written `yyyy-mm-dd hh:mm:ss+00:00` — Google
  wants a time zone offset and accepts any; UTC needs no per-account setting.
* `conversionValue`, `currencyCode`; `orderId` = the order id, else the event id: Google
  deduplicates on it per conversion action (ORDER_ID_ALREADY_IN_USE), so a resent or a
  browser-and-server conversion counts once.
* `consent`: `adUserData` DENIED only when the event itself says ad_user_data was denied, else
  GRANTED (the consent decision already let it reach an ad platform); `adPersonalization`
  DENIED when ad_personalization was denied or Limited Data Use applies, else GRANTED.
* `conversionEnvironment` WEB for website events, APP for app events.

The request carries `partialFailure: true` always (false is unsupported) and `validateOnly:
true` when `validate_only` is set or the event carries a test code (Google has no test-event
code: a test event is validated, not recorded). Auth: `Authorization: Bearer <access token>`
from the OAuth2 refresh-token grant (gateway/destinations/tokens.py, fetched by the worker),
`developer-token`, and `login-customer-id` when calling through a manager (MCC) account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import httpx

from gateway.core.event import Event, Source
from gateway.core.secret import Secret
from gateway.destinations.base import BatchVerdict, Outcome
from gateway.destinations.common import (
    Configured,
    api_base_setting,
    max_batch_setting,
    past_window,
    post_json,
    setting,
)
from gateway.destinations.google_ads import answers
from gateway.destinations.tokens import RefreshTokenGrant

MAX_BATCH: Final = 2000
"""At most 2,000 conversions per request (TOO_MANY_CONVERSIONS_IN_REQUEST, §4.4)."""
WINDOW: Final = 90 * 86400
"""A conversion must fall inside its action's click-through window, at most 90 days (§4.4)."""
MAX_IDENTIFIERS: Final = 5
"""At most five userIdentifiers per conversion (§4.4)."""
CLICK_ID_KEYS: Final = ("gclid", "gbraid", "wbraid")
"""Google's click ids in order of preference; exactly one is sent."""
TOKEN_URL: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
_ACTION_ID = re.compile(r"[0-9]{1,19}")
_DIGITS_10 = r"[0-9]{10}"


@dataclass(frozen=True, slots=True)
class GoogleAdsSettings:
    """`[sites.destinations.google_ads]`: one Google Ads account, its actions and OAuth2 client."""

    customer_id: str = setting(
        "Google Ads customer id (10 digits, no dashes) the conversions are uploaded to.",
        pattern=_DIGITS_10,
        expected="10 digits without dashes",
    )
    purchase_action: str = setting(
        "Id of the conversion action (type UPLOAD_CLICKS) that Purchase events go to.",
        pattern=_ACTION_ID.pattern,
        expected="a conversion action id (digits)",
    )
    developer_token: Secret = setting("Google Ads API developer token, a secret.")
    client_id: str = setting("OAuth2 client id of the Google Cloud project (scope adwords).")
    client_secret: Secret = setting("OAuth2 client secret, a secret.")
    refresh_token: Secret = setting(
        "OAuth2 refresh token of a user with access to the account, a secret."
    )
    login_customer_id: str | None = field(
        default=None,
        metadata={
            "help": "Manager (MCC) account id sent as login-customer-id when access is through"
            " a manager.",
            "pattern": _DIGITS_10,
            "expected": "10 digits without dashes",
        },
    )
    conversion_actions: Mapping[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Event name → conversion action id for other events, e.g."
            ' {Lead = "123456789"}; events without an action are not sent.'
        },
    )
    token_url: str = field(
        default=TOKEN_URL,
        metadata={"help": "OAuth2 token endpoint (point at the sandbox in tests).", "url": True},
    )
    api_base: str = api_base_setting("https://googleads.googleapis.com", "Google Ads API")
    api_version: str = field(
        default="v26",
        metadata={
            "help": "Google Ads API version; each is sunset after about a year.",
            "pattern": r"v[0-9]{1,3}",
            "expected": "vNN",
        },
    )
    validate_only: bool = field(
        default=False,
        metadata={"help": "Send validateOnly: Google checks the conversions but records none."},
    )
    max_batch: int = max_batch_setting("Google Ads", MAX_BATCH)


def conversion_date_time(seconds: int) -> str:
    """Return `yyyy-mm-dd hh:mm:ss+00:00`: the Unix time in UTC with its (zero) offset."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


class GoogleAds(Configured[GoogleAdsSettings]):
    """Google Ads API click-conversion upload destination (an OAuth2 `TokenUser`)."""

    name: ClassVar[str] = "google_ads"
    hash_rules: ClassVar[str] = "google"
    identifier_keys: ClassVar[frozenset[str]] = frozenset({"em", "ph"})

    def __init__(self, settings: GoogleAdsSettings) -> None:
        super().__init__(settings)
        base = settings.api_base.rstrip("/")
        self.url = (
            f"{base}/{settings.api_version}/customers/{settings.customer_id}:uploadClickConversions"
        )
        self.grant = RefreshTokenGrant(
            settings.token_url,
            settings.client_id,
            settings.client_secret.value,
            settings.refresh_token.value,
        )
        self.expired_in_a_row = 0
        """Answers in a row that said the access token had expired (a loop guard)."""

    # ------------------------------------------------------------------ what goes, and when

    def batch_key(self, event: Event) -> str:
        """Return "validate" for requests sent validateOnly (test events), else ""."""
        return "validate" if self.settings.validate_only or event.test_code else ""

    def too_old(self, event: Event, now: float) -> bool:
        """Return whether the event is (nearly) outside the longest click-through window."""
        return past_window(event.time, now, WINDOW)

    def action(self, event: Event) -> str | None:
        """Return the conversion action id of the event: by name, Purchase's, else None."""
        found = self.settings.conversion_actions.get(event.event)
        if found is None and event.event == "Purchase":
            found = self.settings.purchase_action
        return found

    def validate(self, event: Event) -> str | None:
        """Return why Google Ads would refuse (or must not get) the event, or None."""
        action = self.action(event)
        if action is None:
            return (
                f"event name {event.event!r} has no Google Ads conversion action: map it to an"
                " action id in sites[].destinations.google_ads.conversion_actions"
            )
        if _ACTION_ID.fullmatch(action) is None:
            return (
                f"sites[].destinations.google_ads.conversion_actions[{event.event!r}] is not a"
                " conversion action id (digits)"
            )
        if click_id(event) is None and not self.identifiers(event):
            return "no gclid, gbraid, wbraid or hashed e-mail/phone: Google Ads cannot attribute it"
        return None

    # ------------------------------------------------------------------ mapping

    def identifiers(self, event: Event) -> list[dict[str, str]]:
        """Return up to 5 userIdentifiers: e-mail digests first, then phone digests."""
        hashed = event.user.hashed.get(self.hash_rules, {})
        out: list[dict[str, str]] = []
        for key, name in (("em", "hashedEmail"), ("ph", "hashedPhoneNumber")):
            for digest in hashed.get(key, ()):
                if len(out) < MAX_IDENTIFIERS:
                    out.append({name: digest, "userIdentifierSource": "FIRST_PARTY"})
        return out

    def conversion(self, event: Event) -> dict[str, Any]:
        """Return the ClickConversion (§4.4) of one validated event."""
        s = self.settings
        action = self.action(event) or s.purchase_action
        body: dict[str, Any] = {}
        click = click_id(event)
        if click is not None:
            body[click[0]] = click[1]
        body["conversionAction"] = f"customers/{s.customer_id}/conversionActions/{action}"
        body["conversionDateTime"] = conversion_date_time(event.time)
        d = event.data
        if d.value is not None:
            body["conversionValue"] = d.value
        if d.currency:
            body["currencyCode"] = d.currency
        body["orderId"] = d.order_id or event.event_id
        identifiers = self.identifiers(event)
        if identifiers:
            body["userIdentifiers"] = identifiers
        body["consent"] = consent(event)
        if event.source is Source.WEBSITE:
            body["conversionEnvironment"] = "WEB"
        elif event.source is Source.APP:
            body["conversionEnvironment"] = "APP"
        return body

    def build_request(self, events: Sequence[Event]) -> httpx.Request:
        """Return one upload of the events (the worker has fetched the access token first)."""
        doc: dict[str, Any] = {
            "conversions": [self.conversion(e) for e in events],
            "partialFailure": True,
        }
        if events and self.batch_key(events[0]):
            doc["validateOnly"] = True
        extra = {"developer-token": self.settings.developer_token.value}
        if self.settings.login_customer_id:
            extra["login-customer-id"] = self.settings.login_customer_id
        return post_json(self.url, doc, auth=self.grant.bearer(), extra=extra)

    # ------------------------------------------------------------------ tokens and answers

    def token_request(self, now: float) -> httpx.Request | None:
        """Return the refresh-token grant request when the cached token is missing or ageing."""
        return self.grant.request(now)

    def token_answer(self, response: httpx.Response, now: float) -> Outcome | None:
        """Keep the new access token, or return Retry / Paused for the whole batch."""
        return self.grant.answer(response, now)

    def classify(
        self, events: Sequence[Event], response: httpx.Response, now: float
    ) -> BatchVerdict:
        """Map Google's answer to outcomes (gateway/destinations/google_ads/answers.py).

        An answer saying the access token expired drops it: the batch retries at once with a
        new token; twice in a row (a token refused right after its refresh) pauses the route.
        """
        verdict = answers.classify(len(events), response, now)
        if verdict.token_expired:
            self.grant.drop()
            self.expired_in_a_row += 1
            if self.expired_in_a_row >= 2:
                return answers.paused_after_expiry(verdict)
        else:
            self.expired_in_a_row = 0
        return verdict.batch


def click_id(event: Event) -> tuple[str, str] | None:
    """Return the preferred Google click id of the event as (field, value), or None."""
    ids = event.user.click_ids
    for key in CLICK_ID_KEYS:
        value = ids.get(key)
        if value:
            return key, value
    return None


def consent(event: Event) -> dict[str, str]:
    """Return the ClickConversion `consent` (§10.5) from the event's consent and LDU."""
    c = event.consent
    user_data = "DENIED" if c is not None and c.ad_user_data is False else "GRANTED"
    denied = (c is not None and c.ad_personalization is False) or event.ldu
    return {"adUserData": user_data, "adPersonalization": "DENIED" if denied else "GRANTED"}
