"""gateway/admin_client.py and the replay/resume commands, against a scripted admin API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_TOKEN, base_doc

from gateway import admin_client, cli
from gateway.admin_client import AdminClient, AdminError, Progress, bar


class Api:
    """A local HTTP server answering admin POSTs from a script of (status, body)."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, Any], str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append((self.path, body, self.headers.get("Authorization", "")))
                status, answer = api.answers.pop(0)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[Any]:
    servers: list[Api] = []

    def start(answers: list[tuple[int, dict[str, Any]]]) -> Api:
        server = Api(answers)
        threading.Thread(target=server.server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


def page(
    replayed: int, remaining: int, last: int | None, **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = {"route": "shop:meta", "replayed": replayed, "skipped": 0, "remaining": remaining}
    return 200, {**body, "last_id": last, "paused": False, "paused_reason": None, **extra}


def test_bar() -> None:
    assert bar(0, 1000, width=10) == "[----------]    0/1000   0%"
    assert bar(340, 1000, width=10) == "[###-------]  340/1000  34%"
    assert bar(7, 7, width=4) == "[####] 7/7 100%"
    assert bar(0, 0, width=4) == "[####] 0/0 100%"  # nothing to do is done


def test_all_pages_on_with_the_last_id_and_reports_a_growing_total(api: Any) -> None:
    server = api([page(500, 700, 510), page(500, 300, 1020), page(400, 0, 1500)])
    steps: list[Progress] = []
    client = AdminClient(server.url, ADMIN_TOKEN)
    summary = admin_client.replay(client, "shop:meta", None, "too_old", steps.append)
    assert summary == admin_client.ReplaySummary(1400, 0, None)
    assert steps == [Progress(500, 1200), Progress(1000, 1300), Progress(1400, 1400)]
    assert [r[1]["after"] for r in server.requests] == [0, 510, 1020]
    assert all(r[1]["reason"] == "too_old" and r[1]["all"] is True for r in server.requests)
    assert {r[2] for r in server.requests} == {f"Bearer {ADMIN_TOKEN}"}


def test_ids_go_in_pages_without_duplicates(api: Any) -> None:
    server = api([page(2, 0, 3, skipped=0), page(0, 0, 5, skipped=1, paused=True)])
    server.answers[1][1]["paused_reason"] = "HTTP 401: credentials refused"
    steps: list[Progress] = []
    client = AdminClient(server.url, ADMIN_TOKEN)
    summary = admin_client.replay(client, "shop:meta", [1, 3, 1, 5], None, steps.append, page=2)
    assert [r[1]["ids"] for r in server.requests] == [[1, 3], [5]]
    assert steps == [Progress(2, 3), Progress(3, 3)]
    assert summary == admin_client.ReplaySummary(2, 1, "HTTP 401: credentials refused")


def test_errors_name_the_status_and_the_fields(api: Any) -> None:
    refused = {
        "error": "bad_request",
        "message": "invalid replay request",
        "errors": [{"path": "route", "reason": "required: <site>:<destination>"}],
    }
    server = api([(400, refused), (200, {"replayed": "many"})])
    client = AdminClient(server.url, ADMIN_TOKEN)
    with pytest.raises(AdminError) as info:
        admin_client.resume(client, "")
    assert str(info.value) == (
        "POST /v1/admin/resume answered 400: invalid replay request"
        " (route: required: <site>:<destination>)"
    )
    with pytest.raises(AdminError, match="no valid 'replayed'"):
        admin_client.replay(client, "shop:meta", [1], None, lambda _: None)
    with pytest.raises(AdminError, match="is not an http"):
        AdminClient("ftp://x", ADMIN_TOKEN).post("/v1/admin/resume", {})


def _config(tmp_path: Path, token: str | None = ADMIN_TOKEN) -> Path:
    doc = base_doc(tmp_path)
    path = tmp_path / "gateway.toml"
    lines = ["[server]"]
    if token is not None:
        lines.append(f'admin_token = "{token}"')
    lines += ["[storage]", f'path = "{doc["storage"]["path"]}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_command_warns_about_a_paused_route(
    api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = api([page(3, 0, 9, paused=True, paused_reason="HTTP 401: credentials refused")])
    args = ["replay", "--config", str(_config(tmp_path)), "--route", "shop:meta", "--all"]
    assert cli.main([*args, "--url", server.url]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"replay shop:meta [{'#' * 30}] 3/3 100%",
        "shop:meta: 3 replayed, 0 skipped",
    ]
    assert "warning: shop:meta is paused (HTTP 401: credentials refused)" in err
    assert "signalgate resume --route shop:meta" in err


def test_resume_command_and_its_errors(
    api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {"route": "shop:meta", "was_paused": True, "paused_reason": "x", "released": 4}
    server = api([(200, answer)])
    config = _config(tmp_path)
    assert (
        cli.main(["resume", "--config", str(config), "--route", "shop:meta", "--url", server.url])
        == 0
    )
    assert capsys.readouterr().out == "shop:meta: was paused; 4 waiting rows due now\n"
    assert server.requests[0][:2] == ("/v1/admin/resume", {"route": "shop:meta"})
    no_token = _config(tmp_path, token=None)
    assert cli.main(["resume", "--config", str(no_token), "--route", "shop:meta"]) == 1
    assert "server.admin_token is not set" in capsys.readouterr().err
    missing = str(tmp_path / "nope.toml")
    assert cli.main(["resume", "--config", missing, "--route", "shop:meta"]) == 1
    with pytest.raises(SystemExit) as usage:
        cli.main(["replay", "--config", str(config), "--route", "shop:meta", "--ids", "0"])
    assert usage.value.code == 2
