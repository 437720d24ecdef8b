"""TC strings for the consent tests: a small, independent encoder (IAB TCF v2 core segment
layout), a strategy for its segments, strings published with other decoders, and the
hypothesis settings of the consent property tests."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
GOOGLE = 755

# --- a small, independent TC string encoder (IAB TCF v2 core segment layout) ----------------


def num(value: int, width: int) -> str:
    """Return `value` as `width` big-endian bits."""
    assert 0 <= value < 1 << width, (value, width)
    return format(value, f"0{width}b")


def id_bits(ids: frozenset[int], width: int) -> str:
    """Return a bitfield where bit i (1-based) is set when i is in `ids`."""
    return "".join("1" if i in ids else "0" for i in range(1, width + 1))


def letters(code: str) -> str:
    """Return a two-letter code as two 6-bit offsets from 'A'."""
    return "".join(num(ord(c) - ord("A"), 6) for c in code)


def runs(ids: frozenset[int]) -> list[tuple[int, int]]:
    """Return the ids as maximal runs of consecutive values."""
    out: list[tuple[int, int]] = []
    for i in sorted(ids):
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def range_bits(entries: list[tuple[int, int]]) -> str:
    """Return a range list: 12-bit count, then single ids or start/end pairs."""
    out = num(len(entries), 12)
    for start, end in entries:
        out += "1" + num(start, 16) + num(end, 16) if end > start else "0" + num(start, 16)
    return out


def vendor_bits(ids: frozenset[int], *, ranged: bool) -> str:
    """Return a vendor section in bitfield or range encoding."""
    max_id = max(ids, default=0)
    if ranged:
        return num(max_id, 16) + "1" + range_bits(runs(ids))
    return num(max_id, 16) + "0" + id_bits(ids, max_id)


@dataclass(frozen=True)
class Core:
    """Fields of a core segment, with realistic v2.2 defaults."""

    version: int = 2
    created_ds: int = 17_200_000_000
    updated_ds: int = 17_210_000_000
    cmp_id: int = 300
    cmp_version: int = 12
    consent_screen: int = 1
    language: str = "FR"
    vendor_list_version: int = 88
    policy_version: int = 4
    service_specific: bool = True
    non_standard_texts: bool = False
    special_features: frozenset[int] = frozenset()
    purposes: frozenset[int] = frozenset()
    purposes_li: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_cc: str = "DE"
    vendors: frozenset[int] = frozenset()
    vendors_li: frozenset[int] = frozenset()
    vendors_ranged: bool = False
    li_ranged: bool = False
    restrictions: tuple[tuple[int, int, frozenset[int]], ...] = ()

    def bits(self) -> str:
        """Return the segment as a string of bits (unpadded)."""
        out = num(self.version, 6) + num(self.created_ds, 36) + num(self.updated_ds, 36)
        out += num(self.cmp_id, 12) + num(self.cmp_version, 12) + num(self.consent_screen, 6)
        out += letters(self.language) + num(self.vendor_list_version, 12)
        out += num(self.policy_version, 6)
        out += str(int(self.service_specific)) + str(int(self.non_standard_texts))
        out += id_bits(self.special_features, 12)
        out += id_bits(self.purposes, 24) + id_bits(self.purposes_li, 24)
        out += str(int(self.purpose_one_treatment)) + letters(self.publisher_cc)
        out += vendor_bits(self.vendors, ranged=self.vendors_ranged)
        out += vendor_bits(self.vendors_li, ranged=self.li_ranged)
        out += num(len(self.restrictions), 12)
        for purpose, kind, ids in self.restrictions:
            out += num(purpose, 6) + num(kind, 2) + range_bits(runs(ids))
        return out


def b64(bits: str) -> str:
    """Return bits as base64url text, zero-padded to whole characters only."""
    bits += "0" * (-len(bits) % 6)
    return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def b64_bytes(bits: str) -> str:
    """Return bits padded to whole bytes and encoded by the stdlib, as many CMPs do."""
    bits += "0" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def tc(**fields: object) -> str:
    """Return a TC string (core segment only) with the given Core fields."""
    return b64(Core(**fields).bits())  # type: ignore[arg-type]


ALL_PURPOSES = frozenset(range(1, 11))


def full_tc(**fields: object) -> str:
    """Return a TC string with every purpose and Google's vendor consent."""
    base: dict[str, object] = {"purposes": ALL_PURPOSES, "vendors": frozenset({GOOGLE})}
    return tc(**(base | fields))


# --- decoding: literal strings from public documentation --------------------------------------

# IAB Tech Lab, "Consent string and vendor list formats v2" (the sample TC string before the
# 2025-06 revision), with a disclosed-vendors segment; expected values as published by the
# lib_tcstring (Rust) and php-iab-tcf test suites.
IAB_SAMPLE = (
    "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA.IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAg"
    "EAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw"
)
# The same document after its 2025-06-03 revision (commit 8930740 of the IAB TCF repository).
IAB_SAMPLE_2025 = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA"
# GDPR::IAB::TCFv2 (CPAN) README synopsis: range-encoded vendor sections, publisher TC segment.
CPAN_README = (
    "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA"
    ".argAC0gAAAAAAAAAAAA"
)
# GDPR::IAB::TCFv2::PublisherRestrictions docs: restrictions(32) returns { 7 => { 1 => 1 } }.
CPAN_RESTRICTIONS = "COwAdDhOwAdDhN4ABAENAPCgAAQAAv___wAAAFP_AAp_4AI6ACACAA"
# lib_tcstring (Rust) test vectors: range-encoded legitimate interests; a publisher restriction.
RUST_RANGES = "CGL23UdMFJzvuA9ACCENAXCEAC0AAGrAAA5YA5ht7-_d_7_vd-f-nrf4_4A4hM4JCKoK4YhmAqABgAEgAA"
RUST_RESTRICTION = (
    "COw4XqLOw4XqLAAAAAENAXCf-v-gAAAfwIAAACngAI8AEFABgACAA4A.IAPPwAPrwA.QAPPwAPrwA"
    ".cAEAPAAAC7gAHw4AAA"
)


def cores() -> st.SearchStrategy[Core]:
    """Return a strategy for valid Core values."""
    ids = st.frozensets(st.integers(1, 700), max_size=30)
    return st.builds(
        Core,
        created_ds=st.integers(0, 2**36 - 1),
        updated_ds=st.integers(0, 2**36 - 1),
        cmp_id=st.integers(0, 4095),
        cmp_version=st.integers(0, 4095),
        consent_screen=st.integers(0, 63),
        language=st.sampled_from(["EN", "DE", "FR", "ZZ", "AA"]),
        vendor_list_version=st.integers(0, 4095),
        policy_version=st.integers(0, 63),
        service_specific=st.booleans(),
        non_standard_texts=st.booleans(),
        special_features=st.frozensets(st.integers(1, 12)),
        purposes=st.frozensets(st.integers(1, 24)),
        purposes_li=st.frozensets(st.integers(1, 24)),
        purpose_one_treatment=st.booleans(),
        publisher_cc=st.sampled_from(["DE", "FR", "AA", "GB"]),
        vendors=ids,
        vendors_li=ids,
        vendors_ranged=st.booleans(),
        li_ranged=st.booleans(),
        restrictions=st.lists(
            st.tuples(st.integers(1, 24), st.integers(0, 2), ids), max_size=3
        ).map(tuple),
    )
