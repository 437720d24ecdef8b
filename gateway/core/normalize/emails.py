"""The e-mail rules (em): Meta's, and Google's and Reddit's steps on top of it."""

from __future__ import annotations

import re
from typing import Final

from gateway.core.normalize.rule import Dropped

_EMAIL_RE: Final = re.compile(
    r'[^@\s<>()\[\]\\,;:"]+@[^@.\s<>()\[\]\\,;:"]+(?:\.[^@.\s<>()\[\]\\,;:"]+)+'
)
"""One '@' between a non-empty local part and a domain of two or more non-empty dot-separated
labels; no whitespace or ``<>()[]\\,;:"`` anywhere."""
_NOT_EMAIL: Final = Dropped("not an email address")


def _email(value: str, _default: str | None) -> str | Dropped:
    """Trim + lowercase, then require a plausible address."""
    text = value.lower()
    if len(text) > 254:
        return Dropped("email address too long")
    if _EMAIL_RE.fullmatch(text) is None or not text.isprintable():
        return _NOT_EMAIL
    return text


_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})


def _email_google(value: str, default: str | None) -> str | Dropped:
    """Meta's email rule plus Google's: gmail/googlemail lose local-part dots and '+tag'."""
    text = _email(value, default)
    return text if isinstance(text, Dropped) else _gmail(text)


def _gmail(text: str) -> str | Dropped:
    """Google's step on an address Meta's rule kept (see `_email_google`)."""
    local, domain = text.split("@")
    if domain in _GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            return _NOT_EMAIL
    return f"{local}@{domain}"


_NOT_ALNUM_RE: Final = re.compile(r"[^a-z0-9]+")


def _email_reddit(value: str, default: str | None) -> str | Dropped:
    """Meta's email rule, then Reddit's: on every domain the local part loses its '+tag' and
    every character but ASCII letters and digits ("Al.ice$+Apple@Example.Com" → "alice@…")."""
    text = _email(value, default)
    return text if isinstance(text, Dropped) else _reddit_local(text)


def _reddit_local(text: str) -> str | Dropped:
    """Reddit's step on an address Meta's rule kept (see `_email_reddit`)."""
    local, domain = text.split("@")
    local = _NOT_ALNUM_RE.sub("", local.split("+", 1)[0])
    if not local:
        return _NOT_EMAIL
    return f"{local}@{domain}"
