"""Signal-quality figures: histogram quantiles, coverage, the match-key score, redaction."""

from __future__ import annotations

import math
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.quality import (
    MATCH_KEY_WEIGHTS,
    coverage,
    match_key_score,
    quantile,
    redact_sample,
    share,
)
from gateway.core.tally import LATENCY_BUCKETS, RouteTally

INF = float("inf")


def test_quantile_interpolates_within_the_bucket() -> None:
    buckets = [(1.0, 0), (5.0, 10), (15.0, 20), (INF, 20)]
    assert quantile(0.5, buckets) == 5.0
    assert quantile(0.25, buckets) == 1.0 + 4.0 * 0.5
    assert quantile(0.75, buckets) == 5.0 + 10.0 * 0.5
    assert quantile(1.0, buckets) == 15.0


def test_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    assert quantile(0.95, [(1.0, 1), (5.0, 1), (INF, 10)]) == 5.0


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(1.0, 0), (INF, 0)]) is None
    assert quantile(1.5, [(1.0, 1), (INF, 1)]) is None


@given(st.lists(st.floats(0, 10 * 86400), min_size=1, max_size=200), st.floats(0, 1))
def test_quantile_of_a_tally_is_bounded_and_monotone(latencies: list[float], q: float) -> None:
    tally = RouteTally()
    for latency in latencies:
        tally.latency_buckets[
            next((i for i, b in enumerate(LATENCY_BUCKETS) if latency <= b), len(LATENCY_BUCKETS))
        ] += 1
    buckets = tally.cumulative_buckets()
    low = quantile(q, buckets)
    high = quantile(min(1.0, q + 0.1), buckets)
    assert low is not None
    assert high is not None
    assert 0.0 <= low <= high <= LATENCY_BUCKETS[-1]
    assert math.isfinite(high)


def test_coverage_is_per_label_share() -> None:
    identifiers = {("Purchase", "em"): 8, ("Purchase", "ph"): 2, ("Lead", "em"): 1}
    delivered = {"Purchase": 10, "Lead": 4}
    assert coverage(identifiers, delivered, "Purchase") == {"em": 0.8, "ph": 0.2}
    assert coverage(identifiers, delivered, "Lead") == {"em": 0.25}
    assert coverage(identifiers, delivered, "Search") == {}


def test_match_key_weights_add_up_to_ten() -> None:
    assert sum(t.weight for t in MATCH_KEY_WEIGHTS) == 10.0


def test_match_key_score() -> None:
    every = {k: 1.0 for t in MATCH_KEY_WEIGHTS for k in t.kinds}
    assert match_key_score(every) == 10.0
    assert match_key_score({}) == 0.0
    assert match_key_score({"em": 1.0}) == 3.0
    assert match_key_score({"em": 0.5, "gclid": 1.0, "fbc": 0.2}) == 1.5 + 2.0
    # A pair counts the worse-covered half.
    assert match_key_score({"ip": 1.0, "user_agent": 0.5}) == 0.5
    assert match_key_score({"ip": 1.0}) == 0.0


def test_share() -> None:
    assert share(1, 4) == 0.25
    assert share(1, 0) is None


def test_redact_sample_masks_people_and_secrets() -> None:
    text = (
        "user jane.doe@example.com phone +1 (650) 555-1212 em "
        + "a" * 64
        + " access_token=EAAB123secret\nsecond line"
    )
    out = redact_sample(text)
    assert "jane" not in out
    assert "example.com" not in out
    assert "555" not in out
    assert "a" * 30 not in out
    assert "EAAB123secret" not in out
    assert "\n" not in out
    assert "[email]" in out
    assert "[number]" in out
    assert "[hash]" in out
    assert redact_sample("invalid_field: user_agent missing") == "invalid_field: user_agent missing"
    assert redact_sample("the access token has expired") == "the access token has expired"
    assert redact_sample("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"
    assert redact_sample('{"api_secret": "s3cr3t"}') == '{"api_secret": "[redacted]"}'
    assert len(redact_sample("x " * 500)) <= 160
    assert redact_sample(None) == ""


@given(st.emails())
def test_redact_sample_never_keeps_an_email(email: str) -> None:
    assert email not in redact_sample(f"bad value {email} in field")


def test_readme_states_the_weights_of_the_score() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("**Match-key score (an estimate).**", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    rows = rows[1:]  # the header
    assert len(rows) == len(MATCH_KEY_WEIGHTS)
    for row, term in zip(rows, MATCH_KEY_WEIGHTS, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) == term.weight, row
        named = set(re.findall(r"`([^`]+)`", cells[0]))
        assert not named or named == set(term.kinds), row
