"""Tests for gateway.core.consent's TC string decoding (IAB TCF v2.2 core segment): strings
published with other decoders, strings from the test encoder, refusals, round trips."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tcstrings import (
    ALL_PURPOSES,
    ALPHABET,
    CPAN_README,
    CPAN_RESTRICTIONS,
    GOOGLE,
    IAB_SAMPLE,
    IAB_SAMPLE_2025,
    PROPERTY,
    RUST_RANGES,
    RUST_RESTRICTION,
    Core,
    b64,
    b64_bytes,
    cores,
    full_tc,
    num,
    range_bits,
    tc,
)

from gateway.core.consent import (
    MAX_TC_LENGTH,
    RestrictionType,
    TCData,
    VendorSet,
    decode_tc_string,
)


def decoded(text: str) -> TCData:
    """Decode `text`, failing the test when it is refused."""
    result = decode_tc_string(text)
    assert result is not None, f"{text[:40]}… was refused"
    return result


class TestDecodePublishedStrings:
    def test_iab_specification_sample(self) -> None:
        d = decoded(IAB_SAMPLE)
        assert (d.version, d.cmp_id, d.cmp_version, d.consent_screen) == (2, 27, 0, 0)
        assert d.created == d.last_updated == pytest.approx(1582243059.3)
        assert (d.consent_language, d.vendor_list_version, d.policy_version) == ("EN", 15, 2)
        assert not d.is_service_specific
        assert not d.use_non_standard_texts
        assert d.special_feature_opt_ins == frozenset()
        assert d.purposes_consent == {1, 2, 3}
        assert d.purposes_li_transparency == frozenset()
        assert not d.purpose_one_treatment
        assert d.publisher_cc == "AA"
        assert list(d.vendor_consents) == [2, 6, 8]
        assert list(d.vendor_legitimate_interests) == [2, 6, 8]
        assert d.publisher_restrictions == ()

    def test_iab_specification_sample_2025(self) -> None:
        d = decoded(IAB_SAMPLE_2025)
        assert d.created == d.last_updated == 1748908800.0  # 2025-06-03T00:00:00Z
        assert (d.cmp_id, d.consent_language, d.publisher_cc) == (880, "EN", "DE")
        assert d.is_service_specific
        assert list(d.vendor_consents) == [1, 2, 3, 4]
        assert len(d.vendor_legitimate_interests) == 0

    def test_cpan_readme_synopsis(self) -> None:
        d = decoded(CPAN_README)
        assert (int(d.created), int(d.last_updated)) == (1228644257, 1326215413)
        assert (d.cmp_id, d.cmp_version, d.consent_screen) == (21, 7, 2)
        assert (d.consent_language, d.vendor_list_version) == ("EN", 23)
        assert {1, 3, 9, 10} <= d.purposes_consent

    def test_cpan_publisher_restriction(self) -> None:
        d = decoded(CPAN_RESTRICTIONS)
        assert {p: {int(t) for t in ts} for p, ts in d.restrictions_for(32).items()} == {7: {1}}
        assert d.restrictions_for(31) == {}

    def test_rust_range_encoded_legitimate_interests(self) -> None:
        d = decoded(RUST_RANGES)
        assert (d.cmp_id, d.cmp_version, d.consent_screen, d.publisher_cc) == (61, 2, 2, "HL")
        assert d.special_feature_opt_ins == {2}
        assert d.purposes_consent == {3, 5, 6, 8}
        assert d.purposes_li_transparency == {2, 3, 5, 7, 9, 10}
        li = [4, 7, 8, 11, 12, 13, 19, 22, 27, 31, 33, 35, 37, 43, 45, 47, 48, 49, 54, 55, 59]
        li += [64, 65, 68, 69, 77, 79, 81, 94, 95, 110, 113]
        assert list(d.vendor_legitimate_interests) == li
        assert len(d.vendor_consents) == 91
        assert 115 in d.vendor_consents
        assert 6 not in d.vendor_consents

    def test_rust_publisher_restriction(self) -> None:
        d = decoded(RUST_RESTRICTION)
        assert d.use_non_standard_texts
        assert d.purpose_one_treatment
        assert d.special_feature_opt_ins == d.purposes_consent == {1, 2, 3, 4, 5, 6, 7, 8, 9, 11}
        assert d.purposes_li_transparency == set(range(12, 19))
        assert list(d.vendor_consents) == [2, 3, 4, 5]
        assert list(d.vendor_legitimate_interests) == [1, 2, 3, 4]
        (only,) = d.publisher_restrictions
        assert (only.purpose, only.restriction) == (1, RestrictionType.REQUIRE_CONSENT)
        assert list(only.vendors) == [1, 2, 3, 4, 5, 6, 7]


# --- decoding: strings from the test encoder --------------------------------------------------


class TestDecodeConstructed:
    def test_every_core_field_round_trips(self) -> None:
        core = Core(
            special_features=frozenset({1, 12}),
            purposes=frozenset({1, 2, 7, 24}),
            purposes_li=frozenset({2, 7, 8}),
            purpose_one_treatment=True,
            non_standard_texts=True,
            vendors=frozenset({1, 2, 3, 755, 1000}),
            vendors_li=frozenset({8, 9}),
        )
        d = decoded(b64(core.bits()))
        assert (d.version, d.cmp_id, d.cmp_version, d.consent_screen) == (2, 300, 12, 1)
        assert (d.created, d.last_updated) == (1_720_000_000.0, 1_721_000_000.0)
        assert (d.consent_language, d.publisher_cc) == ("FR", "DE")
        assert (d.vendor_list_version, d.policy_version) == (88, 4)
        assert d.is_service_specific
        assert d.use_non_standard_texts
        assert d.purpose_one_treatment
        assert d.special_feature_opt_ins == {1, 12}
        assert d.purposes_consent == {1, 2, 7, 24}
        assert d.purposes_li_transparency == {2, 7, 8}
        assert list(d.vendor_consents) == [1, 2, 3, 755, 1000]
        assert list(d.vendor_legitimate_interests) == [8, 9]

    @pytest.mark.parametrize(("ranged", "li_ranged"), [(False, False), (True, False), (True, True)])
    def test_bitfield_and_range_vendor_sections(self, ranged: bool, li_ranged: bool) -> None:
        ids = frozenset({1, 2, 3, 4, 10, 500, 501, 755, 65535})
        li = frozenset({5, 6, 7, 1200})
        d = decoded(tc(vendors=ids, vendors_li=li, vendors_ranged=ranged, li_ranged=li_ranged))
        assert set(d.vendor_consents) == ids
        assert set(d.vendor_legitimate_interests) == li
        assert d.vendor_consents.ranges == (
            (1, 4),
            (10, 10),
            (500, 501),
            (755, 755),
            (65535, 65535),
        )
        assert 11 not in d.vendor_consents
        assert 0 not in d.vendor_consents

    def test_range_entries_may_overlap_and_come_unsorted(self) -> None:
        bits = Core().bits()
        head = bits[: len(bits) - 2 * 17 - 12]  # drop both empty vendor sections + restrictions
        entries = [(50, 60), (1, 1), (55, 70), (2, 2)]
        body = num(70, 16) + "1" + range_bits(entries) + num(0, 16) + "0" + num(0, 12)
        d = decoded(b64(head + body))
        assert d.vendor_consents.ranges == ((1, 2), (50, 70))

    def test_publisher_restrictions(self) -> None:
        restrictions = ((1, 0, frozenset({755})), (7, 2, frozenset({1, 2, 3, 755})))
        d = decoded(full_tc(restrictions=restrictions))
        assert [(r.purpose, r.restriction) for r in d.publisher_restrictions] == [
            (1, RestrictionType.NOT_ALLOWED),
            (7, RestrictionType.REQUIRE_LI),
        ]
        assert d.restrictions_for(GOOGLE) == {
            1: {RestrictionType.NOT_ALLOWED},
            7: {RestrictionType.REQUIRE_LI},
        }
        assert d.restrictions_for(2) == {7: {RestrictionType.REQUIRE_LI}}

    def test_byte_padding_and_base64_padding_are_accepted(self) -> None:
        bits = Core(purposes=frozenset({1, 3}), vendors=frozenset({GOOGLE})).bits()
        plain = decoded(b64(bits))
        assert decoded(b64_bytes(bits)) == plain
        padded = b64_bytes(bits) + "=" * (-len(b64_bytes(bits)) % 4)
        assert decoded(padded) == plain

    def test_later_segments_are_ignored_but_must_be_base64url(self) -> None:
        core = full_tc()
        assert decoded(f"{core}.IFoEUQQgAIQwgIwQ.YAAAAAAA") == decoded(core)
        assert decode_tc_string(f"{core}.not valid!") is None
        assert decode_tc_string(f"{core}.") is None

    def test_full_size_bitfields_decode_quickly(self) -> None:
        everyone = frozenset(range(1, 65536))
        text = tc(vendors=everyone, vendors_li=everyone)
        assert len(text) < MAX_TC_LENGTH
        started = time.perf_counter()
        d = decoded(text)
        assert time.perf_counter() - started < 0.5
        assert len(d.vendor_consents) == 65535
        assert d.vendor_consents.ranges == ((1, 65535),)

    def test_hostile_range_lists_stay_small_and_fast(self) -> None:
        head = Core(purposes=ALL_PURPOSES, vendors=frozenset({GOOGLE})).bits()[:-12]
        everyone = range_bits([(1, 65535)])  # each entry covers every possible vendor
        entries = "".join(num(p % 24 + 1, 6) + "00" + everyone for p in range(3000))
        text = b64(head + num(3000, 12) + entries)
        assert len(text) <= MAX_TC_LENGTH
        started = time.perf_counter()
        d = decoded(text)
        assert time.perf_counter() - started < 0.5
        assert len(d.publisher_restrictions) == 3000
        assert all(r.vendors.ranges == ((1, 65535),) for r in d.publisher_restrictions)


class TestDecodeRejects:
    @pytest.mark.parametrize(
        "text",
        [
            "",
            "C",
            "CO",
            ".",
            "..",
            "not a tc string",
            "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEU ACCKAAA",
            "COvFyGBO=vFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
            "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA===",
            "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA+/",
            "ÇOvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
            ".COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA",
            "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA",  # a TCF v1.1 consent string (version 1)
            "A" * 100,
            "_" * 100,
            "C" + "A" * (MAX_TC_LENGTH + 10),
        ],
    )
    def test_garbage(self, text: str) -> None:
        assert decode_tc_string(text) is None

    @pytest.mark.parametrize("version", [0, 1, 3, 63])
    def test_versions_other_than_2(self, version: int) -> None:
        assert decode_tc_string(tc(version=version)) is None

    def test_every_truncation_of_a_valid_string(self) -> None:
        text = tc(
            purposes=frozenset({1, 3}),
            vendors=frozenset({1, 9, 755}),
            vendors_li=frozenset({2, 3, 4}),
            li_ranged=True,
            restrictions=((3, 0, frozenset({4, 5})),),
        )
        assert decode_tc_string(text) is not None
        assert [n for n in range(len(text)) if decode_tc_string(text[:n]) is not None] == []

    def test_letter_codes_beyond_z(self) -> None:
        bits = Core().bits()
        at = 6 + 36 + 36 + 12 + 12 + 6  # consent language
        assert decode_tc_string(b64(bits[:at] + num(26, 6) + bits[at + 6 :])) is None

    def test_undefined_restriction_type(self) -> None:
        assert decode_tc_string(full_tc(restrictions=((1, 3, frozenset({5})),))) is None

    @pytest.mark.parametrize(
        ("max_id", "entries"),
        [(10, [(0, 0)]), (10, [(5, 4)]), (10, [(5, 11)]), (10, [(11, 11)])],
        ids=["vendor 0", "end before start", "range past max", "id past max"],
    )
    def test_bad_range_entries(self, max_id: int, entries: list[tuple[int, int]]) -> None:
        bits = Core().bits()
        head = bits[: len(bits) - 2 * 17 - 12]
        section = num(max_id, 16) + "1" + num(len(entries), 12)
        for start, end in entries:
            section += "1" + num(start, 16) + num(end, 16)
        assert decode_tc_string(b64(head + section + num(0, 16) + "0" + num(0, 12))) is None

    @PROPERTY
    @given(st.text(max_size=400))
    def test_never_raises_on_arbitrary_text(self, text: str) -> None:
        result = decode_tc_string(text)
        assert result is None or isinstance(result, TCData)

    @PROPERTY
    @given(st.text(alphabet=ALPHABET + ".=", min_size=1, max_size=400).map(lambda s: "C" + s))
    def test_never_raises_on_base64url_text_starting_as_version_2(self, text: str) -> None:
        result = decode_tc_string(text)
        assert result is None or result.version == 2

    @PROPERTY
    @given(st.data())
    def test_never_raises_on_mutated_valid_strings(self, data: st.DataObject) -> None:
        text = data.draw(st.sampled_from([IAB_SAMPLE, CPAN_README, RUST_RANGES, RUST_RESTRICTION]))
        chars = list(text)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(chars) - 1))
            chars[at] = data.draw(st.sampled_from(ALPHABET + ".="))
        result = decode_tc_string("".join(chars[: data.draw(st.integers(0, len(chars)))]))
        assert result is None or isinstance(result, TCData)


@PROPERTY
@given(cores(), st.booleans())
def test_encoder_round_trip(core: Core, byte_padded: bool) -> None:
    d = decoded((b64_bytes if byte_padded else b64)(core.bits()))
    assert (d.created, d.last_updated) == (core.created_ds / 10, core.updated_ds / 10)
    assert (d.cmp_id, d.cmp_version, d.consent_screen) == (
        core.cmp_id,
        core.cmp_version,
        core.consent_screen,
    )
    assert (d.consent_language, d.publisher_cc) == (core.language, core.publisher_cc)
    assert (d.vendor_list_version, d.policy_version) == (
        core.vendor_list_version,
        core.policy_version,
    )
    assert (d.is_service_specific, d.use_non_standard_texts, d.purpose_one_treatment) == (
        core.service_specific,
        core.non_standard_texts,
        core.purpose_one_treatment,
    )
    assert d.special_feature_opt_ins == core.special_features
    assert (d.purposes_consent, d.purposes_li_transparency) == (core.purposes, core.purposes_li)
    assert set(d.vendor_consents) == core.vendors
    assert set(d.vendor_legitimate_interests) == core.vendors_li
    assert [(r.purpose, int(r.restriction), set(r.vendors)) for r in d.publisher_restrictions] == [
        (p, k, set(ids)) for p, k, ids in core.restrictions
    ]


def test_vendor_set_basics() -> None:
    ids = VendorSet.of([5, 1, 2, 3, 9, 2])
    assert ids.ranges == ((1, 3), (5, 5), (9, 9))
    assert list(ids) == [1, 2, 3, 5, 9]
    assert len(ids) == 5
    assert 3 in ids
    assert 4 not in ids
    assert 10 not in ids
    assert 0 not in ids
    assert "3" not in ids
    assert len(VendorSet()) == 0
    assert 1 not in VendorSet()
