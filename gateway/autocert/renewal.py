"""When to (re)issue the certificate, and the task that checks and renews it.

`renewal_reason` is pure (certificate + hosts + now → why, or None). `Renewer.run` checks at
start and every `check_seconds`; a failed order is logged as one line and retried with a
doubling backoff, never raised: the gateway keeps serving with the certificate it has.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from gateway.autocert.files import is_placeholder, read_certificate, write_placeholder
from gateway.autocert.issuer import AcmeFailure, Issued, safe_reason

log = logging.getLogger("signalgate.acme")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Order = Callable[[], Awaitable[Issued]]


def certificate_names(cert: x509.Certificate) -> set[str]:
    """Return the DNS names of `cert`'s subjectAltName, lower-cased."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def renewal_reason(
    cert: x509.Certificate | None, hosts: Sequence[str], now: dt.datetime, renew_days: float
) -> str | None:
    """Return why a new certificate is needed (no cert, a host not covered, near expiry)."""
    if cert is None:
        return "no certificate yet"
    if is_placeholder(cert):
        return "only the self-signed placeholder so far"
    missing = sorted({h.lower() for h in hosts} - certificate_names(cert))
    if missing:
        return "certificate does not cover " + ", ".join(missing)
    left = cert.not_valid_after_utc - now
    if left < dt.timedelta(days=renew_days):
        return f"certificate expires in {left.total_seconds() / 86400:.1f} days"
    return None


@dataclass(frozen=True, slots=True)
class RenewalSettings:
    """How often to look and how to back off."""

    renew_days: float = 30.0
    check_seconds: float = 12 * 3600.0
    retry_base_seconds: float = 60.0


class Renewer:
    """Keeps the certificate at `cert_file` valid for `hosts` by calling `order` when needed."""

    def __init__(
        self,
        cert_file: Path,
        hosts: Sequence[str],
        order: Order,
        settings: RenewalSettings,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        key_file: Path | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.hosts = tuple(hosts)
        self.order = order
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.failures = 0
        self.renewals = 0

    def ensure_files(self) -> None:
        """Write the self-signed placeholder if there is no certificate yet (so a TLS listener
        can start); the first check then orders the real one."""
        if self.key_file is None:
            return
        now = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC)
        if write_placeholder(self.cert_file, self.key_file, self.hosts, now):
            log.info("ACME: no certificate yet; a self-signed placeholder stands in meanwhile")

    def reason(self) -> str | None:
        """Return why the current certificate must be replaced, or None if it is fine."""
        now = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC)
        try:
            cert = read_certificate(self.cert_file)
        except (OSError, ValueError) as exc:
            return f"current certificate unreadable ({type(exc).__name__})"
        return renewal_reason(cert, self.hosts, now, self.settings.renew_days)

    async def check(self) -> bool:
        """Renew if needed; return True if a new certificate was written. Raises AcmeFailure."""
        why = self.reason()
        if why is None:
            return False
        log.info("ACME: ordering a certificate for %s: %s", ",".join(self.hosts), why)
        issued = await self.order()
        self.renewals += 1
        log.info(
            "ACME: new certificate for %s valid until %s",
            ",".join(issued.hosts),
            issued.not_after.isoformat(timespec="seconds"),
        )
        return True

    async def run(self) -> None:
        """Check now and every `check_seconds`; back off (doubling, capped) after failures."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a CA problem stop the gateway
                self.failures += 1
                delay = self.backoff()
                reason = exc.args[0] if isinstance(exc, AcmeFailure) else safe_reason(exc)
                log.warning(
                    "ACME: certificate order failed (attempt %d), retrying in %.0fs: %s",
                    self.failures,
                    delay,
                    reason,
                )
                await self.sleep(delay)
                continue
            self.failures = 0
            await self.sleep(self.settings.check_seconds)

    def backoff(self) -> float:
        """Return the wait after the current run of failures: base * 2^(n-1), capped at the
        check interval."""
        base = self.settings.retry_base_seconds
        return float(min(base * 2 ** min(self.failures - 1, 30), self.settings.check_seconds))
