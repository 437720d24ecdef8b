"""fastlane.Later: an answer delivered by a call, written by the lane at once."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

from gateway.web.fastlane import Answer, Later
from gateway.web.fastlane_front import FrontProtocol


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        pass


ANSWER: Answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", b"ok")
REQUEST = b"GET /hit HTTP/1.1\r\nHost: x\r\n\r\n"


def connection(answer: Any) -> tuple[FrontProtocol, Transport, Any]:
    lane = types.SimpleNamespace(cached_script=None, answerers=(answer,), body_limit=1000, fast=0)
    server = types.SimpleNamespace(
        lane=lane, loop=asyncio.new_event_loop(), front=set(), tasks=set(), later=0, closing=False
    )
    settled: list[int] = []

    def later_settled() -> None:
        server.later -= 1
        settled.append(server.later)

    server.later_settled = later_settled
    server.settled = settled
    conn = FrontProtocol(server)  # type: ignore[arg-type]
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, server


def test_an_answer_delivered_later_is_written_at_once_and_the_next_request_goes_on() -> None:
    laters: list[Later] = []

    def answerer(request: Any) -> Later:
        laters.append(Later())
        return laters[-1]

    conn, transport, server = connection(answerer)
    conn.data_received(REQUEST + REQUEST)  # pipelined: the second waits for the first
    assert len(laters) == 1
    assert server.later == 1
    assert conn.busy
    assert transport.written == []
    laters[0].resolve(ANSWER)
    assert len(transport.written) == 1
    assert transport.written[0].endswith(b"\r\n\r\nok")
    assert len(laters) == 2, "the pipelined request was taken next"
    assert server.later == 1
    laters[0].resolve((b"HTTP/1.1 500 X\r\n", b"again"))  # the first call counts
    assert len(transport.written) == 1
    laters[1].resolve(ANSWER)
    assert len(transport.written) == 2
    assert server.later == 0
    assert not conn.busy
    assert server.settled == [0, 0]
    server.loop.close()


def test_an_answer_delivered_before_the_lane_attaches_is_written() -> None:
    def answerer(request: Any) -> Later:
        later = Later()
        later.resolve(ANSWER)
        return later

    conn, transport, server = connection(answerer)
    conn.data_received(REQUEST)
    assert len(transport.written) == 1
    assert server.later == 0
    assert not conn.busy
    server.loop.close()


def test_a_failed_answer_is_a_500_and_a_cancelled_one_writes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    laters: list[Later] = []

    def answerer(request: Any) -> Later:
        laters.append(Later())
        return laters[-1]

    conn, transport, server = connection(answerer)
    conn.data_received(REQUEST)
    laters[0].fail(RuntimeError("bug"))
    assert transport.written[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert "Unhandled error." in caplog.text
    conn.data_received(REQUEST)
    laters[1].cancel()
    laters[1].resolve(ANSWER)
    assert len(transport.written) == 1
    assert server.later == 0
    assert conn.busy, "like a cancelled task: the connection waits for shutdown"
    server.loop.close()
