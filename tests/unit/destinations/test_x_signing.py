"""OAuth 1.0a signing for X: checked against oauthlib's own client and verifier, and a vector."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oauthlib.common import Request
from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import signature, utils

from gateway.destinations.x.signing import Credentials, authorization

URL = "https://ads-api.x.com/12/measurement/conversions/o8z6j"
CREDS = Credentials(
    "xvz1evFS4wEEPTGEFPHBog",
    "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
    "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
    "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
)  # RFC-style sample keys


def oauthlib_header(creds: Credentials, url: str, nonce: str, stamp: int) -> str:
    client = Client(
        creds.consumer_key,
        client_secret=creds.consumer_secret,
        resource_owner_key=creds.token,
        resource_owner_secret=creds.token_secret,
        nonce=nonce,
        timestamp=str(stamp),
    )
    _, headers, _ = client.sign(url, "POST")
    header: str = headers["Authorization"]
    return header


def verified(header: str, url: str, creds: Credentials) -> bool:
    request = Request(url, "POST", None, {"Authorization": header})
    params = utils.parse_authorization_header(header)
    request.params = signature.collect_parameters(
        uri_query=urlsplit(url).query, headers={"Authorization": header}
    )
    request.signature = dict(params)["oauth_signature"]
    request.signature = utils.unescape(request.signature)
    ok: bool = signature.verify_hmac_sha1(request, creds.consumer_secret, creds.token_secret)
    return ok


def test_a_known_vector() -> None:
    """Fixed keys, nonce and time give a fixed HMAC-SHA1 signature (computed once, by hand
    from RFC 5849 §3.4 with Python's hmac — a regression anchor independent of oauthlib)."""
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote

    nonce, stamp = "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg", 1318622958
    params = sorted(
        [
            ("oauth_consumer_key", CREDS.consumer_key),
            ("oauth_nonce", nonce),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", str(stamp)),
            ("oauth_token", CREDS.token),
            ("oauth_version", "1.0"),
        ]
    )
    enc = lambda s: quote(s, safe="~")  # noqa: E731
    base = "&".join(["POST", enc(URL), enc("&".join(f"{enc(k)}={enc(v)}" for k, v in params))])
    key = f"{enc(CREDS.consumer_secret)}&{enc(CREDS.token_secret)}".encode()
    expected = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()
    header = authorization("POST", URL, CREDS, nonce, stamp)
    assert f'oauth_signature="{quote(expected, safe="~")}"' in header


def test_same_header_as_oauthlibs_client() -> None:
    assert authorization("POST", URL, CREDS, "abc123", 1_790_000_000) == oauthlib_header(
        CREDS, URL, "abc123", 1_790_000_000
    )


@settings(max_examples=50, deadline=None, database=None)
@given(
    nonce=st.text("abcdefABCDEF0123456789", min_size=8, max_size=40),
    stamp=st.integers(1_000_000_000, 4_000_000_000),
    secret=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1),
    query=st.sampled_from(["", "?a=1", "?b=x%20y&a=2"]),
)
def test_oauthlib_verifies_every_signature(nonce: str, stamp: int, secret: str, query: str) -> None:
    creds = Credentials("key", secret, "token", secret[::-1])
    header = authorization("POST", URL + query, creds, nonce, stamp)
    assert verified(header, URL + query, creds)
    assert header == oauthlib_header(creds, URL + query, nonce, stamp)
    wrong = Credentials("key", secret + "x", "token", secret[::-1])
    assert not verified(header, URL + query, wrong)


def test_signing_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        authorization("POST", URL, CREDS, "n", 1)
    assert caplog.records == []


def test_credentials_repr_hides_everything() -> None:
    text = repr(CREDS)
    for value in (CREDS.consumer_key, CREDS.consumer_secret, CREDS.token, CREDS.token_secret):
        assert value not in text
