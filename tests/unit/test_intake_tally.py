"""The intake chart's arithmetic: outcomes to categories, and the p99 from bucket counts."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from infrastructure.intake_tally import BUCKETS_S, _bucket, category, minute_of, quantile


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("accepted", "accepted"),
        ("duplicate", "duplicate"),
        ("conflict", "duplicate"),
        ("parked", "parked"),
        ("invalid_signature", "refused"),
        ("http_503", "refused"),
    ],
)
def test_each_outcome_has_its_category(outcome, expected):
    assert category(outcome) == expected


def test_a_minute_is_keyed_in_utc():
    moment = datetime.fromisoformat("2025-03-04T10:22:59.9-05:00")
    assert minute_of(moment) == "2025-03-04T15:22Z"
    assert minute_of(datetime(2025, 3, 4, 15, 23, tzinfo=UTC)) == "2025-03-04T15:23Z"


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (0.0, "le:0.0025"),
        (0.0025, "le:0.0025"),  # an upper bound belongs to its bucket, as in Prometheus's
        (0.00251, "le:0.005"),
        (0.3, "le:0.5"),
        (BUCKETS_S[-1], f"le:{BUCKETS_S[-1]}"),
        (BUCKETS_S[-1] + 0.001, "le:+Inf"),
    ],
)
def test_an_answer_time_falls_in_the_first_bucket_that_holds_it(seconds, label):
    assert _bucket(seconds) == label


def test_the_quantile_interpolates_within_its_bucket():
    buckets = [(0.01, 50), (0.025, 40), (0.05, 10), (math.inf, 0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.01)
    assert quantile(buckets, 0.7) == pytest.approx(0.01 + 0.015 * 20 / 40)
    assert quantile(buckets, 0.99) == pytest.approx(0.025 + 0.025 * 9 / 10)


def test_a_quantile_past_the_last_bound_is_that_bound_and_none_without_answers():
    assert quantile([(0.01, 1), (10.0, 0), (math.inf, 99)], 0.99) == 10.0
    assert quantile([(0.01, 0), (math.inf, 0)], 0.99) is None
