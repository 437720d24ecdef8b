"""Cheap proofs that a destination's `validate` passes a stored event (for `Baseline.stored`).

Holding a stored record to a destination's own `validate` means decoding it into an Event and
asking the destination; with ten destinations that was most of the 202-warning check. A proof
reads the few stored fields that destination's check looks at and answers True only when its
`validate` surely returns None for the event. False means "not proven": the record is decoded
and the destination asked, as before. So a proof can save work but never change a warning.

Rules that depend only on the event name the destination sees (a Snap or Pinterest event for
the name, a LinkedIn conversion rule, an X event id, Reddit's custom-name length, GA4's name
rules) are settled once per name: the destination's own `validate` is asked about a probe event
of that name carrying every identifier, click id and field those checks want (`probe`). Only
what varies per event is read from the record here. Destinations without a proof here (Meta,
TikTok, Google Ads: `Baseline` skips them for events `_stored_surely_fine` covers) are always
asked.

tests/unit/web/test_baseline_proofs.py holds every proof to `validate` on generated events and
settings, and the whole warning list to the unproven road's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from gateway.core.event import Data, Event, Source, User, ga_client_id
from gateway.core.normalize import RULESETS
from gateway.core.record import Stored
from gateway.destinations.base import Destination
from gateway.destinations.ga4.destination import GA4
from gateway.destinations.ga4.mapping import MAX_ITEMS, MAX_VALUE
from gateway.destinations.linkedin.destination import LinkedIn
from gateway.destinations.microsoft.destination import PAGE_LOAD, Microsoft
from gateway.destinations.pinterest.destination import Pinterest
from gateway.destinations.reddit.destination import Reddit
from gateway.destinations.snap.destination import Snap
from gateway.destinations.x.destination import X

_NAMES_MAX: Final = 4096
"""Distinct event names remembered per destination (custom names are unbounded; cleared when
full)."""
_PROBE_DIGEST: Final = "0" * 64
_PROBE_IDS: Final[Mapping[str, tuple[str, ...]]] = {
    key: (_PROBE_DIGEST,) for key in ("em", "ph", "external_id", "fn", "ln")
}
_PROBE_CLICK_IDS: Final[Mapping[str, str]] = {
    "ga": "1234567890.1700000000",
    "twclid": "probe",
    "li_fat_id": "probe",
    "rdt_cid": "probe",
    "msclkid": "0" * 32,
    "gclid": "probe",
}
_PROBE_CHANNEL: Final = "api"
"""The probe's channel (the server API's, the only one `Baseline.stored` sees)."""
_WEBSITE: Final = Source.WEBSITE.value
_APP: Final = Source.APP.value


def probe(name: str) -> Event:
    """An event named `name` that every destination's per-event checks are content with: a
    website event with url, value and currency, IP, user agent, every hashed identifier under
    every rule set and every click id those checks look for."""
    return Event(
        event=name,
        event_id="probe",
        time=0,
        source=Source.WEBSITE,
        url="https://probe.invalid/",
        user=User(
            hashed={rules: _PROBE_IDS for rules in RULESETS},
            ip="192.0.2.1",
            user_agent="probe",
            click_ids=_PROBE_CLICK_IDS,
        ),
        data=Data(value=1.0, currency="USD"),
        channel=_PROBE_CHANNEL,
    )


REFUSED: Final = 0
"""A name the destination refuses the probe under: its events are never proven."""
FINE: Final = 1
"""A name the destination takes the probe under."""
NEEDS_MORE: Final = 2
"""A name it takes the probe under that asks more of the event (Snap's PURCHASE: value and
currency; Microsoft's pageLoad: url)."""

Holds = Callable[[Stored, int], bool]
"""(record, its name's verdict, FINE or NEEDS_MORE) → the destination's `validate` surely
passes the record's event."""


class Proof:
    """A destination's proof: a verdict per event name (`settle`, memoised), then `holds`."""

    __slots__ = ("_destination", "_memo", "_more", "holds")

    def __init__(
        self, destination: Destination, holds: Holds, more: Callable[[Event], bool] | None = None
    ) -> None:
        """`more`: whether a probe the destination takes asks more of the event (NEEDS_MORE)."""
        self._destination = destination
        self._more = more
        self._memo: dict[str, int] = {}
        self.holds = holds

    def settle(self, name: str) -> int:
        """The verdict on event name `name` (as the destination sees it): REFUSED when its
        `validate` refuses the probe of that name, else FINE or NEEDS_MORE."""
        found = self._memo.get(name)
        if found is None:
            if len(self._memo) >= _NAMES_MAX:
                self._memo.clear()
            event = probe(name)
            if self._destination.validate(event) is not None:
                found = REFUSED
            elif self._more is not None and self._more(event):
                found = NEEDS_MORE
            else:
                found = FINE
            self._memo[name] = found
        return found

    def proves(self, record: Stored, name: str) -> bool:
        """Whether the destination's `validate` surely passes the record's event, seen under
        `name`."""
        verdict = self.settle(name)
        return verdict != REFUSED and self.holds(record, verdict)


def _ids(record: Stored, rules: str) -> Mapping[str, Any]:
    hashed = record.u.h
    if not hashed:
        return {}
    found = hashed.get(rules)
    return found if found else {}


def _click(record: Stored, key: str) -> str | None:
    cid = record.u.cid
    return cid.get(key) if cid else None


def proof_for(destination: Destination) -> Proof | None:
    """The proof for `destination` (None: it has none, and is always asked)."""
    if isinstance(destination, Snap):
        return _snap(destination)
    if isinstance(destination, Pinterest):
        return _pinterest(destination)
    if isinstance(destination, Reddit):
        return _reddit(destination)
    if isinstance(destination, LinkedIn):
        return _linkedin(destination)
    if isinstance(destination, Microsoft):
        return _microsoft(destination)
    if isinstance(destination, X):
        return _x(destination)
    if isinstance(destination, GA4):
        return _ga4(destination)
    return None


def _snap(destination: Snap) -> Proof:
    rules = destination.hash_rules

    def holds(record: Stored, verdict: int) -> bool:
        if record.s == _WEBSITE and not record.url:
            return False
        ids, u = _ids(record, rules), record.u
        if not (ids.get("em") or ids.get("ph") or (u.ip and u.ua)):
            return False
        return verdict == FINE or (record.d.value is not None and bool(record.d.currency))

    return Proof(destination, holds, lambda event: destination.event_name(event) == "PURCHASE")


def _pinterest(destination: Pinterest) -> Proof:
    rules = destination.hash_rules

    def holds(record: Stored, verdict: int) -> bool:
        if record.s == _APP:
            return False
        if record.s == _WEBSITE and not record.url:
            return False
        u = record.u
        return bool(_ids(record, rules).get("em") or (u.ip and u.ua))

    return Proof(destination, holds)


def _reddit(destination: Reddit) -> Proof:
    rules = destination.hash_rules

    def holds(record: Stored, verdict: int) -> bool:
        if record.u.ip or _click(record, "rdt_cid"):
            return True
        ids = _ids(record, rules)
        return bool(ids.get("em") or ids.get("ph") or ids.get("external_id"))

    return Proof(destination, holds)


def _linkedin(destination: LinkedIn) -> Proof:
    rules = destination.hash_rules
    ldu_sent = destination.settings.send_limited_data_use

    def holds(record: Stored, verdict: int) -> bool:
        if record.tc or (record.ldu and not ldu_sent):
            return False
        return bool(_ids(record, rules).get("em") or _click(record, "li_fat_id"))

    return Proof(destination, holds)


def _microsoft(destination: Microsoft) -> Proof:
    rules = destination.hash_rules

    def holds(record: Stored, verdict: int) -> bool:
        if record.tc:
            return False
        if verdict == NEEDS_MORE and not record.url:
            return False
        if record.u.ip:
            return True
        ids = _ids(record, rules)
        return bool(ids.get("em") or ids.get("ph") or ids.get("external_id"))

    return Proof(
        destination, holds, lambda event: destination.event_type_and_name(event)[0] == PAGE_LOAD
    )


def _x(destination: X) -> Proof:
    rules = destination.hash_rules

    def holds(record: Stored, verdict: int) -> bool:
        if record.tc:
            return False
        if _click(record, "twclid"):
            return True
        ids = _ids(record, rules)
        return bool(ids.get("em") or ids.get("ph"))

    return Proof(destination, holds)


def _ga4(destination: GA4) -> Proof:
    def holds(record: Stored, verdict: int) -> bool:
        if record.ch != _PROBE_CHANNEL:
            return False
        raw = _click(record, "ga")
        if not raw or ga_client_id(raw) is None:
            return False
        d = record.d
        if d.custom:  # custom parameters: their names and count are GA4's to judge
            return False
        # With no custom data GA4 gets at most 7 parameters (limit 25); the page URLs are cut
        # to their limits, the value is a number: only these strings can be too long.
        for text in (d.currency, d.order_id, d.search_string, record.id):
            if text is not None and len(text) > MAX_VALUE:
                return False
        contents = d.contents
        if contents:
            if len(contents) > MAX_ITEMS:
                return False
            for line in contents:
                if len(line[0]) > MAX_VALUE:
                    return False
        return True

    return Proof(destination, holds)
