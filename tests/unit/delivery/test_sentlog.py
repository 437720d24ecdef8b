"""delivery.sentlog: endpoints lose their query; each event gets its own fate."""

from __future__ import annotations

import httpx

from gateway.core.debuglog import SentLog
from gateway.core.event import Event, Source
from gateway.delivery.sentlog import endpoint_of, fate_of, note_refused, note_sent
from gateway.destinations.base import BatchVerdict, Delivered, Paused, Permanent, Retry
from gateway.store.base import DeadReason, Delivery


def event(i: int) -> Event:
    return Event("Purchase", f"e-{i}", 1_790_000_000, Source.WEBSITE)


def test_endpoint_keeps_no_query_fragment_or_user_info() -> None:
    url = httpx.URL("https://user:pw@www.google-analytics.com:8443/mp/collect?api_secret=s3&x=1#f")
    assert endpoint_of(url) == "https://www.google-analytics.com:8443/mp/collect"
    meta = httpx.URL("https://graph.facebook.com/v25.0/123/events?access_token=tok")
    assert endpoint_of(meta) == "https://graph.facebook.com/v25.0/123/events"


def test_fates() -> None:
    assert fate_of(Delivered()) == ("delivered", None)
    assert fate_of(Retry("HTTP 503", 3.0)) == ("retry", "HTTP 503")
    assert fate_of(Permanent(DeadReason.PLATFORM_REJECTED, "bad email")) == (
        "dead",
        "platform_rejected: bad email",
    )
    assert fate_of(Paused("HTTP 401: credentials refused")) == (
        "paused",
        "HTTP 401: credentials refused",
    )


def test_note_sent_per_event_whole_and_split() -> None:
    request = httpx.Request("POST", "https://tr.example/v3/p/events?access_token=secret-tok")
    log = SentLog(10)
    events = [event(1), event(2)]
    per_event = BatchVerdict(
        Delivered(), (Delivered(), Permanent(DeadReason.PLATFORM_REJECTED, "no id"))
    )
    note_sent(log, request, 200, events, per_event, 5.0)
    note_sent(log, request, 400, events, BatchVerdict(Retry("HTTP 400"), bisect=True), 6.0)
    note_sent(log, request, 503, events[:1], BatchVerdict(Retry("HTTP 503")), 7.0)
    kept = [(e.event.event_id, e.request.status, e.outcome, e.reason) for e in log.newest()]
    assert kept == [
        ("e-1", 503, "retry", "HTTP 503"),
        ("e-2", 400, "split", "HTTP 400"),
        ("e-1", 400, "split", "HTTP 400"),
        ("e-2", 200, "dead", "platform_rejected: no id"),
        ("e-1", 200, "delivered", None),
    ]
    assert all(e.request.endpoint == "https://tr.example/v3/p/events" for e in log.newest())
    assert {e.request.events for e in log.newest()} == {1, 2}


def test_note_refused_keeps_what_could_be_read() -> None:
    log = SentLog(10)
    rows = [Delivery(i, "shop:x", "Purchase", f"e-{i}", 1.0, b"", 0, 1.0) for i in (1, 2)]
    decoded = {1: event(1)}
    note_refused(log, rows, lambda r: decoded.get(r.id), "invalid_field: no test mode", 9.0)
    [kept] = log.newest()
    assert kept.event.event_id == "e-1"
    assert kept.request == (9.0, None, None, 0)
    assert (kept.outcome, kept.reason) == ("refused", "invalid_field: no test mode")
