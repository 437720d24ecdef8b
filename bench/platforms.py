"""The ad platforms the fan-out and delivery benches enable: one `BenchPlatform` entry each.

`fanout.py` gives a bench site every registered destination (``gateway.destinations.
DESTINATIONS``) with the settings of its entry here, pointing at an unreachable address;
`delivery.py` also starts the entry's sandbox and points the destination at it. Adding a
platform to both benches is one entry in `PLATFORMS`. A registered destination without an
entry, whose settings the gateway's config refuses, or (for the delivery bench) whose sandbox
cannot be imported is skipped with a printed warning, never a crash: `usable` decides.

Every value is synthetic; the tokens are the ones the sandboxes are told to accept.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNREACHABLE = "http://127.0.0.1:9"
"""Where destinations point when nothing is delivered (the discard port; nobody listens)."""


def token(name: str) -> str:
    """The access token the bench gives platform `name` (and its sandbox accepts)."""
    return f"bench-{name}-token"


@dataclass(frozen=True)
class BenchPlatform:
    """How the benches configure one destination and build its sandbox.

    The destination's settings are `ids`, plus the platform's `token` under `auth_setting` and
    the sandbox's base URL under each of `base_settings`. The sandbox is
    ``gateway.sandbox.<module>.<Class>`` (`sandbox` = ``"module:Class"``) built with
    `sandbox_kwargs`, plus ``{sandbox_auth_kwarg: [token]}``.
    """

    sandbox: str
    ids: Mapping[str, Any]
    sandbox_kwargs: Mapping[str, Any] = field(default_factory=dict)
    auth_setting: str | None = "access_token"
    sandbox_auth_kwarg: str | None = "access_tokens"
    base_settings: tuple[str, ...] = ("api_base",)
    base_paths: Mapping[str, str] = field(default_factory=dict)
    """Settings that are a path on the sandbox (Google Ads' OAuth2 `token_url`)."""

    def settings(self, name: str, base: str) -> dict[str, Any]:
        """The `[sites.destinations.<name>]` table sending to `base`."""
        out = dict(self.ids)
        if self.auth_setting:
            out[self.auth_setting] = token(name)
        for key in self.base_settings:
            out[key] = base
        for key, path in self.base_paths.items():
            out[key] = base.rstrip("/") + path
        return out

    def build_sandbox(self, name: str) -> Any:
        """A fresh sandbox object (imports ``gateway.sandbox.<module>``)."""
        module, cls = self.sandbox.split(":")
        kwargs = dict(self.sandbox_kwargs)
        if self.sandbox_auth_kwarg:
            kwargs[self.sandbox_auth_kwarg] = [token(name)]
        return getattr(importlib.import_module(f"gateway.sandbox.{module}"), cls)(**kwargs)


CLICK_IDS: Mapping[str, str] = {"ga": "1234567890.1700000000"}
"""Click ids every bench event carries: the GA client id, which GA4 requires of each event."""

_GOOGLE_ADS_SECRETS: Mapping[str, str] = {
    "client_id": "123456789012-bench.apps.googleusercontent.com",
    "client_secret": "bench-google-client-secret",
    "refresh_token": "bench-google-refresh-token",
    "developer_token": "bench-google-developer-token",
}
"""Google Ads' OAuth2 client, refresh token and developer token, alike for both sides."""

_X_OAUTH: Mapping[str, str] = {
    "consumer_key": "bench-x-consumer-key",
    "consumer_secret": "bench-x-consumer-secret",
    "access_token": "bench-x-access-token",
    "access_token_secret": "bench-x-access-token-secret",
}
"""X signs with OAuth 1.0a: four values, given alike to the destination and its sandbox."""

PLATFORMS: dict[str, BenchPlatform] = {
    "meta": BenchPlatform("meta:MetaSandbox", {"pixel_id": "1234567890"}),
    "tiktok": BenchPlatform("tiktok:TikTokSandbox", {"pixel_code": "CBENCH000000000000AB"}),
    "snap": BenchPlatform("snap:SnapSandbox", {"pixel_id": "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"}),
    "pinterest": BenchPlatform(
        "pinterest:PinterestSandbox",
        {"ad_account_id": "549755885175"},
        {"ad_accounts": ["549755885175"]},
    ),
    "reddit": BenchPlatform(
        "reddit:RedditSandbox", {"pixel_id": "a2_bench1234567"}, {"pixel_ids": ["a2_bench1234567"]}
    ),
    "linkedin": BenchPlatform(
        "linkedin:LinkedInSandbox", {"purchase_rule": "104012"}, {"rules": ["104012"]}
    ),
    "microsoft": BenchPlatform("microsoft:MicrosoftSandbox", {"tag_id": "343012345"}),
    "ga4": BenchPlatform(
        "ga4:GA4Sandbox",
        {"measurement_id": "G-BENCH12345"},
        {"measurement_ids": ["G-BENCH12345"]},
        auth_setting="api_secret",
        sandbox_auth_kwarg="api_secrets",
    ),
    "google_ads": BenchPlatform(
        "google_ads:GoogleAdsSandbox",
        {"customer_id": "1234567890", "purchase_action": "987654321", **_GOOGLE_ADS_SECRETS},
        {**_GOOGLE_ADS_SECRETS, "customers": ["1234567890"], "actions": ["987654321"]},
        auth_setting=None,
        sandbox_auth_kwarg=None,
        base_paths={"token_url": "/token"},
    ),
    "x": BenchPlatform(
        "x:XSandbox",
        {"pixel_id": "o8z6j", "purchase_event_id": "o87ne", **_X_OAUTH},
        {**_X_OAUTH, "event_ids": ["o87ne"], "pixel_ids": ["o8z6j"]},
        auth_setting=None,
        sandbox_auth_kwarg=None,
    ),
}
"""Destination name -> how the benches set it up (one entry per platform)."""


def registered() -> list[str]:
    """The destination names the gateway registers (``gateway.destinations.DESTINATIONS``)."""
    from gateway.destinations import DESTINATIONS

    return list(DESTINATIONS)


def check_settings(name: str, settings: Mapping[str, Any]) -> str | None:
    """Why the gateway's config would refuse `settings` for destination `name`, or None."""
    from gateway.config import ConfigError, parse

    doc = {"sites": [{"id": "check", "api_keys": ["sg_check_key_0123456789"], "destinations": {}}]}
    doc["sites"][0]["destinations"] = {name: dict(settings)}
    try:
        parse(doc, {}, Path("."))
    except ConfigError as exc:
        return str(exc).replace("\n", "; ")
    return None


def usable(names: Iterable[str], *, sandbox: bool) -> list[str]:
    """The `names` the benches can enable, in order; print a warning for each left out (no
    `PLATFORMS` entry, settings refused, or with `sandbox` a sandbox that will not build)."""
    kept = []
    for name in names:
        platform = PLATFORMS.get(name)
        if platform is None:
            warn(f"no bench entry for destination {name!r} (add one to bench/platforms.py)")
            continue
        problem = check_settings(name, platform.settings(name, UNREACHABLE))
        if problem is None and sandbox:
            try:
                platform.build_sandbox(name)
            except Exception as exc:  # an import error, a renamed class or keyword
                problem = f"its sandbox {platform.sandbox} cannot be built: {exc!r}"
        if problem is not None:
            warn(f"destination {name!r} left out: {problem}")
            continue
        kept.append(name)
    return kept


def add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    """--quiet-wait: how long each case waits for an idle machine before it starts anyway."""
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        metavar="S",
        help="seconds each case waits for the machine to go idle (0: start at once; the figures "
        "are then only a smoke test on a busy machine)",
    )


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def toml_value(value: Any) -> str:
    """A TOML literal for a settings value (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def destinations_toml(names: Iterable[str], base: Mapping[str, str] | str) -> str:
    """``[sites.destinations.<name>]`` tables for `names` (after a ``[[sites]]`` table), each
    sending to `base` (one URL for all, or name -> URL)."""
    out = []
    for name in names:
        url = base if isinstance(base, str) else base[name]
        out.append(f"\n[sites.destinations.{name}]")
        for key, value in PLATFORMS[name].settings(name, url).items():
            out.append(f"{key} = {toml_value(value)}")
    return "\n".join(out) + "\n"


def destinations_template(names: Iterable[str], base: Mapping[str, str] | str) -> str:
    """`destinations_toml` with its braces doubled, to follow a config template that is filled
    in with ``str.format``."""
    return destinations_toml(names, base).replace("{", "{{").replace("}", "}}")


def case_label(names: Sequence[str]) -> str:
    """A case named after its destinations: ``10 dest``, or ``1 dest (meta)``."""
    return f"{len(names)} dest" + ("" if len(names) > 1 else f" ({names[0]})")
