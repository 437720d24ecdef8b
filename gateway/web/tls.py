"""HTTPS served by the gateway itself: the TLS context, certificate reload, the redirect port.

`TlsServing.open(config.tls)` reads the certificate chain and key (paths relative to the working
directory, like `storage.path`) and builds one server `SSLContext`: TLS 1.2 or newer, the
default ciphers of `ssl.create_default_context(Purpose.CLIENT_AUTH)`, ALPN `http/1.1`. A file
that cannot be served raises `TlsError`, whose one-line message names the file.

`start()` serves the app's runner on that context (its fast lane too: `FrontProtocol` runs over
the TLS transport exactly as over TCP, and hands the same transport to aiohttp), optionally a
plain listener on `tls.http_port` that answers ACME HTTP-01 challenges and redirects everything
else to https with 308, and a watcher that looks at the two files every `tls.reload_seconds`.

Reload: when a file's inode, size or mtime changed, the pair is read once, checked (parses,
the key matches the leaf) and loaded into a scratch context; only then into the live context,
whose later handshakes use it (connections already open keep theirs). A pair that fails is
logged in one line and the previous certificate stays. Both loads read the same bytes from
anonymous in-memory files (Linux `memfd`), so a file rewritten in between cannot reach the live
context unchecked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config import TlsConfig
from gateway.web.challenge import CHALLENGES, ChallengeStore
from gateway.web.challenge import install as install_challenges

log = logging.getLogger("signalgate.tls")

ALPN: Final = ("http/1.1",)
_HOST_RE: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")

Stamp = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


class TlsError(Exception):
    """A certificate or key that cannot be served; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class CertPair:
    """A checked certificate chain and key, as read from disk."""

    cert_pem: bytes
    key_pem: bytes
    serial: int
    subject: str
    not_after: float
    """End of the leaf's validity (unix seconds)."""

    @property
    def digest(self) -> str:
        """SHA-256 of both files' bytes (a pair read again unchanged is not reloaded)."""
        return hashlib.sha256(self.cert_pem + b"\0" + self.key_pem).hexdigest()


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"tls.{key}: cannot read {path}: {exc.strerror or exc}") from None


def read_pair(cert_file: Path, key_file: Path) -> CertPair:
    """Read and check a certificate chain (leaf first) and its private key."""
    cert_pem = _read(cert_file, "cert_file")
    key_pem = _read(key_file, "key_file")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError(f"tls.cert_file: {cert_file} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"tls.key_file: {key_file} is not an unencrypted PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    leaf = chain[0]
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise TlsError(
            f"tls.key_file: {key_file} is not the key of the first certificate in {cert_file}"
        )
    return CertPair(
        cert_pem,
        key_pem,
        leaf.serial_number,
        leaf.subject.rfc4514_string(),
        leaf.not_valid_after_utc.timestamp(),
    )


def server_context() -> ssl.SSLContext:
    """Return a server context without a certificate: TLS >= 1.2, default ciphers, ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(ALPN))
    return context


@contextlib.contextmanager
def _in_memory(pair: CertPair, cert_file: Path, key_file: Path) -> Iterator[tuple[str, str]]:
    """Yield paths that read the pair's bytes: memfds where the OS has them, else the files."""
    create = getattr(os, "memfd_create", None)
    if create is None or not Path("/proc/self/fd").is_dir():  # pragma: no cover - not Linux
        yield str(cert_file), str(key_file)
        return
    fds: list[int] = []
    try:
        for data in (pair.cert_pem, pair.key_pem):
            fd = create("signalgate-tls", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
        yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
    finally:
        for fd in fds:
            os.close(fd)


def load_pair(context: ssl.SSLContext, pair: CertPair, cert_file: Path, key_file: Path) -> None:
    """Load the pair into `context`, checked first on a scratch context (the live one is only
    touched by a pair OpenSSL accepted)."""
    with _in_memory(pair, cert_file, key_file) as (cert, key):
        try:
            server_context().load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise TlsError(
                f"tls.cert_file: {cert_file} with {key_file} refused by OpenSSL: {exc.reason}"
            ) from None
        context.load_cert_chain(cert, key)


def _stamp_of(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class CertReloader:
    """The live context and the files it came from; `check()` loads a changed, valid pair."""

    def __init__(self, context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.loaded: CertPair | None = None
        """The pair the context serves."""
        self.reloads = 0
        """Pairs loaded after the first."""
        self._stamp: Stamp = (None, None)

    @classmethod
    def open(cls, cert_file: Path, key_file: Path) -> CertReloader:
        """Build the context from the files; raise TlsError when they cannot be served."""
        reloader = cls(server_context(), cert_file, key_file)
        reloader._stamp = reloader._current_stamp()
        pair = read_pair(cert_file, key_file)
        load_pair(reloader.context, pair, cert_file, key_file)
        reloader.loaded = pair
        reloader.warn_if_expired(time.time())
        return reloader

    def _current_stamp(self) -> Stamp:
        return _stamp_of(self.cert_file), _stamp_of(self.key_file)

    def check(self) -> bool:
        """Load the pair if a file changed and the new pair is valid; return whether it did.

        A pair that cannot be served is logged once (until the files change again) and the
        previous certificate stays.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            pair = read_pair(self.cert_file, self.key_file)
            if self.loaded is not None and pair.digest == self.loaded.digest:
                return False
            load_pair(self.context, pair, self.cert_file, self.key_file)
        except TlsError as exc:
            log.warning("TLS certificate not reloaded; the previous one stays: %s", exc)
            return False
        self.loaded = pair
        self.reloads += 1
        log.info("TLS certificate reloaded from %s (serial %x).", self.cert_file, pair.serial)
        self.warn_if_expired(time.time())
        return True

    def warn_if_expired(self, now: float) -> bool:
        """Log one line when the served leaf has expired at `now` (browsers refuse it)."""
        pair = self.loaded
        if pair is None or pair.not_after > now:
            return False
        log.warning(
            "TLS certificate in %s expired %.1f days ago; browsers refuse it.",
            self.cert_file,
            (now - pair.not_after) / 86400,
        )
        return True

    async def run(self, every: float) -> None:
        """Check the files every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                self.check()
            except Exception:  # never let the watcher die; the next round tries again
                log.exception("Checking the TLS certificate files failed.")


def redirect_app(https_port: int, challenges: ChallengeStore) -> web.Application:
    """The plain-HTTP app: ACME challenges from `challenges`, everything else 308 to https on
    the same host and target (`https_port` unless it is 443)."""
    app = web.Application()
    install_challenges(app, challenges)
    port = "" if https_port == 443 else f":{https_port}"

    async def redirect(request: web.Request) -> web.Response:
        match = _HOST_RE.fullmatch(request.headers.get("Host", ""))
        if match is None:
            return web.Response(status=400, text="a Host header is required\n")
        target = request.raw_path
        if not target.startswith("/"):  # absolute-form (`GET http://host/x`): keep path + query
            target = request.rel_url.raw_path_qs
        location = f"https://{match.group(1)}{port}{target}"
        return web.Response(status=308, headers={"Location": location})

    app.router.add_route("*", "/{tail:.*}", redirect)
    return app


class TlsServing:
    """The HTTPS listener of a runner, its certificate watcher and the optional redirect port."""

    def __init__(self, config: TlsConfig, reloader: CertReloader) -> None:
        self.config = config
        self.reloader = reloader
        self.https_port = 0
        """Port of the HTTPS listener, once started."""
        self._redirect: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, config: TlsConfig) -> TlsServing:
        """Load the configured pair; raise TlsError (naming the file) when it cannot be served."""
        return cls(config, CertReloader.open(Path(config.cert_file), Path(config.key_file)))

    @property
    def context(self) -> ssl.SSLContext:
        """The live server context."""
        return self.reloader.context

    async def start(
        self, runner: web.AppRunner, host: str, port: int, *, reuse_port: bool = False
    ) -> None:
        """Serve `runner` (set up) with TLS on host:port, then the redirect port and watcher
        (`reuse_port`: other processes listen on the same ports, `run --workers N`)."""
        site = web.TCPSite(runner, host, port, ssl_context=self.context, reuse_port=reuse_port)
        await site.start()
        self.https_port = port or _bound_port(runner)
        if self.config.http_port:
            challenges = runner.app.get(CHALLENGES) or ChallengeStore()
            redirect = web.AppRunner(redirect_app(self.https_port, challenges), access_log=None)
            await redirect.setup()
            self._redirect = redirect
            await web.TCPSite(redirect, host, self.config.http_port, reuse_port=reuse_port).start()
        self._watcher = asyncio.create_task(
            self.reloader.run(self.config.reload_seconds), name="tls certificate watcher"
        )

    async def stop(self) -> None:
        """Stop the watcher and the redirect listener (the runner is the caller's)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._redirect is not None:
            await self._redirect.cleanup()
            self._redirect = None


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTPS listener has no TCP address")  # pragma: no cover
