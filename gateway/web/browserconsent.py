"""The consent decision of a browser request, for `POST /e` and the pixel hit mirror alike.

Each site's `ConsentPolicy` (from its config) decides on the request's signals: Sec-GPC, the
explicit consent state (the loader's or the hit's own, else the `_sgc` cookie that remembers
the visitor's choice), the TCF string, the CMP cookie and the region header a trusted upstream
sets. `decide` is pure and the signals repeat, so the decisions are memoised per process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.core.consent import ConsentPolicy, Decision, Signals, Tier, decide
from gateway.core.event import Consent
from gateway.web.pipeline import Site

CONSENT_COOKIE: Final = "_sgc"
"""Strictly necessary: remembers the visitor's explicit consent choice (no identifier)."""
TC_COOKIE: Final = "euconsent-v2"
_CONSENT_CODES: Final = {"g": True, "d": False, "u": None}
_MEMO_MAX: Final = 1024
"""Entries kept by the per-process memo of consent decisions."""
_MEMO_VALUE_MAX: Final = 512
"""Signals with a longer TC string or CMP cookie are decided afresh, not memoised."""


class ConsentDecider:
    """Each site's consent policy and the memo of its decisions (shared by collect and hits)."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.policies = {s.config.id: _policy(s) for s in sites}
        self._region_headers = {
            s.config.id: s.config.consent.region_header.lower()
            for s in sites
            if s.config.consent.region_header
        }
        self._decisions: dict[tuple[str, Signals], Decision] = {}
        self._no_signals: dict[str, Decision] = {}
        """Each site's consent decision for a hit without any consent signal."""

    def of_request(
        self,
        site: Site,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        explicit: Consent | None,
    ) -> Decision:
        """Return the consent decision (memoised: `decide` is pure and signals repeat)."""
        cfg = site.config
        cmp_cookie = cfg.consent.cmp_cookie
        region_header = self._region_headers.get(cfg.id)
        signals = Signals(
            gpc=headers.get("sec-gpc", "").strip() == "1",
            consent=explicit,
            tc_string=cookies.get(TC_COOKIE),
            cmp_cookie_value=cookies.get(cmp_cookie) if cmp_cookie else None,
            region=region_of(headers.get(region_header)) if region_header else None,
        )
        return self.decide(site, signals)

    def of_hit(
        self,
        site: Site,
        cookies: Mapping[str, str],
        gpc: bool,
        region: str | None,
        explicit: Consent | None,
    ) -> Decision:
        """A pixel hit's consent decision (`explicit`: the hit's own consent, if any)."""
        cfg = site.config
        if explicit is None and cookies:
            explicit = decode_consent(cookies.get(CONSENT_COOKIE))
        if explicit is None and not cookies and not gpc and region is None:
            decision = self._no_signals.get(cfg.id)  # the usual hit: nothing to read
            if decision is None:
                decision = self._no_signals[cfg.id] = self.decide(site, Signals())
            return decision
        cmp_cookie = cfg.consent.cmp_cookie
        return self.decide(
            site,
            Signals(
                gpc=gpc,
                consent=explicit,
                tc_string=cookies.get(TC_COOKIE),
                cmp_cookie_value=cookies.get(cmp_cookie) if cmp_cookie else None,
                region=region,
            ),
        )

    def decide(self, site: Site, signals: Signals) -> Decision:
        """`decide` for the site's policy, memoised on short signals (it is a pure function);
        the hit proxy shares this memo."""
        key = (site.config.id, signals)
        decision = self._decisions.get(key)
        if decision is None:
            decision = decide(self.policies[site.config.id], signals)
            if (
                len(signals.tc_string or "") <= _MEMO_VALUE_MAX
                and len(signals.cmp_cookie_value or "") <= _MEMO_VALUE_MAX
            ):
                if len(self._decisions) >= _MEMO_MAX:
                    self._decisions.clear()
                self._decisions[key] = decision
        return decision


def _policy(site: Site) -> ConsentPolicy:
    c = site.config.consent
    return ConsentPolicy(
        default=Tier(c.default),
        honor_gpc=c.gpc,
        tcf=c.tcf,
        tcf_vendor_ids=c.tcf_vendor_ids,
        cmp_cookie=c.cmp_cookie,
        cmp_mapping={k: Tier(v) for k, v in c.cmp_mapping.items()},
        ldu_regions=c.ldu_regions,
    )


def region_of(raw: str | None) -> str | None:
    """Return the region a trusted upstream (CDN, nginx GeoIP) put in the configured header."""
    if raw is None:
        return None
    value = raw.strip().upper()
    return value if 0 < len(value) <= 8 and value.replace("-", "").isalnum() else None


def consent_of(raw: Any) -> Consent | None:
    if not isinstance(raw, dict):
        return None
    values: dict[str, bool | None] = {}
    for key in ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"):
        v = raw.get(key)
        values[key] = True if v == "granted" else False if v == "denied" else None
    return Consent(**values)


def encode_consent(c: Consent) -> str:
    return "".join(
        "u" if v is None else "g" if v else "d"
        for v in (c.ad_storage, c.analytics_storage, c.ad_user_data, c.ad_personalization)
    )


def decode_consent(raw: str | None) -> Consent | None:
    if raw is None or len(raw) != 4 or any(ch not in _CONSENT_CODES for ch in raw):
        return None
    return Consent(*(_CONSENT_CODES[ch] for ch in raw))
