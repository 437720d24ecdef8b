"""One ACME order for all hosts, answered over HTTP-01 (synchronous: run it in a thread).

The protocol is certbot's `acme` library; this module only drives it: account key → account
(terms of service agreed) → order → HTTP-01 answers through a ChallengeSink → finalise with a
fresh ECDSA key → fullchain and key written atomically where the TLS server reads them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from gateway.autocert.files import (
    key_pem,
    load_or_create_account_key,
    new_private_key,
    write_atomic,
)

USER_AGENT = "signalgate-autocert"
_SECRETISH = re.compile(r"[A-Za-z0-9_-]{20,}(\.[A-Za-z0-9_-]{20,})?")


class ChallengeSink(Protocol):
    """Where HTTP-01 key authorisations are published (served on the plain listener)."""

    def put(self, token: str, key_authorization: str) -> None: ...

    def remove(self, token: str) -> None: ...


class AcmeFailure(Exception):
    """An order could not be completed; the message is safe to log (no tokens, no keys)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """What an order produced: where it was written and until when it is valid."""

    hosts: tuple[str, ...]
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class AcmeAccount:
    """How to reach the CA and who we are there."""

    directory_url: str
    account_key_file: Path
    email: str | None = None
    ca_bundle: str | None = None
    timeout_seconds: float = 30.0
    order_seconds: float = 180.0


def safe_reason(exc: BaseException) -> str:
    """Return one log-safe line for `exc`: long base64url runs (tokens, key authorisations,
    nonces) are elided, whitespace folded, length bounded."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _SECRETISH.sub("…", text)
    return text if len(text) <= 500 else text[:499] + "…"


def issue(
    account: AcmeAccount,
    hosts: Sequence[str],
    sink: ChallengeSink,
    cert_file: Path,
    key_file: Path,
) -> Issued:
    """Order one certificate for `hosts`, answer its HTTP-01 challenges through `sink`, and
    replace `key_file` and `cert_file` (fullchain PEM). Raise AcmeFailure with a safe reason."""
    _quiet_library_loggers()
    try:
        return _issue(account, tuple(hosts), sink, cert_file, key_file)
    except AcmeFailure:
        raise
    except Exception as exc:  # the library's, requests', file and key errors alike
        raise AcmeFailure(f"{type(exc).__name__}: {safe_reason(exc)}") from exc


def _issue(
    account: AcmeAccount,
    hosts: tuple[str, ...],
    sink: ChallengeSink,
    cert_file: Path,
    key_file: Path,
) -> Issued:
    acme = _client(account)
    cert_key = new_private_key()
    try:
        order = _order(acme, account, hosts, sink, cert_key)
    finally:
        acme.net.session.close()
    chain = order.fullchain_pem.encode()
    leaf = x509.load_pem_x509_certificate(chain)
    # Key first, then the chain: a reloader that looks between the two renames finds a pair
    # that does not match, keeps the old one and picks the new pair up on its next look.
    write_atomic(key_file, key_pem(cert_key), mode=0o600)
    write_atomic(cert_file, chain, mode=0o644)
    return Issued(hosts=hosts, not_after=leaf.not_valid_after_utc)


def _order(
    acme: client.ClientV2,
    account: AcmeAccount,
    hosts: tuple[str, ...],
    sink: ChallengeSink,
    cert_key: ec.EllipticCurvePrivateKey,
) -> messages.OrderResource:
    """Place the order, publish and answer its HTTP-01 challenges, wait for the certificate."""
    csr = crypto_util.make_csr(key_pem(cert_key), list(hosts))
    order = acme.new_order(csr)
    published: list[str] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA remembers a recent validation of this name
            challb = _http01(authz)
            response, validation = challb.response_and_validation(acme.net.key)
            token = challb.chall.encode("token")
            sink.put(token, validation)
            published.append(token)
            acme.answer_challenge(challb, response)
        deadline = _local_naive_now() + dt.timedelta(seconds=account.order_seconds)
        return acme.poll_and_finalize(order, deadline)
    finally:
        for token in published:
            sink.remove(token)


def _client(account: AcmeAccount) -> client.ClientV2:
    jwk = JWKEC(key=load_or_create_account_key(account.account_key_file))
    # `verify_ssl` is handed to requests as `verify`, which also takes a CA bundle path.
    verify: bool | str = account.ca_bundle if account.ca_bundle else True
    net = client.ClientNetwork(
        jwk,
        alg=ES256,
        verify_ssl=verify,  # type: ignore[arg-type]
        user_agent=USER_AGENT,
        timeout=int(account.timeout_seconds),
    )
    directory = client.ClientV2.get_directory(account.directory_url, net)
    acme = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(
        email=account.email, terms_of_service_agreed=True
    )
    try:
        acme.new_account(registration)
    except errors.ConflictError as exists:  # this key already has an account: use it
        acme.net.account = messages.RegistrationResource(
            uri=exists.location, body=messages.Registration()
        )
    return acme


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challb in authz.body.challenges:
        if isinstance(challb.chall, challenges.HTTP01):
            return challb
    name = authz.body.identifier.value
    raise AcmeFailure(f"the CA offers no http-01 challenge for {name}")


def _local_naive_now() -> dt.datetime:
    """The acme library compares deadlines with naive local time."""
    return dt.datetime.now(tz=dt.UTC).astimezone().replace(tzinfo=None)


def _quiet_library_loggers() -> None:
    """The acme library logs request and response bodies (key authorisations, certificates)
    at DEBUG, urllib3 its URLs: keep both at WARNING whatever the gateway's level is."""
    for name in ("acme", "urllib3", "josepy"):
        logging.getLogger(name).setLevel(logging.WARNING)
