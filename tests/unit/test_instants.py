"""The text forms of an instant: the read tables' sortable one sorts as the instants compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from domain.instants import format_instant, sortable_instant

instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def test_the_sortable_form_is_fixed_width_utc_with_microseconds():
    assert sortable_instant(datetime(2025, 3, 4, 15, 22, 10, tzinfo=UTC)) == (
        "2025-03-04T15:22:10.000000Z"
    )
    eastern = timezone(timedelta(hours=-5))
    assert sortable_instant(datetime(2025, 3, 4, 23, 0, 0, 7, tzinfo=eastern)) == (
        "2025-03-05T04:00:00.000007Z"
    )
    assert sortable_instant(datetime(1, 1, 2, tzinfo=UTC)) == "0001-01-02T00:00:00.000000Z"


@given(instants, instants, offsets)
def test_the_sortable_form_sorts_as_the_instants_compare(first, second, offset):
    a, b = sortable_instant(first.astimezone(offset)), sortable_instant(second)
    assert len(a) == len(b) == 27
    assert (a < b) == (first < second)
    assert (a == b) == (first == second)
    assert datetime.fromisoformat(a) == first


def test_the_api_form_is_rfc_3339_with_a_z():
    assert format_instant(
        datetime(2025, 3, 4, 10, 22, 10, tzinfo=timezone(timedelta(hours=-5)))
    ) == ("2025-03-04T15:22:10Z")
