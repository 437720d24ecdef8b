"""A raw HTTP/1.1 keep-alive client for the fast-lane tests: bytes out exactly as written."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.web.fastlane import LANE, Lane


@dataclass
class Answer:
    """One parsed answer: `fields` in order (names lower-cased), `headers` by name (a repeated
    header keeps its last value there; `all` gives every value)."""

    status: int
    fields: list[tuple[str, str]]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.fields)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]

    def comparable(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, every header but Date (sorted), body: what two servers must agree on."""
        return self.status, sorted(h for h in self.fields if h[0] != "date"), self.body


class Conn:
    """One raw keep-alive connection: bytes out exactly as written, answers parsed back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        fields: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields.append((name.strip().lower(), value.strip()))
        length = int(dict(fields).get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 5) if length else b""
        return Answer(int(lines[0].split(" ")[1]), fields, body)

    async def ask(self, data: bytes) -> Answer:
        await self.send(data)
        return await self.answer()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    def close(self) -> None:
        self.writer.close()


async def connect(host: str, port: int) -> Conn:
    reader, writer = await asyncio.open_connection(host, port)
    return Conn(reader, writer)


@dataclass
class LaneClient:
    """A test server's fast lane and raw connections to it (`client`: the aiohttp test client)."""

    client: Any

    @property
    def lane(self) -> Lane:
        lane: Lane = self.client.app[LANE]
        return lane

    async def connect(self) -> Conn:
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        return Conn(reader, writer)
