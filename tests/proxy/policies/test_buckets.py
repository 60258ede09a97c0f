from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.policies import buckets


def test_a_new_bucket_is_full() -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=10)
    assert bucket.level(0.0) == 10
    assert bucket.earliest(10, 0.0) == 0.0


def test_refills_continuously_at_the_per_minute_rate() -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=10)
    bucket.book(10, 0.0)
    assert bucket.level(0.0) == 0
    assert bucket.level(0.5) == pytest.approx(0.5)
    assert bucket.level(3.0) == pytest.approx(3.0)
    assert bucket.level(100.0) == 10


def test_an_empty_bucket_says_when_the_amount_fits() -> None:
    bucket = buckets.TokenBucket(per_minute=120, burst=4)
    bucket.book(4, 0.0)
    assert bucket.earliest(1, 0.0) == pytest.approx(0.5)
    assert bucket.earliest(3, 0.0) == pytest.approx(1.5)


def test_booking_ahead_holds_the_place_for_later_callers() -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=2)
    bucket.book(2, 0.0)
    first = bucket.earliest(1, 0.0)
    assert first == pytest.approx(1.0)
    bucket.book(1, first)  # type: ignore[arg-type]
    assert bucket.earliest(1, 0.0) == pytest.approx(2.0)


def test_an_amount_larger_than_the_burst_never_fits() -> None:
    bucket = buckets.TokenBucket(per_minute=6000, burst=100)
    assert bucket.earliest(101, 0.0) is None


def test_debt_from_settling_above_the_reservation_delays_the_next_caller() -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=10)
    bucket.book(10, 0.0)
    bucket.adjust(5, 0.0)
    assert bucket.level(0.0) == pytest.approx(-5)
    assert bucket.earliest(1, 0.0) == pytest.approx(6.0)


def test_a_refund_gives_capacity_back_but_never_beyond_the_burst() -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=10)
    bucket.book(8, 0.0)
    bucket.adjust(-5, 1.0)
    assert bucket.level(1.0) == pytest.approx(8.0)
    bucket.adjust(-50, 1.0)
    assert bucket.level(1.0) == 10


def test_reports_the_seconds_until_full() -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=10)
    assert bucket.full_in(0.0) == 0
    bucket.book(3, 0.0)
    assert bucket.full_in(0.0) == pytest.approx(3.0)


arrivals = st.lists(
    st.tuples(st.floats(0, 30, allow_nan=False), st.integers(1, 12)),
    min_size=1,
    max_size=60,
)


@given(
    per_minute=st.integers(1, 600),
    burst=st.integers(1, 12),
    gaps_and_sizes=arrivals,
    max_wait=st.sampled_from([0.0, 1.0, 30.0]),
    window=st.floats(0, 60, allow_nan=False),
)
def test_any_window_admits_at_most_rate_times_length_plus_burst(
    per_minute: int,
    burst: int,
    gaps_and_sizes: list[tuple[float, int]],
    max_wait: float,
    window: float,
) -> None:
    bucket = buckets.TokenBucket(per_minute=per_minute, burst=burst)
    now = 0.0
    starts: list[tuple[float, int]] = []
    for gap, size in gaps_and_sizes:
        now += gap
        earliest = bucket.earliest(size, now)
        if earliest is not None and earliest - now <= max_wait:
            bucket.book(size, earliest)
            starts.append((earliest, size))
    allowed = bucket.rate * window + burst + 1e-6
    for begin, _ in starts:
        admitted = sum(size for at, size in starts if begin <= at <= begin + window)
        assert admitted <= allowed


@given(
    burst=st.integers(1, 100),
    ops=st.lists(st.tuples(st.floats(0, 10, allow_nan=False), st.integers(-200, 200)), max_size=40),
)
def test_settling_never_lifts_a_bucket_above_its_burst(burst: int, ops: list[tuple[float, int]]) -> None:
    bucket = buckets.TokenBucket(per_minute=60, burst=burst)
    now = 0.0
    for gap, delta in ops:
        now += gap
        bucket.adjust(delta, now)
        assert bucket.level(now) <= burst


@given(
    old_rate=st.integers(1, 100_000),
    old_burst=st.integers(1, 100_000),
    used=st.floats(0, 3, allow_nan=False),
    new_rate=st.integers(1, 100_000),
    new_burst=st.integers(1, 100_000),
    now=st.floats(0, 1e6, allow_nan=False),
)
def test_a_resplit_bucket_keeps_the_fill_as_a_share_of_its_burst(
    old_rate: int, old_burst: int, used: float, new_rate: int, new_burst: int, now: float
) -> None:
    # ``used`` up to 3 bursts: past one, the old bucket is in debt (settled above its reservation).
    old = buckets.TokenBucket(per_minute=old_rate, burst=old_burst)
    old.adjust(used * old_burst, now)
    new = buckets.TokenBucket(per_minute=new_rate, burst=new_burst)
    new.take_fill(old, now)
    share = old.level(now) / old.burst
    assert new.level(now) / new.burst == pytest.approx(share, abs=1e-6)
    assert new.level(now) <= new.burst


def test_a_resplit_of_an_emptied_bucket_admits_nothing_extra() -> None:
    # Two pods at 50 each, one empty; scaled to one pod (100): half of nothing is nothing.
    old = buckets.TokenBucket(per_minute=50, burst=50)
    old.book(50, 0.0)
    new = buckets.TokenBucket(per_minute=100, burst=100)
    new.take_fill(old, 0.0)
    assert new.level(0.0) == pytest.approx(0.0)
    assert new.earliest(1, 0.0) == pytest.approx(0.6)  # then it refills at the new rate
