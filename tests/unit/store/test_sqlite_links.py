"""SQLite specifics of cross-device links: the version-6 migration and the one-statement read."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from sqlite_files import file_at_version, migrated_memory

from gateway.core.profile import ProfileUpdate
from gateway.store.base import ProfileQuery
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_profiles import _IDENTITIES, find_identities_tx, touch_profile_tx
from gateway.store.sqlite_schema import SCHEMA_VERSION

T0 = 1_790_000_000.0
EM = "e" * 64
PH = "d" * 64


def doc(em: list[str], ph: tuple[str, ...] = ()) -> str:
    hashed = {"em": em, **({"ph": list(ph)} if ph else {})}
    return json.dumps({"c": {"fbclid": ["F", T0]}, "b": {}, "h": {"meta": hashed}})


async def test_a_version_5_file_links_every_visitor_its_profiles_name(tmp_path: Path) -> None:
    """Version 5 kept one visitor per key (the last); the migration keeps that link and adds one
    for every identifier a stored profile holds, so the earlier devices are found too."""
    path = tmp_path / "v5.db"
    with file_at_version(path, 5) as conn:
        rows = [
            ("phone", T0, doc([EM])),
            ("laptop", T0 + 50, doc([EM], (PH,))),
            ("other", T0 + 60, doc(["c" * 64])),
        ]
        for vid, seen, text in rows:
            conn.execute(
                "INSERT INTO profiles(site, visitor_id, first_seen, last_seen, doc)"
                " VALUES ('shop', ?, ?, ?, ?)",
                (vid, seen, seen, text),
            )
        conn.execute("INSERT INTO profile_keys VALUES ('shop', ?, 'laptop')", (f"em:{EM}",))
        conn.execute("INSERT INTO profile_keys VALUES ('shop', 'external_id:x', 'phone')")
    store = SqliteStore(path)
    await store.open()
    try:
        by_em, by_ph, by_x = await store.find_identities(
            "shop",
            [
                ProfileQuery(keys=(f"em:{EM}",)),
                ProfileQuery(keys=(f"ph:{PH}",)),
                ProfileQuery(keys=("external_id:x",)),
            ],
        )
        assert sorted(p.visitor_id for p in by_em.linked) == ["laptop", "phone"]
        assert [p.visitor_id for p in by_ph.linked] == ["laptop"]
        assert [p.visitor_id for p in by_x.linked] == ["phone"]  # the old index's own link
        assert by_em.linked[0].click_ids == {"fbclid": ("F", T0)}
        # New links join the migrated ones.
        em = {"meta": {"em": (EM,)}}
        await store.touch_profile("shop", "tablet", ProfileUpdate(hashed=em), T0 + 100)
        (by_em,) = await store.find_identities("shop", [ProfileQuery(keys=(f"em:{EM}",))])
        assert len(by_em.linked) == 3
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "profile_keys" not in tables
        assert {"profile_links", "profile_links_visitor"} <= tables
        seen = dict(
            conn.execute(
                "SELECT visitor_id, seen FROM profile_links WHERE key = ?", (f"em:{EM}",)
            ).fetchall()
        )
        assert seen == {"phone": T0, "laptop": T0 + 50, "tablet": T0 + 100}


def test_one_statement_per_batch_and_only_index_searches() -> None:
    with closing(migrated_memory()) as conn:
        for i in range(30):
            hashed = {"meta": {"em": (f"{i % 3:064d}",)}}
            update = ProfileUpdate(click_ids={"gclid": f"G{i}"}, hashed=hashed)
            touch_profile_tx(conn, site="shop", visitor_id=f"v{i}", update=update, now=T0 + i)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        queries = [
            ProfileQuery(f"v{i}" if i % 2 else None, (f"em:{i % 3:064d}",)) for i in range(50)
        ]
        found = find_identities_tx(conn, site="shop", queries=queries)
        conn.set_trace_callback(None)
        assert len(statements) == 1
        # Ten visitors per e-mail; a query naming one of them gets the nine others besides it.
        named = [i % 2 == 1 and i < 30 for i in range(50)]
        assert [len(identity.linked) for identity in found] == [9 if n else 10 for n in named]
        assert [identity.named is not None for identity in found] == named
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + _IDENTITIES, {"site": "shop", "vids": "[]", "keys": "[]"}
        ).fetchall()
        scans = [row[3] for row in plan if row[3].startswith("SCAN")]
        assert scans
        assert all("json_each" in detail for detail in scans), scans
