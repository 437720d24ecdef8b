"""Digests made by a vendor's pixel stay in the rule sets that normalise like that pixel."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.identity import hash_pii
from gateway.core.pixeldigests import given_digests, scope_hit_digests
from gateway.destinations import PLATFORMS


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PH_PLUS = sha("+16505551212")
PH_DIGITS = sha("16505551212")
EM = sha("buyer@example.com")
RULES = ("meta", "google", "tiktok")


def hashed_from_hit(
    **user: str,
) -> tuple[dict[str, dict[str, tuple[str, ...]]], dict[str, frozenset[str]]]:
    pii = {{"email": "em", "phone": "ph", "first_name": "fn"}[k]: (v,) for k, v in user.items()}
    hashed, _ = hash_pii(pii, RULES)
    return hashed, given_digests(user)


def test_a_tiktok_phone_digest_stays_with_tiktok_and_google() -> None:
    hashed, given = hashed_from_hit(email=EM, phone=PH_PLUS)
    scoped = scope_hit_digests(hashed, "tiktok", given)
    assert scoped is not None
    assert scoped["tiktok"] == {"em": (EM,), "ph": (PH_PLUS,)}
    assert scoped["meta"] == {"em": (EM,)}, "Meta hashes digits without '+'"
    assert scoped["google"] == {"ph": (PH_PLUS,)}, "Google's e-mail rule strips gmail dots"


def test_a_meta_phone_digest_never_reaches_tiktok() -> None:
    hashed, given = hashed_from_hit(phone=PH_DIGITS)
    scoped = scope_hit_digests(hashed, "meta", given)
    assert scoped == {"meta": {"ph": (PH_DIGITS,)}, "google": {}, "tiktok": {}}


def test_fields_normalised_alike_everywhere_are_kept() -> None:
    name = sha("jane")
    hashed, given = hashed_from_hit(first_name=name)
    assert given == {}
    assert scope_hit_digests(hashed, "tiktok", given) is None


def test_clear_values_hashed_by_the_pipeline_are_untouched() -> None:
    hashed, given = hashed_from_hit(email="Buyer@Example.com", phone="+1 650 555 1212")
    assert given == {}
    assert scope_hit_digests(hashed, "tiktok", given) is None
    assert hashed["meta"]["ph"] == (PH_DIGITS,)


def test_an_unknown_vendor_keeps_shared_fields_only_in_nothing_foreign() -> None:
    hashed, given = hashed_from_hit(phone=PH_PLUS)
    scoped = scope_hit_digests(hashed, "somebody", given)
    assert scoped == {"meta": {}, "google": {}, "tiktok": {}}


def test_given_digests_reads_lists_and_upper_case() -> None:
    found = given_digests({"email": [EM.upper(), "not-a-digest"], "phone": 5, "ip": "1.2.3.4"})
    assert found == {"em": frozenset({EM})}
    assert given_digests(None) == {}


@settings(max_examples=50, deadline=None, database=None)
@given(
    vendor=st.sampled_from(["meta", "tiktok", "ga4", "snap"]),
    digest=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
)
def test_scoping_never_adds_and_keeps_the_vendors_own_set(vendor: str, digest: str) -> None:
    hashed, given = hashed_from_hit(email=digest, phone=digest)
    fmt = PLATFORMS[vendor].hits
    assert fmt is not None
    own = fmt.digest_rules  # the platform's fact: GA4's pixel hashes as Google does
    assert own == {"ga4": "google"}.get(vendor, vendor)
    scoped = scope_hit_digests(hashed, own, given) or hashed
    for rules, ids in scoped.items():
        for key, values in ids.items():
            assert set(values) <= set(hashed[rules][key])
    if own in scoped:
        assert scoped[own] == hashed[own]
