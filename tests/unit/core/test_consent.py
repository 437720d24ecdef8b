"""Tests for gateway.core.consent: tier decisions and applying a decision (TC string decoding:
test_consent_tcstring.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tcstrings import (
    ALL_PURPOSES,
    CPAN_README,
    GOOGLE,
    IAB_SAMPLE,
    PROPERTY,
    RUST_RESTRICTION,
    b64,
    cores,
    full_tc,
    tc,
)

from gateway.core.consent import (
    META_LDU_REGIONS,
    ConsentPolicy,
    Decision,
    Signals,
    Tier,
    apply,
    decide,
)
from gateway.core.event import Consent, Data, Event, Source, User

# --- decisions ---------------------------------------------------------------------------------

G, D = True, False
TCF = ConsentPolicy(default=Tier.NONE, tcf=True, tcf_vendor_ids=(GOOGLE,))
COOKIEBOT = (
    "%7Bstamp:%27abc%27%2Cnecessary:true%2Cpreferences:false%2Cstatistics:true"
    "%2Cmarketing:false%2Cmethod:%27explicit%27%2Cver:1%7D"
)
CMP = ConsentPolicy(
    default=Tier.NONE,
    cmp_cookie="CookieConsent",
    cmp_mapping={
        "all": Tier.FULL,
        "re:marketing:true": Tier.FULL,
        "re:C0004:1": Tier.FULL,
        "re:statistics:true|C0002:1": Tier.ANALYTICS,
        "re:necessary:true|C0001:1": Tier.NONE,
        "reject": Tier.NONE,
    },
)


def consent(
    ad: bool | None = None,
    analytics: bool | None = None,
    user_data: bool | None = None,
    personalization: bool | None = None,
) -> Consent:
    """Return a Consent Mode state (ad_storage, analytics_storage, ad_user_data, …)."""
    return Consent(ad, analytics, user_data, personalization)


DECISIONS: list[tuple[str, ConsentPolicy, Signals, Tier, tuple[str, ...]]] = [
    # no signal at all → the site default
    ("default full", ConsentPolicy(), Signals(), Tier.FULL, ("default",)),
    ("default none", ConsentPolicy(default=Tier.NONE), Signals(), Tier.NONE, ("default",)),
    (
        "default analytics",
        ConsentPolicy(default=Tier.ANALYTICS),
        Signals(),
        Tier.ANALYTICS,
        ("default",),
    ),
    # GPC alone: a cap, never a grant
    ("gpc caps default", ConsentPolicy(), Signals(gpc=True), Tier.ANALYTICS, ("gpc",)),
    (
        "gpc under none default",
        ConsentPolicy(default=Tier.NONE),
        Signals(gpc=True),
        Tier.NONE,
        ("default",),
    ),
    (
        "gpc not honoured",
        ConsentPolicy(honor_gpc=False),
        Signals(gpc=True),
        Tier.FULL,
        ("default",),
    ),
    # Consent Mode v2 alone
    (
        "cm all granted lifts none default",
        ConsentPolicy(default=Tier.NONE),
        Signals(consent=consent(G, G, G, G)),
        Tier.FULL,
        ("consent_mode:granted",),
    ),
    (
        "cm v1 fields only",
        ConsentPolicy(default=Tier.NONE),
        Signals(consent=consent(ad=G, analytics=G)),
        Tier.FULL,
        ("consent_mode:granted",),
    ),
    (
        "cm ads granted analytics denied",
        ConsentPolicy(default=Tier.NONE),
        Signals(consent=consent(G, D, G, D)),
        Tier.FULL,
        ("consent_mode:granted",),
    ),
    (
        "cm ad_personalization denied is irrelevant",
        ConsentPolicy(),
        Signals(consent=consent(G, G, G, D)),
        Tier.FULL,
        ("consent_mode:granted",),
    ),
    (
        "cm ad_storage denied",
        ConsentPolicy(),
        Signals(consent=consent(D, G, G, G)),
        Tier.ANALYTICS,
        ("consent_mode:ad_storage_denied",),
    ),
    (
        "cm ad_storage denied, ad_user_data inherits",
        ConsentPolicy(),
        Signals(consent=consent(ad=D, analytics=G)),
        Tier.ANALYTICS,
        ("consent_mode:ad_storage_denied", "consent_mode:ad_user_data_denied"),
    ),
    (
        "cm ad_user_data denied",
        ConsentPolicy(),
        Signals(consent=consent(G, G, D, G)),
        Tier.ANALYTICS,
        ("consent_mode:ad_user_data_denied",),
    ),
    (
        "cm analytics only stated",
        ConsentPolicy(),
        Signals(consent=consent(analytics=G)),
        Tier.ANALYTICS,
        ("consent_mode:ad_storage_denied", "consent_mode:ad_user_data_denied"),
    ),
    (
        "cm all denied",
        ConsentPolicy(),
        Signals(consent=consent(D, D, D, D)),
        Tier.NONE,
        (
            "consent_mode:ad_storage_denied",
            "consent_mode:ad_user_data_denied",
            "consent_mode:analytics_storage_denied",
        ),
    ),
    (
        "cm ad_user_data only granted",
        ConsentPolicy(),
        Signals(consent=consent(user_data=G)),
        Tier.NONE,
        ("consent_mode:ad_storage_denied", "consent_mode:analytics_storage_denied"),
    ),
    (
        "cm nothing stated is no signal",
        ConsentPolicy(default=Tier.ANALYTICS),
        Signals(consent=consent()),
        Tier.ANALYTICS,
        ("default",),
    ),
    (
        "gpc overrides a grant",
        ConsentPolicy(),
        Signals(gpc=True, consent=consent(G, G, G, G)),
        Tier.ANALYTICS,
        ("gpc",),
    ),
    (
        "gpc agrees with analytics",
        ConsentPolicy(),
        Signals(gpc=True, consent=consent(D, G, D, D)),
        Tier.ANALYTICS,
        ("consent_mode:ad_storage_denied", "consent_mode:ad_user_data_denied", "gpc"),
    ),
    (
        "gpc below a denial",
        ConsentPolicy(),
        Signals(gpc=True, consent=consent(D, D)),
        Tier.NONE,
        (
            "consent_mode:ad_storage_denied",
            "consent_mode:ad_user_data_denied",
            "consent_mode:analytics_storage_denied",
        ),
    ),
    # IAB TCF
    ("tcf full", TCF, Signals(tc_string=full_tc()), Tier.FULL, ("tcf:granted",)),
    (
        "tcf full purposes only",
        ConsentPolicy(default=Tier.NONE, tcf=True),
        Signals(tc_string=tc(purposes=frozenset({1, 3, 4, 7}))),
        Tier.FULL,
        ("tcf:granted",),
    ),
    (
        "tcf purpose 1 denied",
        TCF,
        Signals(tc_string=full_tc(purposes=ALL_PURPOSES - {1})),
        Tier.NONE,
        ("tcf:purpose1_denied",),
    ),
    (
        "tcf purpose 1 not disclosed",
        TCF,
        Signals(tc_string=full_tc(purposes=ALL_PURPOSES - {1}, purpose_one_treatment=True)),
        Tier.NONE,
        ("tcf:purpose1_not_disclosed",),
    ),
    (
        "tcf storage only",
        TCF,
        Signals(tc_string=full_tc(purposes=frozenset({1, 2, 3, 4}))),
        Tier.NONE,
        ("tcf:measurement_denied",),
    ),
    (
        "tcf legitimate interest never counts",
        TCF,
        Signals(tc_string=full_tc(purposes=frozenset({1}), purposes_li=ALL_PURPOSES)),
        Tier.NONE,
        ("tcf:measurement_denied",),
    ),
    (
        "tcf measurement only",
        TCF,
        Signals(tc_string=full_tc(purposes=frozenset({1, 7}))),
        Tier.ANALYTICS,
        ("tcf:purpose3_denied", "tcf:purpose4_denied"),
    ),
    (
        "tcf audience statistics only",
        TCF,
        Signals(tc_string=full_tc(purposes=frozenset({1, 8, 9}))),
        Tier.ANALYTICS,
        ("tcf:purpose3_denied", "tcf:purpose4_denied", "tcf:purpose7_denied"),
    ),
    (
        "tcf vendor missing",
        TCF,
        Signals(tc_string=full_tc(vendors=frozenset({1, 2, 754, 756}))),
        Tier.ANALYTICS,
        ("tcf:vendor755_denied",),
    ),
    (
        "tcf vendor only under legitimate interest",
        TCF,
        Signals(tc_string=full_tc(vendors=frozenset(), vendors_li=frozenset({GOOGLE}))),
        Tier.ANALYTICS,
        ("tcf:vendor755_denied",),
    ),
    (
        "tcf several vendors, one missing",
        replace(TCF, tcf_vendor_ids=(GOOGLE, 1126)),
        Signals(tc_string=full_tc(vendors=frozenset({GOOGLE}))),
        Tier.ANALYTICS,
        ("tcf:vendor1126_denied",),
    ),
    (
        "tcf publisher disallows vendor",
        TCF,
        Signals(tc_string=full_tc(restrictions=((4, 0, frozenset({GOOGLE})),))),
        Tier.ANALYTICS,
        ("tcf:vendor755_denied",),
    ),
    (
        "tcf publisher requires LI for vendor",
        TCF,
        Signals(tc_string=full_tc(restrictions=((7, 2, frozenset({GOOGLE})),))),
        Tier.ANALYTICS,
        ("tcf:vendor755_denied",),
    ),
    (
        "tcf publisher requires consent: fine",
        TCF,
        Signals(tc_string=full_tc(restrictions=((7, 1, frozenset({GOOGLE})),))),
        Tier.FULL,
        ("tcf:granted",),
    ),
    (
        "tcf restriction on another purpose: fine",
        TCF,
        Signals(tc_string=full_tc(restrictions=((2, 0, frozenset({GOOGLE})),))),
        Tier.FULL,
        ("tcf:granted",),
    ),
    (
        "tcf invalid string",
        TCF,
        Signals(tc_string="garbage"),
        Tier.NONE,
        ("tcf:invalid", "default"),
    ),
    ("tcf blank string is no signal", TCF, Signals(tc_string="  "), Tier.NONE, ("default",)),
    (
        "tcf disabled ignores the string",
        ConsentPolicy(default=Tier.ANALYTICS),
        Signals(tc_string=tc()),
        Tier.ANALYTICS,
        ("default",),
    ),
    (
        "tcf published sample",
        TCF,
        Signals(tc_string=IAB_SAMPLE),
        Tier.NONE,
        ("tcf:measurement_denied",),
    ),
    # CMP cookie
    ("cmp exact all", CMP, Signals(cmp_cookie_value="all"), Tier.FULL, ("cmp:full",)),
    ("cmp exact reject", CMP, Signals(cmp_cookie_value="reject"), Tier.NONE, ("cmp:none",)),
    (
        "cmp cookiebot statistics",
        CMP,
        Signals(cmp_cookie_value=COOKIEBOT),
        Tier.ANALYTICS,
        ("cmp:analytics",),
    ),
    (
        "cmp cookiebot marketing",
        CMP,
        Signals(cmp_cookie_value=COOKIEBOT.replace("marketing:false", "marketing:true")),
        Tier.FULL,
        ("cmp:full",),
    ),
    (
        "cmp onetrust necessary only",
        CMP,
        Signals(cmp_cookie_value="isGpcEnabled=0&groups=C0001%3A1%2CC0002%3A0%2CC0004%3A0"),
        Tier.NONE,
        ("cmp:none",),
    ),
    (
        "cmp onetrust performance",
        CMP,
        Signals(cmp_cookie_value="groups=C0001%3A1%2CC0002%3A1%2CC0004%3A0"),
        Tier.ANALYTICS,
        ("cmp:analytics",),
    ),
    (
        "cmp plain key is not a substring",
        CMP,
        Signals(cmp_cookie_value="all_but_ads"),
        Tier.NONE,
        ("cmp:unmatched", "default"),
    ),
    (
        "cmp unmatched falls back to default",
        replace(CMP, default=Tier.ANALYTICS),
        Signals(cmp_cookie_value="weird"),
        Tier.ANALYTICS,
        ("cmp:unmatched", "default"),
    ),
    (
        "cmp cookie not configured",
        replace(CMP, cmp_cookie=None),
        Signals(cmp_cookie_value="all"),
        Tier.NONE,
        ("default",),
    ),
    ("cmp empty value is no signal", CMP, Signals(cmp_cookie_value=""), Tier.NONE, ("default",)),
    # combinations: the most restrictive present signal wins
    (
        "cm grant but cmp reject",
        CMP,
        Signals(consent=consent(G, G, G, G), cmp_cookie_value="reject"),
        Tier.NONE,
        ("cmp:none",),
    ),
    (
        "cm analytics and cmp all",
        CMP,
        Signals(consent=consent(D, G, D, D), cmp_cookie_value="all"),
        Tier.ANALYTICS,
        ("consent_mode:ad_storage_denied", "consent_mode:ad_user_data_denied"),
    ),
    (
        "cm grant but tcf purpose 1 denied",
        TCF,
        Signals(consent=consent(G, G, G, G), tc_string=full_tc(purposes=frozenset({3, 4}))),
        Tier.NONE,
        ("tcf:purpose1_denied",),
    ),
    (
        "tcf full but cm denied",
        TCF,
        Signals(consent=consent(D, D, D, D), tc_string=full_tc()),
        Tier.NONE,
        (
            "consent_mode:ad_storage_denied",
            "consent_mode:ad_user_data_denied",
            "consent_mode:analytics_storage_denied",
        ),
    ),
    (
        "cm grant with invalid tcf",
        TCF,
        Signals(consent=consent(G, G, G, G), tc_string="!!"),
        Tier.FULL,
        ("tcf:invalid", "consent_mode:granted"),
    ),
    (
        "everything granted",
        replace(CMP, tcf=True, tcf_vendor_ids=(GOOGLE,)),
        Signals(consent=consent(G, G, G, G), tc_string=full_tc(), cmp_cookie_value="all"),
        Tier.FULL,
        ("consent_mode:granted", "tcf:granted", "cmp:full"),
    ),
    (
        "everything granted but gpc",
        replace(CMP, tcf=True, tcf_vendor_ids=(GOOGLE,)),
        Signals(gpc=True, consent=consent(G, G, G, G), tc_string=full_tc(), cmp_cookie_value="all"),
        Tier.ANALYTICS,
        ("gpc",),
    ),
]


@pytest.mark.parametrize(
    ("policy", "signals", "tier", "reasons"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_decision_table(
    policy: ConsentPolicy, signals: Signals, tier: Tier, reasons: tuple[str, ...]
) -> None:
    decision = decide(policy, signals)
    assert (decision.tier, decision.reasons) == (tier, reasons)


class TestLdu:
    @pytest.mark.parametrize(
        ("regions", "region", "ldu"),
        [
            (("US-CA", "US-CO"), "US-CA", True),
            (("US-CA", "US-CO"), "us-co", True),
            (("US-CA", "US-CO"), " US_CA ", True),
            (("US-CA", "US-CO"), "US-NY", False),
            (("US-CA", "US-CO"), "US", False),
            (("US-CA", "US-CO"), "US-CAX", False),
            (("US-CA", "US-CO"), None, False),
            (("US-CA", "US-CO"), "", False),
            (("us",), "US-TX", True),
            (("US",), "USA", False),
            ((), "US-CA", False),
        ],
    )
    def test_region_lists(self, regions: tuple[str, ...], region: str | None, ldu: bool) -> None:
        assert decide(ConsentPolicy(ldu_regions=regions), Signals(region=region)).ldu is ldu

    def test_independent_of_the_tier(self) -> None:
        policy = ConsentPolicy(default=Tier.NONE, ldu_regions=META_LDU_REGIONS)
        assert decide(policy, Signals(region="US-TX")) == Decision(Tier.NONE, ("default",), True)

    def test_honoured_gpc_sets_ldu(self) -> None:
        assert decide(ConsentPolicy(), Signals(gpc=True)).ldu is True
        assert decide(ConsentPolicy(honor_gpc=False), Signals(gpc=True)).ldu is False

    def test_meta_states_follow_browser_md(self) -> None:
        assert set(META_LDU_REGIONS) == {
            "US-CA",
            "US-CO",
            "US-CT",
            "US-FL",
            "US-TX",
            "US-OR",
            "US-MT",
        }


class TestPolicy:
    def test_defaults(self) -> None:
        policy = ConsentPolicy()
        assert (policy.default, policy.honor_gpc, policy.tcf) == (Tier.FULL, True, False)
        assert (policy.tcf_vendor_ids, policy.cmp_cookie, dict(policy.cmp_mapping)) == (
            (),
            None,
            {},
        )

    def test_normalises_config_values(self) -> None:
        policy = ConsentPolicy(
            default="none",  # type: ignore[arg-type]
            tcf_vendor_ids=(755, 755, 1),
            cmp_mapping={"all": "full"},  # type: ignore[dict-item]
            ldu_regions=("us-ca", "US-CA", "us_co"),
        )
        assert policy.default is Tier.NONE
        assert policy.tcf_vendor_ids == (755, 1)
        assert policy.cmp_mapping == {"all": Tier.FULL}
        assert policy.ldu_regions == ("US-CA", "US-CO")

    def test_mapping_is_a_read_only_copy(self) -> None:
        source = {"all": Tier.FULL}
        policy = ConsentPolicy(cmp_mapping=source)
        source["none"] = Tier.NONE
        assert dict(policy.cmp_mapping) == {"all": Tier.FULL}
        with pytest.raises(TypeError):
            policy.cmp_mapping["x"] = Tier.NONE  # type: ignore[index]

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"default": "maybe"}, "default"),
            ({"default": 2}, "default"),
            ({"tcf_vendor_ids": (0,)}, "tcf_vendor_ids"),
            ({"tcf_vendor_ids": (65536,)}, "tcf_vendor_ids"),
            ({"tcf_vendor_ids": (True,)}, "tcf_vendor_ids"),
            ({"tcf_vendor_ids": ("755",)}, "tcf_vendor_ids"),
            ({"cmp_mapping": {"re:(": Tier.FULL}}, "cmp_mapping"),
            ({"cmp_mapping": {"re:": Tier.FULL}}, "cmp_mapping"),
            ({"cmp_mapping": {"": Tier.FULL}}, "cmp_mapping"),
            ({"cmp_mapping": {"all": "everything"}}, "cmp_mapping"),
            ({"ldu_regions": "US-CA"}, "ldu_regions"),
            ({"ldu_regions": ("US-CA", " ")}, "ldu_regions"),
        ],
    )
    def test_invalid_settings_name_the_field(self, kwargs: dict[str, object], field: str) -> None:
        with pytest.raises(ValueError, match=f"^{field}"):
            ConsentPolicy(**kwargs)  # type: ignore[arg-type]


# --- apply -------------------------------------------------------------------------------------

IDENTIFIED = Event(
    event="Purchase",
    event_id="order-1",
    time=1_790_000_000,
    source=Source.WEBSITE,
    url="https://shop.example/thanks?gclid=abc&ref=mail&FBCLID=x&_gl=1*x*_ga*MTIz#done",
    referrer="https://shop.example/cart?msclkid=1",
    user=User(
        pii={"em": ("a@example.com",)},
        hashed={"meta": {"em": ("0" * 64,)}},
        ip="203.0.113.9",
        user_agent="Mozilla/5.0",
        visitor_id="v1",
        fbc="fb.1.1700000000000.abc",
        fbp="fb.1.1700000000000.123",
        click_ids={"gclid": "abc"},
    ),
    data=Data(value=10.0, currency="EUR", order_id="order-1"),
    consent=Consent(False, True, False, False),
)


class TestApply:
    def test_none_drops_the_event(self) -> None:
        assert apply(Decision(Tier.NONE, ("default",), False), IDENTIFIED) is None

    def test_full_keeps_the_event_as_is(self) -> None:
        assert apply(Decision(Tier.FULL, ("default",), False), IDENTIFIED) is IDENTIFIED

    def test_analytics_strips_every_identifier(self) -> None:
        out = apply(Decision(Tier.ANALYTICS, ("gpc",), True), IDENTIFIED)
        assert out is not None
        assert out.user == User()
        assert out.url == "https://shop.example/thanks?ref=mail#done"
        assert out.referrer == "https://shop.example/cart"
        assert (out.event, out.event_id, out.time, out.source) == (
            "Purchase",
            "order-1",
            1_790_000_000,
            Source.WEBSITE,
        )
        assert (out.data, out.consent) == (IDENTIFIED.data, IDENTIFIED.consent)

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (None, None),
            ("https://a.example/", "https://a.example/"),
            ("https://a.example/?", "https://a.example/"),
            ("https://a.example/?q=1&&x=%20", "https://a.example/?q=1&x=%20"),
            ("https://a.example/?ttclid=1#frag?gclid=2", "https://a.example/#frag?gclid=2"),
            ("https://a.example/?%67clid=1&q", "https://a.example/?q"),
            ("https://a.example/?li_fat_id=1&utm_source=x", "https://a.example/?utm_source=x"),
        ],
    )
    def test_url_click_ids(self, url: str | None, expected: str | None) -> None:
        event = replace(IDENTIFIED, url=url, referrer=None)
        out = apply(Decision(Tier.ANALYTICS, (), False), event)
        assert out is not None
        assert out.url == expected


# --- properties ----------------------------------------------------------------------------------

TIERS = st.sampled_from(list(Tier))
MAYBE_BOOL = st.none() | st.booleans()
POLICIES = st.builds(
    ConsentPolicy,
    default=TIERS,
    honor_gpc=st.booleans(),
    tcf=st.booleans(),
    tcf_vendor_ids=st.lists(st.integers(1, 65535), max_size=3).map(tuple),
    cmp_cookie=st.none() | st.just("consent"),
    cmp_mapping=st.dictionaries(
        st.sampled_from(["all", "none", "re:marketing:true", "re:^stat", "re:.", "re:a|b"]),
        TIERS,
        max_size=4,
    ),
    ldu_regions=st.lists(st.sampled_from(["US", "US-CA", "us-co", "DE"]), max_size=3).map(tuple),
)
TC_TEXT = (
    st.none()
    | st.text(max_size=80)
    | st.sampled_from([IAB_SAMPLE, CPAN_README, RUST_RESTRICTION, full_tc(), tc()])
    | cores().map(lambda c: b64(c.bits()))
)
SIGNALS = st.builds(
    Signals,
    gpc=st.booleans(),
    consent=st.none() | st.builds(Consent, MAYBE_BOOL, MAYBE_BOOL, MAYBE_BOOL, MAYBE_BOOL),
    tc_string=TC_TEXT,
    cmp_cookie_value=st.none() | st.text(max_size=60) | st.sampled_from(["all", COOKIEBOT]),
    region=st.none() | st.text(max_size=8) | st.sampled_from(["US-CA", "us-tx", "DE-BY"]),
)
RANK = {Tier.NONE: 0, Tier.ANALYTICS: 1, Tier.FULL: 2}


@PROPERTY
@given(POLICIES, SIGNALS)
def test_decide_never_raises_and_always_explains(policy: ConsentPolicy, signals: Signals) -> None:
    decision = decide(policy, signals)
    assert decision.tier in Tier
    assert decision.reasons
    assert all(decision.reasons)
    if policy.honor_gpc and signals.gpc:
        assert decision.tier is not Tier.FULL
        assert decision.ldu


@PROPERTY
@given(POLICIES, SIGNALS)
def test_gpc_never_raises_the_tier(policy: ConsentPolicy, signals: Signals) -> None:
    with_gpc = decide(policy, replace(signals, gpc=True)).tier
    without = decide(policy, replace(signals, gpc=False)).tier
    assert RANK[with_gpc] <= RANK[without]


@PROPERTY
@given(POLICIES, SIGNALS)
def test_a_second_signal_never_lifts_the_first(policy: ConsentPolicy, signals: Signals) -> None:
    first = replace(signals, tc_string=None, cmp_cookie_value=None)
    stated = first.consent is not None and any(
        v is not None
        for v in (
            first.consent.ad_storage,
            first.consent.analytics_storage,
            first.consent.ad_user_data,
            first.consent.ad_personalization,
        )
    )
    if stated:
        both = replace(first, tc_string=signals.tc_string)
        tiers = decide(replace(policy, tcf=True), both).tier, decide(policy, first).tier
        assert RANK[tiers[0]] <= RANK[tiers[1]]


@PROPERTY
@given(POLICIES, SIGNALS)
def test_applied_decisions_never_leak_identifiers(policy: ConsentPolicy, signals: Signals) -> None:
    decision = decide(policy, signals)
    out = apply(decision, IDENTIFIED)
    if decision.tier is Tier.NONE:
        assert out is None
    elif decision.tier is Tier.ANALYTICS:
        assert out is not None
        assert out.user == User()
        assert "gclid" not in (out.url or "").lower()
        assert "fbclid" not in (out.url or "").lower()
