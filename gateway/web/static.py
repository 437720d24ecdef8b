"""Serves the browser assets from memory (the loader with its placeholder filled, the event-id
shim as is): ETag, gzip, cache headers. The files are package data, read once at start-up."""

from __future__ import annotations

import gzip
import hashlib
import posixpath
from dataclasses import dataclass
from importlib import resources
from typing import Final

from aiohttp import web

ASSET_PACKAGE: Final = "gateway.static_js"
"""Where the browser assets are installed (the repository's static_js/, mapped in setup.py)."""
LOADER: Final = "loader.js"
SHIM: Final = "shim.js"
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


class AssetMissing(Exception):
    """A browser asset a configured route serves is not in the installed package."""

    def __init__(self, role: str, name: str) -> None:
        self.role = role
        self.name = name
        where = ASSET_PACKAGE.replace(".", "/") + "/" + name
        super().__init__(f"{role} asset {where} is missing from the installed package")


def read_asset(name: str, role: str) -> str:
    """Return the text of asset `name` from the installed package, or raise AssetMissing."""
    try:
        return (resources.files(ASSET_PACKAGE) / name).read_bytes().decode("utf-8")
    except (ImportError, OSError, UnicodeDecodeError) as exc:
        raise AssetMissing(role, name) from exc


def loader_asset(loader_path: str, collect_path: str, text: str | None = None) -> Asset:
    """Return the loader with its collect endpoint filled in (`text`: the loader's source)."""
    text = read_asset(LOADER, "loader") if text is None else text
    return Asset.build(text.replace(PLACEHOLDER, collect_reference(loader_path, collect_path)))


def shim_asset(text: str | None = None) -> Asset:
    """Return the event-id shim, served as is."""
    return Asset.build(read_asset(SHIM, "shim") if text is None else text)
