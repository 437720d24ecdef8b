"""SQL that both stores run unchanged: statements whose text is the same on SQLite and PostgreSQL.

The SQLite store (gateway/store/sqlite*.py) and the PostgreSQL store (gateway/store/postgres*.py)
keep the same tables, so a statement without parameters (or a fragment a store completes with
its own) is often the same to the byte on both engines; it is written once, here. Statements
with parameters differ in placeholder style (``?`` against ``$1``) and stay with their store.
"""

from __future__ import annotations

from typing import Final

ROUTES: Final = """
WITH RECURSIVE r(route) AS (
    SELECT (SELECT min(route) FROM deliveries)
    UNION ALL
    SELECT (SELECT min(route) FROM deliveries WHERE route > r.route) FROM r
    WHERE r.route IS NOT NULL
)
SELECT route FROM r WHERE route IS NOT NULL
"""
"""Every route with rows, one index probe each (no scan of the outbox)."""

DELIVERY_INFO: Final = """
SELECT d.id, d.route, e.event_name, e.event_id, d.state, d.attempts, d.reason, d.updated_at
FROM deliveries d JOIN events e ON e.id = d.event_ref
"""
"""The columns of a `DeliveryInfo` (a delivery row and its event); each store appends the
WHERE / ORDER BY / LIMIT of a listing in its own placeholder style."""

DEDUP_COUNTS: Final = "SELECT route, pair, n FROM dedup_counts"
"""Every duplicate counter: (route, source pair, duplicates)."""

BOOKED_MINUTE: Final = "SELECT minute FROM pairs_booked_at WHERE id = 1"
"""The minute of the last ``dedup_pair`` booking (no row: none yet)."""
