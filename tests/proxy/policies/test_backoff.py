from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import backoff

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Highest:
    """A random source that always draws the top of the interval, to see the ceiling."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return b


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        pytest.param(config.FailureKind.TIMEOUT, True, id="timeout"),
        pytest.param(config.FailureKind.CONNECTION, True, id="connection"),
        pytest.param(config.FailureKind.SERVER_ERROR, True, id="server-error-kind"),
        pytest.param(408, True, id="408"),
        pytest.param(429, True, id="429"),
        pytest.param(500, True, id="500"),
        pytest.param(502, True, id="502"),
        pytest.param(503, True, id="503"),
        pytest.param(504, True, id="504"),
        pytest.param(501, False, id="501-not-implemented"),
        pytest.param(505, False, id="505"),
        pytest.param(400, False, id="400"),
        pytest.param(401, False, id="401"),
        pytest.param(403, False, id="403"),
        pytest.param(404, False, id="404"),
        pytest.param(409, False, id="409"),
        pytest.param(413, False, id="413"),
        pytest.param(422, False, id="422"),
        pytest.param(200, False, id="200"),
    ],
)
def test_only_transient_outcomes_are_retryable(outcome: int | config.FailureKind, expected: bool) -> None:
    assert backoff.retryable(outcome) is expected


def test_the_ceiling_doubles_per_try_up_to_max_backoff() -> None:
    policy = config.Retry(attempts=10, base_backoff=0.1, max_backoff=1.0)
    rng = Highest()
    delays = [backoff.delay(policy, tries, rng) for tries in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert all(low == 0 for low, _ in rng.asked), "full jitter draws from zero"


def test_gives_up_after_the_configured_attempts() -> None:
    policy = config.Retry(attempts=3)
    assert backoff.delay(policy, 2, random.Random(1)) is not None
    assert backoff.delay(policy, 3, random.Random(1)) is None


def test_a_larger_retry_after_wins() -> None:
    policy = config.Retry(attempts=3, max_backoff=1.0)
    assert backoff.delay(policy, 1, Highest(), retry_after=7.0) == 7.0
    assert backoff.delay(policy, 1, Highest(), retry_after=0.01) == pytest.approx(0.1)


def test_retry_after_is_ignored_when_the_policy_says_so() -> None:
    policy = config.Retry(attempts=3, base_backoff=0.1, honor_retry_after=False)
    assert backoff.delay(policy, 1, Highest(), retry_after=7.0) == pytest.approx(0.1)


def test_never_waits_past_the_deadline() -> None:
    policy = config.Retry(attempts=3)
    assert backoff.delay(policy, 1, Highest(), retry_after=5.0, time_left=4.0) is None
    assert backoff.delay(policy, 1, Highest(), retry_after=3.0, time_left=4.0) == 3.0
    assert backoff.delay(policy, 1, Highest(), time_left=0.0) is None


@given(
    tries=st.integers(1, 9),
    seed=st.integers(0, 2**32),
    base=st.floats(0.01, 5),
    cap=st.floats(0.01, 60),
)
def test_a_delay_stays_within_zero_and_the_ceiling(tries: int, seed: int, base: float, cap: float) -> None:
    policy = config.Retry(attempts=10, base_backoff=base, max_backoff=cap)
    wait = backoff.delay(policy, tries, random.Random(seed))
    assert wait is not None
    assert 0 <= wait <= min(cap, base * 2 ** (tries - 1))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(" 3 ", 3.0, id="whitespace"),
        pytest.param("1.5", 1.5, id="decimal-tolerated"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("Tue, 14 Nov 2023 22:14:20 GMT", 60.0, id="http-date"),
        pytest.param("Tue, 14 Nov 2023 22:14:20 -0000", 60.0, id="http-date-minus-zero"),
        pytest.param("Tue, 14 Nov 2023 22:00:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("-5", None, id="negative"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param("Tue, 99 Nov 2023 25:00:00 GMT", None, id="impossible-date"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parses_retry_after(value: str | None, expected: float | None) -> None:
    assert backoff.parse_retry_after(value, NOW) == expected


@given(st.text())
def test_retry_after_parsing_never_raises(value: str) -> None:
    result = backoff.parse_retry_after(value, NOW)
    assert result is None or result >= 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1500", 1.5, id="millis"),
        pytest.param("20.5", 0.0205, id="fractional"),
        pytest.param("-1", None, id="negative"),
        pytest.param("nan", None, id="nan"),
        pytest.param("x", None, id="garbage"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parses_retry_after_ms(value: str | None, expected: float | None) -> None:
    assert backoff.parse_retry_after_ms(value) == (pytest.approx(expected) if expected else expected)


@pytest.mark.parametrize(
    ("ms", "value", "expected"),
    [
        pytest.param(None, "86400", 60.0, id="a-day-capped"),
        pytest.param(None, "Tue, 14 Nov 2024 22:13:20 GMT", 60.0, id="date-a-year-ahead-capped"),
        pytest.param(None, "Tue, 14 Nov 2023 22:13:50 GMT", 30.0, id="date-within-the-cap"),
        pytest.param(None, "9" * 400, 60.0, id="absurdly-many-digits"),
        pytest.param(None, "12", 12.0, id="within-the-cap"),
        pytest.param("86400000", None, 60.0, id="ms-capped"),
        pytest.param("inf", "5", 5.0, id="garbage-ms-falls-back"),
        pytest.param(None, "-5", None, id="negative"),
        pytest.param(None, "soon", None, id="garbage"),
        pytest.param(None, "1e9", None, id="exponent-is-not-delta-seconds"),
        pytest.param(None, None, None, id="absent"),
    ],
)
def test_an_upstream_retry_after_is_capped_and_garbage_is_ignored(
    ms: str | None, value: str | None, expected: float | None
) -> None:
    assert backoff.retry_after(ms, value, NOW, cap=60.0) == expected


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.floats(0.001, 3600))
def test_a_retry_after_is_never_negative_nor_past_the_cap(
    ms: str | None, value: str | None, cap: float
) -> None:
    seconds = backoff.retry_after(ms, value, NOW, cap)
    assert seconds is None or 0 <= seconds <= cap
