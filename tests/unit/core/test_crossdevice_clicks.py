"""Cross-device attribution (core.crossdevice), alone and over the SQLite link index.

The property test plays random visit orders — several visitors, ad clicks of several platforms
at various times, `identify` with the buyer's e-mail or another one — then an order at time T
found by the e-mail (and sometimes naming a visitor), and checks the enriched event against a
model: per platform, the freshest click of any linked visitor inside the platform's window
before T wins, and no click outside the window (or of an unlinked visitor) is used.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import crossdevice
from gateway.core.crossdevice import CLOCK_SKEW_SECONDS, DAY, windowed
from gateway.core.event import Event, Source, User
from gateway.core.profile import ProfileUpdate, VisitorProfile, lookup_keys
from gateway.destinations import CLICK_WINDOWS
from gateway.destinations.meta.clickids import parse_fbc
from gateway.store import sqlite_schema as sqlite_module
from gateway.store.base import ProfileQuery
from gateway.store.sqlite_profiles import find_identities_tx, touch_profile_tx

SITE = "shop"
EM = "a" * 64
OTHER_EM = "b" * 64
T0 = 1_790_000_000.0
WINDOWED = windowed(CLICK_WINDOWS)
NAMES = sorted(WINDOWED)
WINDOW_OF = {name: w for w in CLICK_WINDOWS for name in w.names}


def enrich_across(
    event: Event,
    named: VisitorProfile | None,
    linked: list[VisitorProfile],
    now: float,
) -> Event:
    """core.crossdevice with every platform's click window, as the pipeline passes them."""
    return crossdevice.enrich_across(event, named, linked, now, CLICK_WINDOWS)


def freshest_clicks(
    profiles: list[VisitorProfile], order_time: float
) -> dict[str, crossdevice.Click]:
    return crossdevice.freshest_clicks(profiles, order_time, CLICK_WINDOWS)


def hashed(digest: str) -> dict[str, dict[str, tuple[str, ...]]]:
    return {"meta": {"em": (digest,)}}


@contextmanager
def memory_db() -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        sqlite_module._migrate(conn)
        yield conn


def order(time: float, visitor_id: str | None = None, digest: str = EM) -> Event:
    user = User(hashed=hashed(digest), visitor_id=visitor_id)
    return Event(event="Purchase", event_id="o-1", time=int(time), source=Source.WEBSITE, user=user)


@dataclass(frozen=True)
class Step:
    """One hit: visitor `who` at `at` seconds after T0, with clicks and/or an identify."""

    who: int
    at: float
    clicks: tuple[tuple[str, str], ...]
    identify: str | None


steps = st.lists(
    st.builds(
        Step,
        who=st.integers(0, 4),
        at=st.floats(0, 60 * DAY, allow_nan=False),
        clicks=st.lists(
            st.tuples(st.sampled_from(NAMES), st.sampled_from(["v1", "v2", "v3"])), max_size=3
        ).map(tuple),
        identify=st.sampled_from([None, EM, OTHER_EM]),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(
    story=steps,
    order_at=st.floats(0, 70 * DAY, allow_nan=False),
    named=st.one_of(st.none(), st.integers(0, 5)),
)
def test_freshest_click_inside_the_window_wins_across_linked_visitors(
    story: list[Step], order_at: float, named: int | None
) -> None:
    # The model: each visitor's click ids with first-seen times, and who entered which e-mail.
    seen: dict[int, dict[str, tuple[str, float]]] = {}
    emails: dict[int, set[str]] = {}
    with memory_db() as conn:
        for step in sorted(story, key=lambda s: s.at):
            now = T0 + step.at
            mine = seen.setdefault(step.who, {})
            for name, value in dict(step.clicks).items():
                if name not in mine or mine[name][0] != value:
                    mine[name] = (value, now)
            if step.identify:
                emails.setdefault(step.who, set()).add(step.identify)
            update = ProfileUpdate(
                click_ids=dict(step.clicks),
                hashed=hashed(step.identify) if step.identify else {},
            )
            touch_profile_tx(conn, site=SITE, visitor_id=f"v{step.who}", update=update, now=now)
        t = float(int(T0 + order_at))  # event times are whole seconds
        vid = f"v{named}" if named is not None else None
        event = order(t, vid)
        query = ProfileQuery(vid, tuple(lookup_keys(event.user.hashed)))
        (identity,) = find_identities_tx(conn, site=SITE, queries=[query])

    linked = {w for w, ems in emails.items() if EM in ems}
    if named is not None and named in seen:
        linked |= {w for w, ems in emails.items() if ems & emails.get(named, set())}
        linked.add(named)
    got_ids = {p.visitor_id for p in identity.linked}
    if identity.named is not None:
        got_ids.add(identity.named.visitor_id)
    assert got_ids == {f"v{w}" for w in linked}

    result = enrich_across(event, identity.named, identity.linked, now=t)
    for window in CLICK_WINDOWS:
        candidates = [
            (at, name, value)
            for w in linked
            for name, (value, at) in seen.get(w, {}).items()
            if name in window.names and t - window.days * DAY <= at <= t + CLOCK_SKEW_SECONDS
        ]
        sent = {n: v for n, v in result.user.click_ids.items() if n in window.names}
        if not candidates:
            assert sent == {}, f"{window.platform}: a click outside the window was used"
            if window.platform == "meta":
                assert result.user.fbc is None
            continue
        best = max(at for at, _, _ in candidates)
        winners = {(name, value) for at, name, value in candidates if at == best}
        assert len(sent) == 1
        assert next(iter(sent.items())) in winners
        if window.platform == "meta":
            fbc = parse_fbc(result.user.fbc)
            assert fbc is not None
            assert (("fbclid", fbc.fbclid)) in winners


def profile(vid: str, last_seen: float, **clicks: tuple[str, float]) -> VisitorProfile:
    return VisitorProfile(
        site=SITE,
        visitor_id=vid,
        first_seen=T0,
        last_seen=last_seen,
        click_ids=clicks,
        browser_ids={"_fbp": f"fb.1.1790000000000.{len(vid)}"},
        user_agent=f"UA-{vid}",
    )


def test_each_platform_has_its_own_window() -> None:
    t = T0 + 40 * DAY
    old = profile(
        "a",
        T0,
        fbclid=("F", t - 8 * DAY),  # Meta: 7 days → out
        ttclid=("T", t - 6 * DAY),  # TikTok: 7 days → in
        gclid=("G", t - 29 * DAY),  # Google: 30 days → in
        epik=("E", t - 29 * DAY),  # Pinterest: 28-day default → out
    )
    clicks = freshest_clicks([old], t)
    assert {p: c.value for p, c in clicks.items()} == {"tiktok": "T", "google_ads": "G"}


def test_a_click_after_the_order_does_not_count() -> None:
    t = T0 + DAY
    later = profile("a", t + DAY, fbclid=("late", t + CLOCK_SKEW_SECONDS + 1))
    skewed = profile("b", t, fbclid=("skewed", t + CLOCK_SKEW_SECONDS - 1))
    assert freshest_clicks([later], t) == {}
    assert freshest_clicks([later, skewed], t)["meta"].value == "skewed"


def test_google_sends_one_click_id_the_freshest_of_gclid_gbraid_wbraid() -> None:
    t = T0 + DAY
    a = profile("a", t, gclid=("G", t - 3 * DAY))
    b = profile("b", t, wbraid=("W", t - 2 * DAY))
    event = enrich_across(order(t), None, [a, b], now=t)
    assert event.user.click_ids == {"wbraid": "W"}


def test_browser_ids_come_from_the_named_visitor_else_the_freshest() -> None:
    t = T0 + DAY
    a = profile("a", t - 100, fbclid=("F", t - 3600))
    b = profile("b", t - 10)
    named = enrich_across(order(t, "a"), a, [b], now=t)
    assert named.user.user_agent == "UA-a"
    assert named.user.visitor_id == "a"
    anonymous = enrich_across(order(t), None, [a, b], now=t)
    assert anonymous.user.user_agent == "UA-b"
    assert anonymous.user.fbp == b.browser_ids["_fbp"]
    fbc = parse_fbc(anonymous.user.fbc)
    assert fbc is not None
    assert (fbc.fbclid, fbc.created_ms) == ("F", int((t - 3600) * 1000))


def test_the_events_own_values_win() -> None:
    t = T0 + DAY
    a = profile("a", t, fbclid=("F", t - 60), gclid=("G", t - 60))
    event = order(t)
    own = Event(
        event="Purchase",
        event_id="o",
        time=int(t),
        source=Source.WEBSITE,
        user=User(fbc="fb.1.1790000000000.Own", click_ids={"gclid": "OwnG"}),
    )
    result = enrich_across(own, None, [a], now=t)
    assert result.user.fbc == "fb.1.1790000000000.Own"
    assert result.user.click_ids == {"gclid": "OwnG"}
    assert enrich_across(event, None, [], now=t) is event


def test_the_order_time_is_capped_at_now() -> None:
    """An order stamped in the future is measured from now: a click after now cannot count."""
    t = T0 + DAY
    a = profile("a", t, fbclid=("F", t + 3600))
    assert "fbclid" not in enrich_across(order(t + 2 * 3600), None, [a], now=t).user.click_ids
