"""Raw PII never reaches disk or logs: it is hashed on arrival."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import auth, runtime_of

from gateway.telemetry import KeyValueFormatter

RAW = ["Jane.Doe@Example.com", "jane.doe@example.com", "6505551212", "Grünwald", "grünwald"]


async def test_raw_pii_is_not_on_disk_nor_in_logs(
    make_config: Any, gateway: Any, meta_sandbox: Any, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    sandbox, base = meta_sandbox
    sandbox.faults.reject_event_ids = {"o-2"}
    caplog.set_level(logging.DEBUG)
    client = await gateway(make_config(base), run_workers=False)
    events = [
        {
            "event": "Purchase",
            "event_id": f"o-{i}",
            "url": "https://shop.example/t",
            "user": {
                "email": "Jane.Doe@Example.com",
                "phone": "(650) 555-1212",
                "last_name": "Grünwald",
                "ip": "203.0.113.7",
                "user_agent": "UA",
            },
            "data": {"value": 1, "currency": "EUR"},
        }
        for i in range(3)
    ] + [{"event": "Lead", "user": {"email": "Jane.Doe@Example.com", "ip": "nope"}}]
    resp = await client.post("/v1/events", json={"events": events}, headers=auth())
    assert resp.status == 202
    assert RAW[0] not in await resp.text()
    await runtime_of(client).workers["shop:meta"].drain()
    await runtime_of(client).store.close()
    await runtime_of(client).store.open()
    formatter = KeyValueFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.db*"))
    for raw in RAW:
        assert raw not in logged
        assert raw.encode() not in on_disk
    assert len(sandbox.recorder.accepted) == 2
