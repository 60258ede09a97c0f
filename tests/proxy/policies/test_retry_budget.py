from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import retry_budget

if TYPE_CHECKING:
    from .conftest import FakeClock


def budget(
    clock: FakeClock, ratio: float = 0.2, per_second: float = 1.0, window: float = 10.0
) -> retry_budget.RetryBudget:
    policy = config.Retry(budget_ratio=ratio, budget_min_per_second=per_second, budget_window=window)
    return retry_budget.RetryBudget(policy, clock)


def granted(b: retry_budget.RetryBudget, tries: int) -> int:
    return sum(b.try_retry() for _ in range(tries))


def test_the_floor_allows_min_per_second_times_window_retries_without_requests(clock: FakeClock) -> None:
    assert granted(budget(clock, ratio=0.2, per_second=1.0, window=10.0), 50) == 10


def test_the_ratio_allows_that_share_of_the_requests(clock: FakeClock) -> None:
    b = budget(clock, ratio=0.2, per_second=0.0)
    for _ in range(100):
        b.request()
    assert granted(b, 50) == 20
    assert b.totals() == (100, 20)


def test_a_refused_retry_takes_nothing(clock: FakeClock) -> None:
    b = budget(clock, ratio=0.0, per_second=0.1, window=10.0)
    assert b.try_retry()
    assert not b.try_retry()
    assert b.totals() == (0, 1)


def test_the_window_forgets_what_is_older_than_it(clock: FakeClock) -> None:
    b = budget(clock, ratio=1.0, per_second=0.0, window=10.0)
    for _ in range(5):
        b.request()
    assert granted(b, 10) == 5
    clock.step(9.0)  # still inside the window
    assert not b.try_retry()
    clock.step(2.0)  # the requests and the retries left it together
    assert b.totals() == (0, 0)
    assert not b.try_retry()
    b.request()
    assert b.try_retry()


def test_a_zero_budget_allows_no_retry(clock: FakeClock) -> None:
    b = budget(clock, ratio=0.0, per_second=0.0)
    for _ in range(1000):
        b.request()
    assert not b.try_retry()


class Reference:
    """The budget recomputed from every event ever seen, with the same slot-sized window."""

    def __init__(self, ratio: float, floor: float, window: float) -> None:
        self.ratio, self.floor, self.width = ratio, floor, window / retry_budget.SLOTS
        self.events: list[tuple[int, str]] = []

    def count(self, now: float, kind: str) -> int:
        oldest = math.floor(now / self.width) - retry_budget.SLOTS + 1
        return sum(1 for epoch, k in self.events if k == kind and epoch >= oldest)

    def add(self, now: float, kind: str) -> None:
        self.events.append((math.floor(now / self.width), kind))

    def try_retry(self, now: float) -> bool:
        if self.count(now, "retry") + 1 > self.ratio * self.count(now, "request") + self.floor:
            return False
        self.add(now, "retry")
        return True


OPS = st.lists(
    st.one_of(st.just("request"), st.just("retry"), st.floats(0.0, 6.0, allow_nan=False)), max_size=200
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture is a class
@given(
    OPS,
    st.floats(0.0, 2.0, allow_nan=False),
    st.floats(0.0, 3.0, allow_nan=False),
    st.floats(0.5, 30.0, allow_nan=False),
)
def test_grants_exactly_what_the_stated_rule_allows(
    clock_type: type[FakeClock], ops: list[str | float], ratio: float, per_second: float, window: float
) -> None:
    clock = clock_type()
    b = budget(clock, ratio, per_second, window)
    ref = Reference(ratio, per_second * window, window)
    for op in ops:
        if op == "request":
            b.request()
            ref.add(clock.now, "request")
        elif op == "retry":
            allowed = b.try_retry()
            assert allowed == ref.try_retry(clock.now)
            if allowed:  # the rule held with this retry counted
                requests, retries = b.totals()
                assert retries <= ratio * requests + per_second * window
        else:
            assert isinstance(op, float)
            clock.step(op)
        assert b.totals() == (ref.count(clock.now, "request"), ref.count(clock.now, "retry"))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 500), st.floats(0.0, 1.0, allow_nan=False))
def test_retries_never_exceed_ratio_times_requests_plus_the_floor(
    clock_type: type[FakeClock], requests: int, ratio: float
) -> None:
    clock = clock_type()
    b = budget(clock, ratio, per_second=0.5, window=10.0)
    for _ in range(requests):
        b.request()
    assert granted(b, requests + 100) == math.floor(
        ratio * requests + 0.5 * 10.0
    )  # the largest n with n <= the budget
