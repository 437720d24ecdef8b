"""Serves the first-party loader from memory: placeholder filled, ETag, gzip, cache headers."""

from __future__ import annotations

import gzip
import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

STATIC_DIR: Final = Path(__file__).resolve().parents[2] / "static_js"
LOADER_FILE: Final = STATIC_DIR / "loader.js"
PLACEHOLDER: Final = "__SG_COLLECT__"
CACHE_CONTROL: Final = "public, max-age=3600, stale-while-revalidate=86400"
"""An hour: short enough that a loader fix reaches browsers the same day."""


def collect_reference(loader_path: str, collect_path: str) -> str:
    """Return how the loader should name the collect endpoint.

    Relative when it sits in the loader's directory (so a path-prefix deployment behind the
    shop's own nginx, `/t/sg.js` → `/t/e`, works without telling the gateway the prefix),
    absolute otherwise.
    """
    loader_dir = posixpath.dirname(loader_path) or "/"
    rel = posixpath.relpath(collect_path, loader_dir)
    return rel if not rel.startswith("..") else collect_path


@dataclass(frozen=True, slots=True)
class Asset:
    """One in-memory script with its encodings and validator."""

    body: bytes
    gzipped: bytes
    etag: str

    @classmethod
    def build(cls, text: str) -> Asset:
        """Encode and fingerprint a script."""
        body = text.encode()
        digest = hashlib.sha256(body).hexdigest()[:20]
        return cls(body=body, gzipped=gzip.compress(body, 9, mtime=0), etag=f'"{digest}"')

    def respond(self, request: web.Request) -> web.Response:
        """Return 304 when the browser holds this version, else the (gzipped) bytes."""
        headers = {
            "Cache-Control": CACHE_CONTROL,
            "ETag": self.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if self.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        body = self.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(
            body=body, headers=headers, content_type="application/javascript", charset="utf-8"
        )


def loader_asset(loader_path: str, collect_path: str, source: Path = LOADER_FILE) -> Asset:
    """Return the loader with its collect endpoint filled in."""
    text = source.read_text()
    return Asset.build(text.replace(PLACEHOLDER, collect_reference(loader_path, collect_path)))
