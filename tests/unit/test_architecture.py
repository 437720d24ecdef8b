"""Import boundaries the type checker cannot see: a pure core, HTTP clients in one place."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
FORBIDDEN_IN_CORE = {"aiohttp", "httpx", "sqlite3", "asyncio", "socket", "time", "random", "os",
                     "uuid", "datetime.now", "threading", "subprocess"}  # fmt: skip
PURE_THIRD_PARTY = {"orjson", "msgspec", "phonenumbers"}
"""In-memory codecs and the phone numbering plans (metadata shipped as Python modules): no I/O,
no clock, no randomness."""


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_only_stdlib_pure_modules_and_itself() -> None:
    for path in (GATEWAY / "core").rglob("*.py"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN_IN_CORE, f"{path.name} imports {name}"
            if top == "gateway":
                assert name.startswith("gateway.core"), f"{path.name} imports {name}"
            else:
                assert top in sys.stdlib_module_names | PURE_THIRD_PARTY or top == "__future__", (
                    f"{path.name} imports third-party {name}"
                )


def test_core_never_reads_the_clock() -> None:
    for path in (GATEWAY / "core").rglob("*.py"):
        text = path.read_text()
        for call in ("datetime.now(", "date.today(", ".utcnow(", "time.time("):
            assert call not in text, f"{path.name} calls {call}"


def test_only_the_delivery_exchange_creates_http_clients() -> None:
    """Platform API clients are made in one place (`gateway/delivery/exchange.py`, the delivery
    worker's request mixin), with its limits and timeouts."""
    makers = [
        p.relative_to(GATEWAY).as_posix()
        for p in GATEWAY.rglob("*.py")
        if "AsyncClient(" in p.read_text()
    ]
    assert makers == ["delivery/exchange.py"]


def test_sandbox_imports_nothing_from_the_gateway() -> None:
    for path in (GATEWAY / "sandbox").rglob("*.py"):
        for name in imports_of(path):
            assert not name.startswith("gateway.") or name.startswith("gateway.sandbox"), (
                f"{path.name} imports {name}"
            )
