"""`signalgate replay` and `signalgate resume`: the running gateway's admin API from a shell.

Stdlib only and blocking, like `signalgate healthcheck` (which finds the URL the same way). A
replay of a whole route runs in pages (`POST /v1/admin/replay` with ``all`` and the previous
page's ``last_id`` as ``after``): each dead letter is replayed at most once per command even if
it dies again meanwhile, and progress is reported after every page. Nothing here prints: the
caller gets `Progress` values and a `ReplaySummary` (gateway/cli.py prints them).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

REPLAY_PATH: Final = "/v1/admin/replay"
RESUME_PATH: Final = "/v1/admin/resume"
PAGE: Final = 500
"""Dead letters per replay call (the API takes at most 1,000)."""
MAX_PAGES: Final = 100_000
"""A bound on the page loop (50 million rows at the default page)."""


class AdminError(Exception):
    """The admin API could not be reached or refused the request (message is one line)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Dead letters handled so far of the total known now (the total may grow during a replay
    of a whole route while new dead letters arrive)."""

    done: int
    total: int


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay command did in all."""

    replayed: int
    skipped: int
    paused_reason: str | None
    """Set when the route is paused: the replayed rows wait until it is resumed."""


def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AdminClient:
    """POSTs JSON to one gateway's admin API with its admin token."""

    base_url: str
    token: str
    timeout: float = 10.0

    def post(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """POST `doc`; return the JSON answer of a 2xx, else raise AdminError."""
        if not self.base_url.startswith(("http://", "https://")):
            raise AdminError(f"{self.base_url!r} is not an http(s) URL")
        url = self.base_url.rstrip("/") + path
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url,
            data=json.dumps(doc).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        context = None
        if url.startswith("https:") and _loopback(url):
            # The certificate names the public host, not the loopback address dialled (as in
            # gateway/healthcheck.py); any other host is verified.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(  # noqa: S310 - the scheme is checked above
                request, timeout=self.timeout, context=context
            ) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:
            raise AdminError(f"POST {path} answered {exc.code}: {_message(exc.read())}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise AdminError(f"POST {path} failed: {reason}") from exc
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise AdminError(f"POST {path} answered no JSON") from exc
        if not isinstance(value, dict):
            raise AdminError(f"POST {path} answered no JSON object")
        return value


def _message(body: bytes) -> str:
    """The gateway's error message and field errors, one line."""
    try:
        doc = json.loads(body)
    except ValueError:
        return "no details"
    if not isinstance(doc, dict):
        return "no details"
    text = str(doc.get("message", doc.get("error", "no details")))
    errors = doc.get("errors")
    if isinstance(errors, list) and errors:
        text += " (" + "; ".join(_field(e) for e in errors[:5]) + ")"
    return text[:300]


def _field(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    path = error.get("path") or "(body)"
    return f"{path}: {error.get('reason', '')}"


def _count(answer: dict[str, Any], key: str) -> int:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AdminError(f"the gateway's answer has no valid {key!r}")
    return value


def replay(
    client: AdminClient,
    route: str,
    ids: Sequence[int] | None,
    reason: str | None,
    progress: Callable[[Progress], None],
    page: int = PAGE,
) -> ReplaySummary:
    """Replay these ids of `route` (or all its dead letters, of `reason` if given) in pages."""
    replayed = skipped = 0
    paused: str | None = None
    if ids is not None:
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), page):
            doc: dict[str, Any] = {"route": route, "ids": unique[start : start + page]}
            if reason is not None:
                doc["reason"] = reason
            answer = client.post(REPLAY_PATH, doc)
            replayed += _count(answer, "replayed")
            skipped += _count(answer, "skipped")
            paused = _paused(answer)
            progress(Progress(min(start + page, len(unique)), len(unique)))
        return ReplaySummary(replayed, skipped, paused)
    after = 0
    for _ in range(MAX_PAGES):
        doc = {"route": route, "all": True, "after": after, "limit": page}
        if reason is not None:
            doc["reason"] = reason
        answer = client.post(REPLAY_PATH, doc)
        replayed += _count(answer, "replayed")
        remaining = _count(answer, "remaining")
        paused = _paused(answer)
        progress(Progress(replayed, replayed + remaining))
        last = answer.get("last_id")
        if remaining == 0 or not isinstance(last, int) or isinstance(last, bool) or last <= after:
            break
        after = last
    return ReplaySummary(replayed, skipped, paused)


def _paused(answer: dict[str, Any]) -> str | None:
    if answer.get("paused") is True:
        return str(answer.get("paused_reason") or "paused")
    return None


def resume(client: AdminClient, route: str) -> dict[str, Any]:
    """Resume the route; return the gateway's answer (was_paused, paused_reason, released)."""
    return client.post(RESUME_PATH, {"route": route})


def bar(done: int, total: int, width: int = 30) -> str:
    """Return a text progress bar: ``[#######-------]  340/1000  34%``."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    filled = round(share * width)
    digits = len(str(max(total, 0)))
    percent = round(share * 100)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done:>{digits}}/{total} {percent:>3}%"
