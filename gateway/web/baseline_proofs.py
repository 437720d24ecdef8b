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

Proof = Callable[[Stored, str], bool]
"""(stored record, the event name the destination sees) → its `validate` surely passes."""

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


class _Names:
    """Per event name, what `settle` says about it (memoised, bounded)."""

    __slots__ = ("_memo", "_settle")

    def __init__(self, settle: Callable[[str], int]) -> None:
        self._settle = settle
        self._memo: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        found = self._memo.get(name)
        if found is None:
            if len(self._memo) >= _NAMES_MAX:
                self._memo.clear()
            found = self._memo[name] = self._settle(name)
        return found


_REFUSED: Final = 0
"""A name the probe is refused under: never proven."""
_FINE: Final = 1
"""A name the probe passes under."""
_NEEDS_MORE: Final = 2
"""A name that passes with the probe but asks more of the event (Snap's PURCHASE: value and
currency; Microsoft's pageLoad: url)."""


def _gate(destination: Destination, more: Callable[[Event], bool] | None = None) -> _Names:
    """The name memo of a destination: whether the probe of a name passes `validate`, and
    whether `more` (if given) says the name asks more of the event."""

    def settle(name: str) -> int:
        event = probe(name)
        if destination.validate(event) is not None:
            return _REFUSED
        return _NEEDS_MORE if more is not None and more(event) else _FINE

    return _Names(settle)


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
    snap = destination
    names = _gate(snap, lambda event: snap.event_name(event) == "PURCHASE")
    rules = snap.hash_rules

    def proof(record: Stored, name: str) -> bool:
        verdict = names(name)
        if verdict == _REFUSED:
            return False
        if record.s == _WEBSITE and not record.url:
            return False
        ids, u = _ids(record, rules), record.u
        if not (ids.get("em") or ids.get("ph") or (u.ip and u.ua)):
            return False
        return verdict == _FINE or (record.d.value is not None and bool(record.d.currency))

    return proof


def _pinterest(destination: Pinterest) -> Proof:
    names, rules = _gate(destination), destination.hash_rules

    def proof(record: Stored, name: str) -> bool:
        if names(name) == _REFUSED or record.s == _APP:
            return False
        if record.s == _WEBSITE and not record.url:
            return False
        u = record.u
        return bool(_ids(record, rules).get("em") or (u.ip and u.ua))

    return proof


def _reddit(destination: Reddit) -> Proof:
    names, rules = _gate(destination), destination.hash_rules

    def proof(record: Stored, name: str) -> bool:
        if names(name) == _REFUSED:
            return False
        if record.u.ip or _click(record, "rdt_cid"):
            return True
        ids = _ids(record, rules)
        return bool(ids.get("em") or ids.get("ph") or ids.get("external_id"))

    return proof


def _linkedin(destination: LinkedIn) -> Proof:
    names, rules = _gate(destination), destination.hash_rules
    ldu_sent = destination.settings.send_limited_data_use

    def proof(record: Stored, name: str) -> bool:
        if names(name) == _REFUSED or record.tc or (record.ldu and not ldu_sent):
            return False
        return bool(_ids(record, rules).get("em") or _click(record, "li_fat_id"))

    return proof


def _microsoft(destination: Microsoft) -> Proof:
    microsoft = destination
    names = _gate(microsoft, lambda event: microsoft.event_type_and_name(event)[0] == PAGE_LOAD)
    rules = microsoft.hash_rules

    def proof(record: Stored, name: str) -> bool:
        verdict = names(name)
        if verdict == _REFUSED or record.tc:
            return False
        if verdict == _NEEDS_MORE and not record.url:
            return False
        if record.u.ip:
            return True
        ids = _ids(record, rules)
        return bool(ids.get("em") or ids.get("ph") or ids.get("external_id"))

    return proof


def _x(destination: X) -> Proof:
    names, rules = _gate(destination), destination.hash_rules

    def proof(record: Stored, name: str) -> bool:
        if names(name) == _REFUSED or record.tc:
            return False
        if _click(record, "twclid"):
            return True
        ids = _ids(record, rules)
        return bool(ids.get("em") or ids.get("ph"))

    return proof


def _ga4(destination: GA4) -> Proof:
    names = _gate(destination)

    def proof(record: Stored, name: str) -> bool:
        if names(name) == _REFUSED or record.ch != _PROBE_CHANNEL:
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

    return proof
