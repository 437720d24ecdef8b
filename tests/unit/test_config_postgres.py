"""`[storage] backend = "postgres"`: its keys, their checks, and the store the app builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pgserver import PgServer

from gateway.app import make_store
from gateway.config import ConfigError, parse
from gateway.lifecycle import StartupError, serve
from gateway.store.postgres import PostgresStore, gateway_store, missing_methods
from gateway.store.postgres_conn import dsn_location

DSN = "postgresql://signalgate:pg-password-0123456789@db.internal:5432/signalgate"
COOKIE = "cookie-secret-0123456789"


def doc(storage: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {"storage": storage, "server": server, "sites": []}


def errors_of(document: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(document, environ or {}, Path("."))
    return dict(info.value.errors)


def test_defaults_keep_sqlite() -> None:
    config = parse({}, {}, Path("."))
    assert config.storage.backend == "sqlite"
    assert config.storage.dsn is None
    assert (config.storage.pool_min, config.storage.pool_max) == (2, 10)


def test_postgres_needs_a_dsn_and_a_shared_cookie_secret() -> None:
    errors = errors_of(doc({"backend": "postgres"}))
    assert errors["storage.dsn"] == "required when storage.backend is postgres"
    assert "same key" in errors["server.cookie_secret"]


def test_pool_bounds_and_dsn_shape_are_checked_without_echoing_the_dsn() -> None:
    errors = errors_of(
        doc({"dsn": "mysql://u:hunter2-secret@h/db", "pool_min": 5, "pool_max": 2}),
    )
    assert errors["storage.pool_max"] == "must be >= storage.pool_min"
    assert errors["storage.dsn"] == "expected a postgresql:// URI"
    assert all("hunter2" not in reason for reason in errors.values())
    assert errors_of(doc({"pool_min": 0}))["storage.pool_min"] == "expected >= 1"
    assert errors_of(doc({"backend": "redis"}))["storage.backend"].startswith("expected one of")


def test_the_dsn_is_a_secret_read_from_the_environment() -> None:
    config = parse(
        doc({"backend": "postgres", "dsn": "env:PG_DSN"}, cookie_secret=COOKIE),
        {"PG_DSN": DSN},
        Path("."),
    )
    assert config.storage.dsn is not None
    assert config.storage.dsn.value == DSN
    assert "pg-password" not in repr(config)
    assert "pg-password" not in str(config.storage)
    errors = errors_of(doc({"dsn": "env:PG_DSN"}))
    assert errors["storage.dsn"] == "environment variable PG_DSN is not set"


def test_the_app_builds_a_postgres_store() -> None:
    assert missing_methods() == []  # every protocol of GatewayStore exists for PostgreSQL
    config = parse(
        doc(
            {"backend": "postgres", "dsn": DSN, "pool_min": 3, "pool_max": 7}, cookie_secret=COOKIE
        ),
        {},
        Path("."),
    )
    store = make_store(config)
    assert isinstance(store, PostgresStore)
    assert (store._pool.min_size, store._pool.max_size) == (3, 7)
    assert store.dedup_seconds == config.delivery.dedup_hours * 3600
    assert store.merge_seconds == config.delivery.merge_seconds


def test_an_incomplete_postgres_store_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build whose PostgresStore lacks part of GatewayStore says what, instead of failing on
    the first request that needs it."""
    monkeypatch.setattr(PostgresStore, "touch_profile", None)  # as if its mixin were absent
    assert missing_methods() == ["touch_profile"]
    document = doc({"backend": "postgres", "dsn": DSN}, cookie_secret=COOKIE)
    reason = errors_of(document)["storage.backend"]
    assert reason == "postgres lacks touch_profile in this build; use sqlite"
    with pytest.raises(ValueError, match="lacks touch_profile"):
        gateway_store(DSN, pool_min=1, pool_max=1, dedup_seconds=1, merge_seconds=0)


async def test_a_postgres_that_cannot_be_opened_stops_start_up_with_one_clear_line(
    pg_server: PgServer, tmp_path: Path
) -> None:
    dsn = f"postgresql://postgres:pw-secret-42@{pg_server.host}:{pg_server.port}/missing_db"
    config = parse(
        doc(
            {"backend": "postgres", "dsn": dsn, "path": str(tmp_path / "unused" / "x.db")},
            cookie_secret=COOKIE,
            port=0,
        ),
        {},
        Path("."),
    )
    with pytest.raises(StartupError) as info:
        await serve(config, delivery=False)
    message = str(info.value)
    assert message == (
        f"cannot open the store on PostgreSQL {pg_server.host}:{pg_server.port}/missing_db:"
        ' database "missing_db" does not exist (SQLSTATE 3D000)'
    )
    assert "pw-secret" not in message
    assert not (tmp_path / "unused").exists()  # no SQLite directory made for a postgres store


def test_dsn_location_never_shows_credentials() -> None:
    assert dsn_location(DSN) == "db.internal:5432/signalgate"
    assert dsn_location("postgresql://u@h/d") == "h:5432/d"
    assert dsn_location("postgresql://u:p@[::1]:99999999/d") == "(unparsable DSN)"
