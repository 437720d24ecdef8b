"""Explicit denial, per-destination forwarding and the server API's stated consent (pure)."""

from __future__ import annotations

from gateway.core.consent import (
    ConsentPolicy,
    Signals,
    Tier,
    by_stated_tier,
    decide,
    forwards,
    is_explicit_denial,
    stated,
)
from gateway.core.event import Consent, Event, Source, User

DENY_ALL = Consent(ad_storage=False, analytics_storage=False, ad_user_data=False)
ANALYTICS = Consent(ad_storage=False, analytics_storage=True, ad_user_data=False)
GRANTED = Consent(ad_storage=True, ad_user_data=True)
CMP = ConsentPolicy(cmp_cookie="cmp", cmp_mapping={"reject": Tier.NONE, "stats": Tier.ANALYTICS})


def test_explicit_denial_is_a_signal_not_the_default() -> None:
    assert is_explicit_denial(decide(ConsentPolicy(), Signals(consent=DENY_ALL)))
    assert is_explicit_denial(decide(CMP, Signals(cmp_cookie_value="reject")))
    assert not is_explicit_denial(decide(ConsentPolicy(default=Tier.NONE), Signals()))
    unmatched = decide(
        ConsentPolicy(default=Tier.NONE, cmp_cookie="cmp", cmp_mapping={"a": Tier.FULL}),
        Signals(cmp_cookie_value="zzz"),
    )
    assert unmatched.tier is Tier.NONE
    assert not is_explicit_denial(unmatched), "an unmatched CMP value is no signal"
    assert not is_explicit_denial(decide(CMP, Signals(cmp_cookie_value="stats")))
    assert not is_explicit_denial(decide(ConsentPolicy(), Signals(gpc=True)))


def test_tcf_without_purpose_one_is_an_explicit_denial() -> None:
    # A TC string with no purpose consent at all (core segment built bit by bit).
    bits = (
        "000010" + "0" * 36 * 2 + "0" * 12 * 2 + "0" * 6 + "000100" + "000100"
        + "0" * 12 + "000100" + "0" + "0" + "0" * 12 + "0" * 24 + "0" * 24 + "0"
        + "000100" + "000100" + "0" * 16 + "0" + "0" * 16 + "0" + "0" * 12
    )  # fmt: skip
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tc = "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))
    decision = decide(ConsentPolicy(tcf=True), Signals(tc_string=tc))
    assert decision.reasons == ("tcf:purpose1_denied",)
    assert is_explicit_denial(decision)


def test_forwarding_by_tier_and_destination() -> None:
    assert forwards(Tier.FULL, "meta")
    assert not forwards(Tier.NONE, "meta")
    # Meta refuses a website event without client_user_agent, which the analytics tier strips.
    assert not forwards(Tier.ANALYTICS, "meta")


def event(consent: Consent | None, event_id: str) -> Event:
    user = User(ip="203.0.113.7", user_agent="UA", fbp="fb.1.1700000000000.1", visitor_id="v")
    return Event(
        "Purchase", event_id, 1, Source.WEBSITE, url="https://s.test/?gclid=x&a=1", user=user,
        consent=consent,
    )  # fmt: skip


def test_stated_consent_gets_the_browser_tiers() -> None:
    assert stated(None) is None
    assert stated(Consent()) is None
    assert stated(Consent(ad_personalization=False)) is None
    assert stated(GRANTED).tier is Tier.FULL  # type: ignore[union-attr]
    assert stated(ANALYTICS).tier is Tier.ANALYTICS  # type: ignore[union-attr]
    assert stated(DENY_ALL).tier is Tier.NONE  # type: ignore[union-attr]
    partly = stated(Consent(ad_storage=True, ad_user_data=False))
    assert partly is not None
    assert partly.tier is Tier.NONE
    # Server-side: an unstated ad_storage follows ad_user_data (Google's server vocabulary).
    assert stated(Consent(ad_user_data=True)).tier is Tier.FULL  # type: ignore[union-attr]
    assert stated(Consent(ad_user_data=False)).tier is Tier.NONE  # type: ignore[union-attr]


def test_by_stated_tier_splits_and_strips() -> None:
    events = [
        event(None, "plain"),
        event(GRANTED, "granted"),
        event(ANALYTICS, "analytics"),
        event(DENY_ALL, "denied"),
    ]
    full, restricted = by_stated_tier(events)
    assert [e.event_id for e in full] == ["plain", "granted"]
    assert full[0].user.ip == "203.0.113.7"
    [analytics] = restricted[Tier.ANALYTICS]
    assert analytics.user == User(), "identifiers stripped like the browser path"
    assert analytics.url == "https://s.test/?a=1"
    assert [e.event_id for e in restricted[Tier.NONE]] == ["denied"]
