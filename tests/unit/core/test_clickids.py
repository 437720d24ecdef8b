"""Tests for gateway.core.clickids: click-id capture and vendor cookie formats and plans."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core import clickids
from gateway.core.clickids import MAX_QUERY_CHARS
from gateway.core.event import CLICK_ID_KEYS
from gateway.destinations import CLICK_IDS, COOKIES, VENDOR_COOKIES
from gateway.destinations.google_ads.clickids import GclAw, format_gcl_aw, parse_gcl_aw
from gateway.destinations.meta.clickids import (
    Fbc,
    Fbp,
    format_fbc,
    format_fbp,
    parse_fbc,
    parse_fbp,
)
from gateway.destinations.microsoft.clickids import format_uetmsclkid, parse_uetmsclkid
from gateway.destinations.snap.clickids import format_scid
from gateway.destinations.tiktok.clickids import format_ttp

# The machinery (core.clickids) with every platform's parameters and cookies, as the web layer
# passes them (gateway.destinations builds them from PLATFORMS).
CLICK_ID_PARAMS = CLICK_IDS.params
COOKIE_MAX_AGE_DAYS = {
    spec.name: spec.max_age_days for spec in COOKIES if spec.name in VENDOR_COOKIES
}


def capture(url: str | None, referrer: str | None) -> dict[str, str]:
    return clickids.capture(url, referrer, CLICK_IDS)


def valid_click_id(key: str, value: object) -> str | None:
    return CLICK_IDS.valid(key, value)


def click_ids_from_cookies(cookies: dict[str, str]) -> dict[str, str]:
    return clickids.click_ids_from_cookies(cookies, COOKIES)


def plan_cookies(**kwargs: Any) -> dict[str, str]:
    return clickids.plan_cookies(**kwargs, specs=COOKIES, table=CLICK_IDS)


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NOW_MS = 1_790_000_000_123
FBCLID = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
GCLID = "Cj0KCQjw_wcB-EAIaIQobChMI"
MSCLKID = "e85de3e3b8a2139d6e1b858362f6c13a"
FBP = "fb.1.1596403881668.1116446470"

fbclids = st.from_regex(r"[A-Za-z0-9_-]{1,400}", fullmatch=True)
safe_ids = st.from_regex(r"[A-Za-z0-9._~-]{1,500}", fullmatch=True)


class Bits:
    """A deterministic `random_bits` that records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, k: int) -> int:
        self.calls.append(k)
        return (0x0123456789ABCDEF * (len(self.calls) + 7)) % (1 << k)


def plan(
    click_ids: dict[str, str] | None = None,
    existing: dict[str, str] | None = None,
    profile: dict[str, str] | None = None,
    *,
    rand: Callable[[int], int] | None = None,
    index: int = 1,
) -> dict[str, str]:
    """Call plan_cookies with empty defaults and a fixed clock."""
    return plan_cookies(
        click_ids=click_ids or {},
        existing=existing or {},
        profile_values=profile or {},
        now_ms=NOW_MS,
        random_bits=rand or Bits(),
        subdomain_index=index,
    )


class TestCapture:
    def test_every_param_is_read_from_the_page_url(self) -> None:
        url = (
            f"https://shop.example/p?fbclid={FBCLID}&gclid={GCLID}&gbraid=0AAAAAD&wbraid=Cl0K"
            f"&ttclid=E.C.P.CsQB&ScCid=5f1c-aa&msclkid={MSCLKID}&li_fat_id=1b2c-3d"
            "&epik=dj0yJnU9&rdt_cid=1234567&twclid=2-abc"
        )
        assert capture(url, None) == {
            "fbclid": FBCLID,
            "gclid": GCLID,
            "gbraid": "0AAAAAD",
            "wbraid": "Cl0K",
            "ttclid": "E.C.P.CsQB",
            "sccid": "5f1c-aa",
            "msclkid": MSCLKID,
            "li_fat_id": "1b2c-3d",
            "epik": "dj0yJnU9",
            "rdt_cid": "1234567",
            "twclid": "2-abc",
        }

    def test_keys_are_the_event_models_click_id_keys(self) -> None:
        assert set(CLICK_ID_PARAMS) <= CLICK_ID_KEYS

    @pytest.mark.parametrize("name", ["ScCid", "sccid", "SCCID", "sCcId"])
    def test_sccid_name_is_case_insensitive(self, name: str) -> None:
        assert capture(f"https://s.example/?{name}=Ab-1", None) == {"sccid": "Ab-1"}

    @pytest.mark.parametrize("name", ["FBCLID", "Fbclid", "GCLID", "MsClkId"])
    def test_other_names_are_case_sensitive(self, name: str) -> None:
        assert capture(f"https://s.example/?{name}=abc", None) == {}

    def test_value_case_is_preserved(self) -> None:
        assert capture("https://s.example/?fbclid=AbC-dEf_", None) == {"fbclid": "AbC-dEf_"}

    def test_referrer_fills_ids_missing_from_the_url(self) -> None:
        got = capture(
            "https://shop.example/?gclid=FromUrl",
            "https://l.example/?gclid=FromRef&fbclid=RefFb",
        )
        assert got == {"gclid": "FromUrl", "fbclid": "RefFb"}

    def test_invalid_url_value_falls_back_to_the_referrer(self) -> None:
        got = capture("https://shop.example/?fbclid=bad.dot", "https://r.example/?fbclid=good")
        assert got == {"fbclid": "good"}

    def test_query_is_percent_decoded_once(self) -> None:
        assert capture("https://s.example/?fbclid=Iw%41R&%67clid=x", None) == {
            "fbclid": "IwAR",
            "gclid": "x",
        }
        # A second decoding pass would have produced "IwAR": the "%41" left over is invalid.
        assert capture("https://s.example/?fbclid=Iw%2541R", None) == {}

    @pytest.mark.parametrize(
        "query",
        [
            "gclid=abc%2Bdef",  # '+' after decoding
            "gclid=abc+def",  # a form-encoded space
            "gclid=abc%20def",
            "gclid=",
            "gclid",
            "gclid=caf%C3%A9",  # non-ASCII
            "gclid=%FF%FE",  # invalid UTF-8
            "fbclid=a.b",  # a dot would break the _fbc segments
            "msclkid=e85de3e3b8a2139d6e1b858362f6c13",  # 31 hex digits
            "msclkid=z85de3e3b8a2139d6e1b858362f6c13a",
            "gclid=" + "a" * 501,
            "fbclid=" + "a" * 401,
        ],
    )
    def test_invalid_values_are_ignored(self, query: str) -> None:
        assert capture(f"https://s.example/?{query}", None) == {}

    def test_first_valid_occurrence_wins(self) -> None:
        assert capture("https://s.example/?gclid=&gclid=one&gclid=two", None) == {"gclid": "one"}

    def test_fragment_is_not_the_query(self) -> None:
        assert capture("https://s.example/#?gclid=frag", None) == {}
        assert capture("https://s.example/?a=1#gclid=frag", None) == {}
        assert capture("/relative?gclid=x#y", None) == {"gclid": "x"}

    def test_a_pair_past_the_size_bound_is_ignored_not_cut(self) -> None:
        pad = "p=" + "x" * (MAX_QUERY_CHARS - 10)
        assert capture(f"https://s.example/?{pad}&gclid=ABCDEFGHIJKL", None) == {}
        assert capture(f"https://s.example/?gclid=ok&{pad}&{pad}", None) == {"gclid": "ok"}

    def test_none_and_junk_give_nothing(self) -> None:
        assert capture(None, None) == {}
        assert capture("", "") == {}
        assert capture("http://[bad/?gclid=x", None) == {"gclid": "x"}
        assert capture("?&&=&==&%&%zz=1", None) == {}

    @PROPERTY
    @given(st.text(), st.text())
    def test_never_raises_on_arbitrary_strings(self, url: str, ref: str) -> None:
        got = capture(url, ref)
        for key, value in got.items():
            assert valid_click_id(key, value) == value

    @PROPERTY
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([*CLICK_ID_PARAMS, "ScCid", "x", ""]),
                st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
            ),
            max_size=8,
        )
    )
    def test_never_raises_on_url_shaped_input(self, pairs: list[tuple[str, str]]) -> None:
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
        got = capture(f"https://s.example/p?{query}#f", None)
        for key, value in got.items():
            assert valid_click_id(key, value) == value

    @PROPERTY
    @given(fbclids, safe_ids)
    def test_values_come_back_exactly_as_sent_even_fully_escaped(
        self, fbclid: str, ttclid: str
    ) -> None:
        plain = capture(f"https://s.example/?fbclid={fbclid}&ttclid={ttclid}", None)
        escaped = capture(
            f"https://s.example/?fbclid={quote(fbclid, safe='')}"
            f"&ttclid={''.join(f'%{b:02X}' for b in ttclid.encode())}",
            None,
        )
        assert plain == escaped == {"fbclid": fbclid, "ttclid": ttclid}


class TestFbcFbp:
    def test_format_fbc_matches_metas_example(self) -> None:
        assert format_fbc(FBCLID, 1554763741205) == f"fb.1.1554763741205.{FBCLID}"
        assert format_fbc("abc", 1554763741205, subdomain_index=2) == "fb.2.1554763741205.abc"

    def test_parse_fbc_four_and_five_segments(self) -> None:
        assert parse_fbc(f"fb.1.1554763741205.{FBCLID}") == Fbc(
            1, 1554763741205, FBCLID, None, f"fb.1.1554763741205.{FBCLID}"
        )
        for appendix in ("AQEAAQMB", "Ag", "BQ"):
            value = f"fb.2.1657051589577.Iw-_x.{appendix}"
            parsed = parse_fbc(value)
            assert parsed is not None
            assert (parsed.fbclid, parsed.appendix, parsed.value) == ("Iw-_x", appendix, value)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "fb.1.1554763741205",
            "fb.1.1554763741205.",
            "fb.1.155476374.abc",  # 9-digit time
            "fb.10.1554763741205.abc",
            "fb.x.1554763741205.abc",
            "FB.1.1554763741205.abc",
            "fb.1.1554763741205.a b",
            "fb.1.1554763741205.abc.ABC",  # 3-char appendix
            "fb.1.1554763741205.abc.AQEAAQMB.x",
            '"fb.1.1554763741205.abc"',
            "fb.1.1554763741205.abc\n",
        ],
    )
    def test_parse_fbc_rejects_malformed(self, value: str) -> None:
        assert parse_fbc(value) is None

    @PROPERTY
    @given(fbclids, st.integers(10**12, 10**13 - 1), st.integers(0, 9))
    def test_fbc_round_trips(self, fbclid: str, ms: int, index: int) -> None:
        value = format_fbc(fbclid, ms, index)
        assert parse_fbc(value) == Fbc(index, ms, fbclid, None, value)

    @pytest.mark.parametrize(
        ("fbclid", "ms", "index"),
        [("a.b", NOW_MS, 1), ("", NOW_MS, 1), ("a", 1_790_000_000, 1), ("a", NOW_MS, 10)],
    )
    def test_format_fbc_refuses_what_it_cannot_format(
        self, fbclid: str, ms: int, index: int
    ) -> None:
        with pytest.raises(ValueError, match=r"fbclid|created_ms|subdomain_index"):
            format_fbc(fbclid, ms, index)

    def test_fbp_format_and_parse(self) -> None:
        assert format_fbp(1596403881668, 1116446470) == FBP
        assert parse_fbp(FBP) == Fbp(1, 1596403881668, 1116446470, None, FBP)
        long = "fb.1.1753764722328.37428949349292645.AQEAAQMB"
        assert parse_fbp(long) == Fbp(1, 1753764722328, 37428949349292645, "AQEAAQMB", long)
        assert parse_fbp("fb.1.1596403881668.11164a6470") is None
        assert parse_fbp("fb.1.1596403881668") is None
        with pytest.raises(ValueError, match="random_int"):
            format_fbp(NOW_MS, -1)

    @PROPERTY
    @given(st.integers(10**12, 10**13 - 1), st.integers(0, 10**20 - 1), st.integers(0, 9))
    def test_fbp_round_trips(self, ms: int, rnd: int, index: int) -> None:
        value = format_fbp(ms, rnd, index)
        assert parse_fbp(value) == Fbp(index, ms, rnd, None, value)


class TestOtherFormats:
    def test_gcl_aw(self) -> None:
        assert format_gcl_aw(GCLID, 1641466031) == f"GCL.1641466031.{GCLID}"
        assert parse_gcl_aw(f"GCL.1641466031.{GCLID}") == GclAw(
            1641466031, GCLID, f"GCL.1641466031.{GCLID}"
        )
        assert parse_gcl_aw("GCL.1641466031.E.C.P.x") == GclAw(
            1641466031, "E.C.P.x", "GCL.1641466031.E.C.P.x"
        )
        for bad in ("GCL.123456.x", "gcl.1641466031.x", "GCL.1641466031.", "1.1.22788994.16824"):
            assert parse_gcl_aw(bad) is None
        with pytest.raises(ValueError, match="created_s"):
            format_gcl_aw(GCLID, NOW_MS)

    @PROPERTY
    @given(safe_ids, st.integers(10**9, 10**10 - 1))
    def test_gcl_aw_round_trips(self, gclid: str, seconds: int) -> None:
        value = format_gcl_aw(gclid, seconds)
        assert parse_gcl_aw(value) == GclAw(seconds, gclid, value)

    def test_new_ttp_is_27_base64url_characters(self) -> None:
        assert format_ttp(0) == "A" * 27
        value = format_ttp((1 << 160) - 1)
        assert value == "_" * 26 + "8"
        assert VENDOR_COOKIES["_ttp"](value) == value
        with pytest.raises(ValueError, match="160"):
            format_ttp(1 << 160)

    @pytest.mark.parametrize(
        "observed",
        [
            "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "KsD1j70yQE35rPrmL8O1Mz0Zg1-",
            "01K1A8BXG7CFS8QC92XKKJD081_.tt.1",
        ],
    )
    def test_observed_ttp_values_are_valid(self, observed: str) -> None:
        assert VENDOR_COOKIES["_ttp"](observed) == observed

    @PROPERTY
    @given(st.integers(0, (1 << 128) - 1))
    def test_new_scid_is_a_uuid4(self, bits: int) -> None:
        value = format_scid(bits)
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, value)
        assert VENDOR_COOKIES["_scid"](value) == value

    @pytest.mark.parametrize(
        "observed", ["fdc727a7-6c0e-4a20-8892-95251925444e", "9LVd1yPd6f1KSk8K_0gppcjKGVzfLCFX"]
    )
    def test_observed_scid_values_are_valid(self, observed: str) -> None:
        assert VENDOR_COOKIES["_scid"](observed) == observed

    def test_uetmsclkid(self) -> None:
        assert format_uetmsclkid(MSCLKID) == "_uet" + MSCLKID
        assert parse_uetmsclkid("_uet" + MSCLKID) == MSCLKID
        assert parse_uetmsclkid(MSCLKID) is None
        assert parse_uetmsclkid("_uetmsclkid-test") is None
        with pytest.raises(ValueError, match="msclkid"):
            format_uetmsclkid(MSCLKID + "-1")

    def test_every_managed_cookie_has_a_validator_and_a_lifetime(self) -> None:
        assert (
            set(VENDOR_COOKIES)
            == set(COOKIE_MAX_AGE_DAYS)
            == {
                "_fbc",
                "_fbp",
                "_gcl_aw",
                "ttclid",
                "_ttp",
                "_scid",
                "_scclid",
                "_uetmsclkid",
                "_ga",
            }
        )
        assert all(0 < days <= 400 for days in COOKIE_MAX_AGE_DAYS.values())

    @pytest.mark.parametrize("name", sorted(VENDOR_COOKIES))
    @pytest.mark.parametrize("junk", ["", "a b", '"x"', "x;y", "é" * 20, "A" * 600, "\x00" * 20])
    def test_validators_reject_junk(self, name: str, junk: str) -> None:
        assert VENDOR_COOKIES[name](junk) is None

    def test_click_ids_from_cookies(self) -> None:
        cookies = {
            "_gcl_aw": f"GCL.1641466031.{GCLID}",
            "ttclid": "E.C.P.abc",
            "_ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "_scclid": "5f1c-aa",
            "_scid": "fdc727a7-6c0e-4a20-8892-95251925444e",
            "_uetmsclkid": "_uet" + MSCLKID,
            "_fbc": "fb.1.1554763741205.abc",
        }
        assert click_ids_from_cookies(cookies) == {
            "gclid": GCLID,
            "ttclid": "E.C.P.abc",
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "sccid": "5f1c-aa",
            "scid": "fdc727a7-6c0e-4a20-8892-95251925444e",
            "msclkid": MSCLKID,
        }
        assert list(click_ids_from_cookies(cookies)) == [
            "gclid",
            "ttclid",
            "ttp",
            "sccid",
            "scid",
            "msclkid",
        ]
        assert click_ids_from_cookies({"_gcl_aw": "junk", "ttclid": "a b"}) == {}


class TestPlanCookies:
    def test_new_visitor_without_click_gets_the_four_visitor_ids(self) -> None:
        rand = Bits()
        got = plan(rand=rand)
        assert set(got) == {"_fbp", "_ttp", "_scid", "_ga"}
        assert rand.calls == [31, 160, 128, 32]
        fbp = parse_fbp(got["_fbp"])
        assert fbp is not None
        assert (fbp.subdomain_index, fbp.created_ms) == (1, NOW_MS)
        assert got == plan(rand=Bits())  # deterministic given its inputs

    def test_existing_visitor_ids_are_kept_and_nothing_random_is_drawn(self) -> None:
        existing = {
            "_fbp": FBP,
            "_ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "_scid": "9LVd1yPd6f1KSk8K",
            "_ga": "GA1.2.1234567890.1700000000",
        }
        rand = Bits()
        assert plan(existing=existing, rand=rand) == existing
        assert rand.calls == []

    def test_existing_fbp_wins_over_the_profile_which_wins_over_a_new_one(self) -> None:
        other = "fb.1.1700000000000.42"
        assert plan(existing={"_fbp": FBP}, profile={"_fbp": other})["_fbp"] == FBP
        assert plan(profile={"_fbp": other})["_fbp"] == other
        assert plan(existing={"_fbp": "junk"}, profile={"_fbp": other})["_fbp"] == other
        assert plan(existing={"_fbp": "junk"}, profile={"_fbp": "junk"})["_fbp"] not in (
            "junk",
            other,
        )

    def test_first_fbclid_creates_fbc_with_now_and_the_subdomain_index(self) -> None:
        got = plan({"fbclid": FBCLID}, index=2)
        assert got["_fbc"] == f"fb.2.{NOW_MS}.{FBCLID}"
        assert got["_fbp"].startswith(f"fb.2.{NOW_MS}.")

    def test_same_fbclid_keeps_the_cookie_and_its_creation_time(self) -> None:
        old = f"fb.1.1554763741205.{FBCLID}.AQEAAQMB"
        assert plan({"fbclid": FBCLID}, {"_fbc": old})["_fbc"] == old
        assert plan({"fbclid": FBCLID}, profile={"_fbc": old})["_fbc"] == old

    def test_different_fbclid_replaces_the_cookie(self) -> None:
        old = "fb.1.1554763741205.OldClick"
        assert plan({"fbclid": "NewClick"}, {"_fbc": old})["_fbc"] == f"fb.1.{NOW_MS}.NewClick"

    def test_fbclid_case_matters(self) -> None:
        old = "fb.1.1554763741205.abc"
        assert plan({"fbclid": "ABC"}, {"_fbc": old})["_fbc"] == f"fb.1.{NOW_MS}.ABC"

    def test_without_fbclid_the_known_fbc_is_reissued(self) -> None:
        old = "fb.1.1554763741205.abc"
        assert plan(existing={"_fbc": old})["_fbc"] == old
        assert plan(existing={"_fbc": "bad"}, profile={"_fbc": old})["_fbc"] == old
        assert "_fbc" not in plan(existing={"_fbc": "fb.1.1554763741205.a.b.c"})

    def test_gcl_aw_follows_the_fbc_rules_in_seconds(self) -> None:
        old = f"GCL.1641466031.{GCLID}"
        assert plan({"gclid": GCLID}, {"_gcl_aw": old})["_gcl_aw"] == old
        assert plan({"gclid": "New"})["_gcl_aw"] == f"GCL.{NOW_MS // 1000}.New"
        assert plan({"gclid": "New"}, {"_gcl_aw": old})["_gcl_aw"] == f"GCL.{NOW_MS // 1000}.New"
        assert plan(profile={"_gcl_aw": old})["_gcl_aw"] == old

    def test_raw_click_id_cookies(self) -> None:
        got = plan({"ttclid": "E.C.P.new", "sccid": "sc-1", "msclkid": MSCLKID})
        assert (got["ttclid"], got["_scclid"], got["_uetmsclkid"]) == (
            "E.C.P.new",
            "sc-1",
            "_uet" + MSCLKID,
        )
        kept = plan(
            existing={"ttclid": "E.C.P.old", "_uetmsclkid": "_uet" + MSCLKID},
            profile={"_scclid": "sc-0", "ttclid": "E.C.P.profile"},
        )
        assert (kept["ttclid"], kept["_scclid"], kept["_uetmsclkid"]) == (
            "E.C.P.old",
            "sc-0",
            "_uet" + MSCLKID,
        )

    def test_malformed_cookies_without_replacement_are_dropped(self) -> None:
        got = plan(existing={"ttclid": "a b", "_uetmsclkid": "_uetXYZ", "_gcl_aw": "GCL.1"})
        assert not {"ttclid", "_uetmsclkid", "_gcl_aw"} & set(got)

    def test_the_plan_lists_click_cookies_then_visitor_ids_in_a_fixed_order(self) -> None:
        clicks = {"fbclid": FBCLID, "gclid": GCLID, "ttclid": "t1", "sccid": "s1"}
        got = plan({**clicks, "msclkid": MSCLKID}, rand=Bits())
        assert list(got) == [
            "_fbc",
            "_gcl_aw",
            "ttclid",
            "_scclid",
            "_uetmsclkid",
            "_fbp",
            "_ttp",
            "_scid",
            "_ga",
        ]

    def test_invalid_click_ids_are_ignored(self) -> None:
        got = plan({"fbclid": "a.b", "gclid": "a b", "msclkid": "123", "sccid": ""})
        assert set(got) == {"_fbp", "_ttp", "_scid", "_ga"}

    def test_a_clock_that_cannot_make_a_valid_fbc_raises(self) -> None:
        with pytest.raises(ValueError, match="created_ms"):
            plan_cookies(
                click_ids={},
                existing={},
                profile_values={},
                now_ms=1_790_000,
                random_bits=Bits(),
                subdomain_index=1,
            )


cookie_values = st.one_of(
    st.sampled_from(
        [
            FBP,
            "fb.1.1554763741205.abc",
            "fb.2.1554763741205.abc.AQEAAQMB",
            f"GCL.1641466031.{GCLID}",
            "E.C.P.abc",
            "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "fdc727a7-6c0e-4a20-8892-95251925444e",
            "_uet" + MSCLKID,
            "sc-1",
        ]
    ),
    st.text(max_size=30),
)
cookie_maps = st.dictionaries(st.sampled_from(sorted(VENDOR_COOKIES)), cookie_values)
click_maps = st.dictionaries(
    st.sampled_from(["fbclid", "gclid", "ttclid", "sccid", "msclkid", "epik"]),
    st.one_of(st.sampled_from(["abc", "ABC", GCLID, MSCLKID, "E.C.P.x"]), st.text(max_size=20)),
)


class TestPlanProperties:
    @PROPERTY
    @given(click_maps, cookie_maps, cookie_maps, st.integers(0, 9))
    def test_invariants(
        self,
        clicks: dict[str, str],
        existing: dict[str, str],
        profile: dict[str, str],
        index: int,
    ) -> None:
        got = plan(clicks, existing, profile, index=index)
        assert got == plan(clicks, existing, profile, index=index)
        for name, value in got.items():
            assert VENDOR_COOKIES[name](value) == value, (name, value)
        for name in ("_fbp", "_ttp", "_scid"):
            if VENDOR_COOKIES[name](existing.get(name, "")) is not None:
                assert got[name] == existing[name]
        old = parse_fbc(existing.get("_fbc"))
        if old is not None and clicks.get("fbclid") == old.fbclid:
            assert got["_fbc"] == old.value
        if valid_click_id("fbclid", clicks.get("fbclid")) is None and old is not None:
            assert got["_fbc"] == old.value
