"""Shared resumes of the PostgreSQL store (`Store.lift_pause` / `resumed_since`, migration 7).

Table ``route_resumes`` is the SQLite store's (gateway/store/sqlite_pauses.py): one row per
route, the time an operator last lifted its credentials pause. Replicas share the database, so
the replica whose worker took ``POST /v1/admin/resume`` records it and every other replica's
paused worker finds it (gateway/delivery/resuming.py). The upsert keeps the later time
(``greatest``): two resumes recorded at once, in either order, leave the newer one. Times are
the callers' clocks, as the leases' are: replicas' clocks must agree (NTP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from gateway.store.postgres_tx import PgHost

PAUSES_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS route_resumes(
    route       text PRIMARY KEY,
    resumed_at  double precision NOT NULL
);
"""
"""The last operator resume of each route (idempotent)."""

_LIFT: Final = """
INSERT INTO route_resumes AS r(route, resumed_at) VALUES ($1, $2)
ON CONFLICT (route) DO UPDATE SET resumed_at = greatest(r.resumed_at, excluded.resumed_at)
"""

_RESUMED: Final = """
SELECT route, resumed_at FROM route_resumes WHERE route = ANY($1::text[]) AND resumed_at > $2
"""


class PostgresPauses:
    """Shared resumes on PostgreSQL: a mixin of `PostgresStore`."""

    async def lift_pause(self: PgHost, route: str, now: float) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(_LIFT, route, now)

    async def resumed_since(
        self: PgHost, routes: Sequence[str], since: float
    ) -> Mapping[str, float]:
        if not routes:
            return {}
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_RESUMED, list(routes), since)
        return {r[0]: float(r[1]) for r in rows}
