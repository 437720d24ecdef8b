"""Cross-device attribution: enrich an order from every visitor its buyer was seen as.

A hashed e-mail, phone or external id links all the visitors (browsers, devices) it was
entered on. An order found through such a link gets, for each platform, the freshest click id
that any of those visitors brought within the platform's click-through attribution window
before the order, plus the browser ids (`_fbp`, `_ttp`, IP, user agent, …) of the visitor the
order names, or else of the most recently seen linked visitor. Pure: the caller passes `now`
and the platforms' click windows (each platform's ``CLICK_WINDOW``, in
``gateway/destinations/<name>/clickids.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.core.event import Event, User
from gateway.core.profile import VisitorProfile, union_hashed

DAY: Final = 86400.0

DEFAULT_WINDOW_DAYS: Final = 28.0
"""Conservative click window for platforms whose default window is not documented for us."""

CLOCK_SKEW_SECONDS: Final = 300.0
"""A click seen up to this long after the order's own time still counts (backend clocks and the
gateway's differ a little); a click later than that cannot have led to the order."""


@dataclass(frozen=True, slots=True)
class ClickWindow:
    """The click ids of one platform and how long after a click it attributes a conversion."""

    platform: str
    names: tuple[str, ...]
    """`User.click_ids` keys (lower-case) of this platform's click ids; one of them is sent."""
    days: float
    carried_as_fbc: Callable[[Mapping[str, str], str, float], str | None] | None = None
    """Set when the platform's click also travels as `User.fbc` (Meta's ``_fbc``): an event
    with an fbc brings its own click, and an event without one gets
    ``carried_as_fbc(browser ids of the clicking visitor, click id, first seen)``."""


def windowed(windows: Sequence[ClickWindow]) -> frozenset[str]:
    """Return the click-id names of `windows`: attribution data, which travels only within its
    window. Names not listed (`ttp`, `scid`: browser ids) follow the browser ids."""
    return frozenset(name for w in windows for name in w.names)


@dataclass(frozen=True, slots=True)
class Click:
    """One click id a visitor brought: its name, value, first-seen time and the visitor."""

    name: str
    value: str
    seen: float
    profile: VisitorProfile


def freshest_clicks(
    profiles: Sequence[VisitorProfile], order_time: float, windows: Sequence[ClickWindow]
) -> dict[str, Click]:
    """Return platform → the freshest click of any profile inside its window before the order.

    A click counts when ``order_time - days <= seen <= order_time + CLOCK_SKEW_SECONDS``.
    Ties go to the first profile given (the one the order names comes first).
    """
    out: dict[str, Click] = {}
    for window in windows:
        earliest = order_time - window.days * DAY
        latest = order_time + CLOCK_SKEW_SECONDS
        best: Click | None = None
        for profile in profiles:
            for name in window.names:
                found = profile.click_ids.get(name)
                if found is None:
                    continue
                value, seen = found
                if earliest <= seen <= latest and (best is None or seen > best.seen):
                    best = Click(name, value, seen, profile)
        if best is not None:
            out[window.platform] = best
    return out


def base_profile(
    named: VisitorProfile | None, linked: Sequence[VisitorProfile]
) -> VisitorProfile | None:
    """Return the profile whose browser ids the order gets: the named one, else the freshest."""
    if named is not None:
        return named
    return max(linked, key=lambda p: (p.last_seen, p.visitor_id), default=None)


def enrich_across(
    event: Event,
    named: VisitorProfile | None,
    linked: Sequence[VisitorProfile],
    now: float,
    windows: Sequence[ClickWindow],
) -> Event:
    """Return the event filled from its visitor and every visitor linked to its identifiers.

    The event's own values always win (a platform whose click the event brings gets no other).
    Click ids come from `freshest_clicks` over all the
    profiles in the platforms' `windows`, measured from the order's time (never later than
    `now`); `fbc` comes from the window that sets `carried_as_fbc` (Meta's: the clicking
    visitor's `_fbc` cookie when it holds that fbclid, else built from the fbclid and the time
    it was first seen). Everything else (IP, user agent, `_fbp`, `ttp`, `scid`, hashed
    identifiers) comes from `base_profile`.
    """
    base = base_profile(named, linked)
    if base is None:
        return event
    everyone = [base, *(p for p in linked if p.visitor_id != base.visitor_id)]
    clicks = freshest_clicks(everyone, min(event.time, now), windows)
    u = event.user
    names = windowed(windows)
    merged = {n: v for n, (v, _) in base.click_ids.items() if n not in names}
    fbc = u.fbc
    for window in windows:
        carried = window.carried_as_fbc
        own = any(n in u.click_ids for n in window.names) or (carried is not None and u.fbc)
        if own:  # the event brings its own click for this platform: it is the one sent
            clicks.pop(window.platform, None)
        elif (click := clicks.get(window.platform)) is not None:
            merged[click.name] = click.value
            if carried is not None and fbc is None:
                fbc = carried(click.profile.browser_ids, click.value, click.seen)
    merged.update(u.click_ids)
    ids = base.browser_ids
    user = User(
        pii=u.pii,
        hashed=union_hashed(base.hashed, u.hashed) if base.hashed else u.hashed,
        ip=u.ip or base.ip,
        user_agent=u.user_agent or base.user_agent,
        visitor_id=u.visitor_id or base.visitor_id,
        fbc=fbc,
        fbp=u.fbp or ids.get("_fbp"),
        click_ids=merged,
    )
    return replace(event, user=user)
