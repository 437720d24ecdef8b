"""OAuth 1.0a HMAC-SHA1 request signing for the X Ads API, done by oauthlib.

X's Ads API authenticates every request with OAuth 1.0a in user context (platforms.md §9): the
app's consumer key and secret and a user's access token and secret sign the method, URL and
`oauth_*` parameters into an `Authorization: OAuth …` header. The JSON body is not part of the
signature (only form-encoded bodies are, RFC 5849 §3.4.1.3.1; X's own SDK signs JSON posts the
same way, without a body hash).

`authorization` is pure: the nonce and the timestamp come in as arguments. The destination gets
them from the clock and nonce source it was given (`Entropy`); the app passes its own clock.

oauthlib's pieces (base string, HMAC-SHA1 with its `Client`'s keys, header rendering) are used
directly rather than `Client.sign`: that method writes the signature base string — which holds
the consumer key and access token — to debug log records, and no log line may carry a
credential. The result is byte-for-byte `Client.sign`'s header
(tests/unit/destinations/test_x_signing.py checks it, and checks it with oauthlib's verifier).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import parameters, signature

SIGNATURE_METHOD: Final = "HMAC-SHA1"
OAUTH_VERSION: Final = "1.0"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The four OAuth 1.0a values: the app's consumer key/secret, the user's token/secret."""

    consumer_key: str
    consumer_secret: str
    token: str
    token_secret: str

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"


@dataclass(frozen=True, slots=True)
class Entropy:
    """Where a signature's timestamp and nonce come from (injected: real, or fixed in tests)."""

    clock: Callable[[], float]
    nonce: Callable[[], str]


def new_nonce() -> str:
    """Return a fresh random nonce (32 hex digits: unique per request, as OAuth asks)."""
    return secrets.token_hex(16)


SYSTEM_ENTROPY: Final = Entropy(time.time, new_nonce)
"""The real clock and nonce source; the app replaces the clock with its own (`with_clock`)."""


def authorization(
    method: str, url: str, credentials: Credentials, nonce: str, timestamp: int
) -> str:
    """Return the `Authorization` header value that signs `method url` (body not signed)."""
    oauth = [
        ("oauth_nonce", nonce),
        ("oauth_timestamp", str(timestamp)),
        ("oauth_version", OAUTH_VERSION),
        ("oauth_signature_method", SIGNATURE_METHOD),
        ("oauth_consumer_key", credentials.consumer_key),
        ("oauth_token", credentials.token),
    ]
    collected = signature.collect_parameters(uri_query=urlsplit(url).query) + oauth
    base = signature.signature_base_string(
        method.upper(),
        signature.base_string_uri(url),
        signature.normalize_parameters(collected),
    )
    keys = Client(
        credentials.consumer_key,
        client_secret=credentials.consumer_secret,
        resource_owner_key=credentials.token,
        resource_owner_secret=credentials.token_secret,
    )
    digest = signature.sign_hmac_sha1_with_client(base, keys)
    header: str = parameters.prepare_headers([*oauth, ("oauth_signature", digest)])["Authorization"]
    return header
