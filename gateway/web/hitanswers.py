"""The browser's answer to a proxied pixel hit (gateway/web/hits.py; the rules are in its
module docstring): the upstream's status, body and types passed back, or 502 when the upstream
failed or redirected; its CORS headers; and, after an explicit consent denial seen by the
mirror, the deletions of the tracking cookies the request carries. A fast lane answer's head is
built once per (status, Content-Type, Content-Encoding) when nothing in it depends on the
request.
"""

from __future__ import annotations

import logging

from gateway.web.collectvisitor import deletions
from gateway.web.cookies import registrable_domain
from gateway.web.fastlane import Answer
from gateway.web.forwarded import TrustedProxies
from gateway.web.hitroutes import HitRoute
from gateway.web.hitupstream import for_client, passed_answer
from gateway.web.hitvalues import MEMO_MAX, HitAnswer, HitRequest, HitStats, Observed
from gateway.web.origins import cors_headers
from gateway.web.pipeline import Site
from gateway.web.upstream import UpstreamAnswer, UpstreamError
from gateway.web.upstream_pool import Exchange

log = logging.getLogger("signalgate.hits")


class HitAnswers:
    """Builds the browser's answer to a hit from its upstream's answer (or failure)."""

    def __init__(self, proxies: TrustedProxies, stats: HitStats) -> None:
        self.proxies = proxies
        self.stats = stats
        """The hit proxy's counters (shared with `HitProxy`)."""
        self._answer_heads: dict[tuple[int, str | None, str | None], tuple[bytes, bool]] = {}
        """(status, Content-Type, Content-Encoding) of an upstream answer → the lane's head for
        it and whether the body is passed (`lane_answer`)."""

    async def answer_of(
        self, exchange: Exchange | UpstreamError, route: HitRoute, hit: HitRequest
    ) -> HitAnswer:
        """The browser's answer: the upstream's status, body and types, or 502."""
        if isinstance(exchange, Exchange):
            result = exchange.outcome()  # usually in by now: the answer came during the mirror
            if result is None:
                try:
                    result = await exchange
                except UpstreamError as exc:
                    result = exc
        else:
            result = exchange
        return self.answer_from(for_client(result, hit), route)

    def lane_answer(
        self,
        result: UpstreamAnswer | UpstreamError,
        route: HitRoute,
        site: Site,
        hit: HitRequest,
        observed: Observed | None = None,
    ) -> Answer:
        """`final(answer_from(…)).encode()`: a forwarded answer's head is built once per
        (status, Content-Type, Content-Encoding) when nothing in it depends on the request
        (CORS, cookie deletions)."""
        result = for_client(result, hit)
        deny = observed is not None and observed.deny
        if not isinstance(result, UpstreamAnswer) or "origin" in hit.headers or deny:
            return self.final(self.answer_from(result, route), site, hit, observed).encode()
        key = (result.status, result.header("content-type"), result.header("content-encoding"))
        found = self._answer_heads.get(key)
        if found is not None:
            self.stats.forwarded += 1
            head, bodied = found
            return head, result.body if bodied else b""
        answer = self.answer_from(result, route)
        encoded = answer.encode()
        if not 300 <= result.status < 400:  # (a redirect is a bad gateway: logged each time)
            if len(self._answer_heads) >= MEMO_MAX:
                self._answer_heads.clear()
            self._answer_heads[key] = (encoded[0], answer.body is not None)
        return encoded

    def answer_from(self, result: UpstreamAnswer | UpstreamError, route: HitRoute) -> HitAnswer:
        if isinstance(result, UpstreamAnswer):
            status = result.status
            if not 300 <= status < 400:
                return self._forward(result, status)
            result = UpstreamError(f"status {status}")
        self.stats.bad_gateway += 1
        log.warning(
            "Hit upstream failed; answered 502 (the mirror still runs).",
            extra={"vendor": route.vendor, "reason": str(result)},
        )
        return HitAnswer.error(502, "bad_gateway", "hit upstream unavailable")

    def _forward(self, resp: UpstreamAnswer, status: int) -> HitAnswer:
        self.stats.forwarded += 1
        return passed_answer(resp, status)

    def final(
        self, answer: HitAnswer, site: Site, hit: HitRequest, observed: Observed | None = None
    ) -> HitAnswer:
        """The answer with its CORS headers (and cookie deletions after an explicit denial)."""
        origin = hit.headers.get("origin")
        if origin is not None:
            cors = cors_headers(origin, hit.host, site.config.allowed_origins)
            if cors:
                answer.headers.update(dict(cors))
        if observed is not None and observed.deny:
            cfg = site.config
            domain = cfg.cookie_domain or registrable_domain(hit.host)
            proto = hit.headers.get("x-forwarded-proto")
            secure = hit.secure or self.proxies.proxied_https(hit.peer, proto)
            lines = deletions(observed.cookies, cfg.visitor_cookie, domain, secure)
            answer.cookies = (*answer.cookies, *lines)
        return answer
