"""Wiring: an `[acme]` config + the TLS file paths + a challenge sink → a renewal task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from gateway.autocert.issuer import AcmeAccount, ChallengeSink, Issued, issue
from gateway.autocert.renewal import Clock, RenewalSettings, Renewer
from gateway.config import AcmeConfig, Config

AUTOCERT = web.AppKey("autocert", Renewer)
log = logging.getLogger("signalgate.acme")
T = TypeVar("T")


def tls_files(config: Config) -> tuple[Path, Path]:
    """Return where the TLS listener reads its certificate chain and key: `[tls]` cert_file and
    key_file, relative to the working directory (certs/cert.pem and certs/key.pem by default).
    """
    return Path(config.tls.cert_file), Path(config.tls.key_file)


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """Run blocking `work` on a daemon thread of its own and await its result.

    Unlike asyncio.to_thread, a cancelled wait leaves nothing for shutdown to join: an order
    can block for minutes on a slow CA, and must not hold the gateway's exit (SIGTERM grace).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the wait was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="acme order", daemon=True).start()
    return await future


def make_renewer(
    acme: AcmeConfig,
    hosts: Sequence[str],
    sink: ChallengeSink,
    cert_file: Path,
    key_file: Path,
    *,
    clock: Clock,
) -> Renewer:
    """Return a Renewer whose orders run `issue` on a thread (the acme library blocks on
    `requests`), so the event loop keeps serving the HTTP-01 answers meanwhile."""
    account = AcmeAccount(
        directory_url=acme.directory_url,
        account_key_file=Path(acme.account_key_file),
        email=acme.email,
        ca_bundle=acme.ca_bundle,
    )
    names = tuple(hosts)

    async def order() -> Issued:
        return await in_daemon_thread(lambda: issue(account, names, sink, cert_file, key_file))

    settings = RenewalSettings(renew_days=acme.renew_days, check_seconds=acme.check_hours * 3600)
    return Renewer(cert_file, names, order, settings, clock=clock, key_file=key_file)


def autocert_ctx(renewer: Renewer) -> Callable[[web.Application], AsyncIterator[None]]:
    """Return an aiohttp cleanup context running `renewer` for the application's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            renewer.ensure_files()
        except (OSError, ValueError) as exc:
            log.warning("ACME: cannot write the placeholder certificate: %s", exc)
        task = asyncio.create_task(renewer.run(), name="acme renewal")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
