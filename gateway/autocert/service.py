"""Wiring: an `[acme]` config + the TLS file paths + a challenge sink → a renewal task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from aiohttp import web

from gateway.autocert.issuer import AcmeAccount, ChallengeSink, Issued, issue
from gateway.autocert.renewal import Clock, RenewalSettings, Renewer
from gateway.config import AcmeConfig

AUTOCERT = web.AppKey("autocert", Renewer)


def make_renewer(
    acme: AcmeConfig,
    hosts: Sequence[str],
    sink: ChallengeSink,
    cert_file: Path,
    key_file: Path,
    *,
    clock: Clock,
) -> Renewer:
    """Return a Renewer whose orders run `issue` in a worker thread (the acme library blocks on
    `requests`), so the event loop keeps serving the HTTP-01 answers meanwhile."""
    account = AcmeAccount(
        directory_url=acme.directory_url,
        account_key_file=Path(acme.account_key_file),
        email=acme.email,
        ca_bundle=acme.ca_bundle,
    )
    names = tuple(hosts)

    async def order() -> Issued:
        return await asyncio.to_thread(issue, account, names, sink, cert_file, key_file)

    settings = RenewalSettings(renew_days=acme.renew_days, check_seconds=acme.check_hours * 3600)
    return Renewer(cert_file, names, order, settings, clock=clock)


def autocert_ctx(renewer: Renewer) -> Callable[[web.Application], AsyncIterator[None]]:
    """Return an aiohttp cleanup context running `renewer` for the application's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(renewer.run(), name="acme renewal")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
