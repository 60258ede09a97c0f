from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import limits

from .conftest import FakeClock


def limiter(
    clock: FakeClock,
    provider: config.RateLimit | None = None,
    models: dict[str, config.RateLimit] | None = None,
) -> limits.ProviderLimiter:
    return limits.ProviderLimiter(provider, models or {}, clock)


def admitted(result: limits.Reservation | limits.Refused) -> limits.Reservation:
    assert isinstance(result, limits.Reservation), result
    return result


def refused(result: limits.Reservation | limits.Refused) -> limits.Refused:
    assert isinstance(result, limits.Refused), result
    return result


@pytest.mark.parametrize(
    ("model", "body", "reserved"),
    [
        pytest.param("m", {"prompt": "x" * 40}, 10 + 100, id="provider-default-budget"),
        pytest.param("small", {"prompt": "x" * 40}, 10 + 7, id="model-default-budget"),
        pytest.param("small", {"prompt": "x" * 40, "max_tokens": 3, "n": 2}, 10 + 6, id="asked-budget"),
    ],
)
def test_admitting_a_body_reserves_its_prompt_estimate_and_completion_budget(
    clock: FakeClock, model: str, body: dict[str, object], reserved: int
) -> None:
    lim = limiter(
        clock,
        config.RateLimit(tokens_per_minute=1000, default_max_tokens=100),
        {"small": config.RateLimit(tokens_per_minute=1000, default_max_tokens=7)},
    )
    assert admitted(lim.admit(model, "completions", body)).tokens == reserved
    assert lim.headers(model).remaining_tokens == pytest.approx(1000 - reserved, abs=1)  # floored


def test_a_provider_without_limits_admits_everything_at_once(clock: FakeClock) -> None:
    lim = limiter(clock)
    for _ in range(1000):
        assert admitted(lim.acquire("gpt-4o", 10_000)).wait == 0


def test_the_burst_defaults_to_the_per_minute_figure(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=3))
    for _ in range(3):
        admitted(lim.acquire("m", 0))
    refusal = refused(lim.acquire("m", 0))
    assert refusal.reason == "requests"
    assert refusal.retry_after == pytest.approx(20.0)


def test_a_refusal_carries_openai_style_headers(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=60, tokens_per_minute=1000, request_burst=2))
    admitted(lim.acquire("m", 600))
    refusal = refused(lim.acquire("m", 600))
    assert refusal.reason == "tokens"
    assert refusal.retry_after == pytest.approx(12.0)
    assert refusal.headers.as_dict() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "400",
        "x-ratelimit-reset-tokens": "36s",
    }


def test_with_max_wait_a_request_is_told_how_long_to_wait_instead_of_refused(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=60, request_burst=1, max_wait=5))
    assert admitted(lim.acquire("m", 0)).wait == 0
    assert admitted(lim.acquire("m", 0)).wait == pytest.approx(1.0)
    assert admitted(lim.acquire("m", 0)).wait == pytest.approx(2.0), "waiters queue, not stampede"


def test_a_wait_longer_than_max_wait_is_refused(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=60, request_burst=1, max_wait=1.5))
    admitted(lim.acquire("m", 0))
    admitted(lim.acquire("m", 0))
    assert refused(lim.acquire("m", 0)).retry_after == pytest.approx(2.0)


def test_model_limits_apply_on_top_of_the_provider_limit(clock: FakeClock) -> None:
    lim = limiter(
        clock,
        config.RateLimit(requests_per_minute=100),
        {"small": config.RateLimit(requests_per_minute=1)},
    )
    admitted(lim.acquire("small", 0))
    assert refused(lim.acquire("small", 0)).reason == "requests"
    admitted(lim.acquire("other", 0))


def test_a_refusal_by_one_bucket_takes_nothing_from_the_others(clock: FakeClock) -> None:
    lim = limiter(
        clock,
        config.RateLimit(requests_per_minute=2, tokens_per_minute=100),
        {"m": config.RateLimit(tokens_per_minute=10)},
    )
    refused(lim.acquire("m", 50))
    refused(lim.acquire("m", 50))
    # had either refusal taken a request slot, one of these would be refused
    admitted(lim.acquire("other", 1))
    admitted(lim.acquire("other", 1))


def test_a_request_larger_than_the_token_burst_is_refused_for_good(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(tokens_per_minute=1000, max_wait=60))
    refusal = refused(lim.acquire("m", 1001))
    assert (refusal.reason, refusal.retry_after) == ("too_large", None)


def test_settling_below_the_reservation_refunds_the_difference(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(tokens_per_minute=1000))
    admitted(lim.acquire("m", 800)).settle(100)
    assert lim.headers("m").remaining_tokens == 900


def test_settling_above_the_reservation_goes_into_debt(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(tokens_per_minute=600))
    admitted(lim.acquire("m", 100)).settle(700)
    assert lim.headers("m").remaining_tokens == 0
    refusal = refused(lim.acquire("m", 1))
    assert refusal.retry_after == pytest.approx(10.1)


def test_a_reservation_settles_only_once(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(tokens_per_minute=1000))
    reservation = admitted(lim.acquire("m", 500))
    reservation.settle(0)
    reservation.settle(0)
    reservation.cancel()
    assert lim.headers("m").remaining_tokens == 1000
    admitted(lim.acquire("m", 1000))
    assert lim.headers("m").remaining_tokens == 0


def test_cancelling_gives_back_the_request_slot_and_the_tokens(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=1, tokens_per_minute=100))
    admitted(lim.acquire("m", 100)).cancel()
    admitted(lim.acquire("m", 100))


def test_a_pause_refuses_until_its_end_without_max_wait(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=100))
    lim.pause(clock() + 7)
    refusal = refused(lim.acquire("m", 0))
    assert refusal.reason == "paused"
    assert refusal.retry_after == pytest.approx(7.0)
    clock.step(7)
    admitted(lim.acquire("m", 0))


def test_a_pause_also_applies_to_a_provider_without_limits(clock: FakeClock) -> None:
    lim = limiter(clock)
    lim.pause(clock() + 3)
    assert refused(lim.acquire("m", 0)).retry_after == pytest.approx(3.0)


def test_a_pause_within_max_wait_books_the_request_for_its_end(clock: FakeClock) -> None:
    lim = limiter(clock, config.RateLimit(requests_per_minute=60, request_burst=1, max_wait=10))
    lim.pause(clock() + 4)
    assert admitted(lim.acquire("m", 0)).wait == pytest.approx(4.0)
    assert admitted(lim.acquire("m", 0)).wait == pytest.approx(5.0)


def test_a_shorter_pause_never_shortens_a_longer_one(clock: FakeClock) -> None:
    lim = limiter(clock)
    lim.pause(clock() + 10)
    lim.pause(clock() + 1)
    assert lim.paused_until == clock() + 10


def test_a_request_held_back_is_booked_for_its_start_not_for_the_time_of_asking(clock: FakeClock) -> None:
    lim = limiter(clock, None, {"m": config.RateLimit(tokens_per_minute=60, max_wait=60)})
    lim.pause(clock() + 1)
    assert admitted(lim.acquire("m", 60)).wait == pytest.approx(1.0)
    clock.step(1)
    # booked at the time of asking, the second of refill during the pause would already be back
    assert admitted(lim.acquire("m", 1)).wait == pytest.approx(1.0)


def test_a_request_waits_for_the_slowest_of_its_buckets(clock: FakeClock) -> None:
    lim = limiter(
        clock,
        config.RateLimit(tokens_per_minute=60, max_wait=60),
        {"m": config.RateLimit(requests_per_minute=60, request_burst=1, max_wait=60)},
    )
    admitted(lim.acquire("other", 60))
    assert admitted(lim.acquire("m", 30)).wait == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.0, "0ms", id="zero"),
        pytest.param(0.0201, "21ms", id="milliseconds-round-up"),
        pytest.param(1.5, "1.5s", id="seconds"),
        pytest.param(12.0, "12s", id="whole-seconds"),
        pytest.param(360.0, "6m0s", id="minutes"),
    ],
)
def test_formats_reset_durations_like_openai(seconds: float, text: str) -> None:
    assert limits.format_reset(seconds) == text


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["acquire", "settle", "cancel"]),
            st.floats(0, 5, allow_nan=False),
            st.integers(1, 300),
            st.integers(0, 600),
        ),
        max_size=60,
    ),
)
def test_parallel_requests_never_commit_more_than_the_rate_since_start_plus_burst(
    clock_type: type[FakeClock], ops: list[tuple[str, float, int, int]]
) -> None:
    clock = clock_type(0.0)  # a new bucket is full: as if it had been filling since 0
    lim = limiter(clock, config.RateLimit(tokens_per_minute=600, max_wait=60))
    outstanding: list[limits.Reservation] = []
    settled = 0
    for op, gap, reserve, actual in ops:
        clock.step(gap)
        if op == "acquire":
            result = lim.acquire("m", reserve)
            if isinstance(result, limits.Reservation):
                outstanding.append(result)
                committed = settled + sum(r.tokens for r in outstanding)
                # debt from earlier answers is paid back before anyone else is admitted
                assert committed <= 10 * (clock() + result.wait) + 600 + 1e-6
        elif outstanding:
            reservation = outstanding.pop(actual % len(outstanding))
            if op == "settle":
                reservation.settle(actual)
                settled += actual
            else:
                reservation.cancel()


def test_remaining_share_is_the_tightest_bucket_and_never_negative(clock: FakeClock) -> None:
    assert limiter(clock).remaining_share() is None
    lim = limiter(
        clock,
        provider=config.RateLimit(requests_per_minute=10, tokens_per_minute=1000),
        models={"big": config.RateLimit(requests_per_minute=4)},
    )
    assert lim.remaining_share() == 1.0
    admitted(lim.acquire("big", 100)).settle(100)
    assert lim.remaining_share() == 0.75  # the model's 4-request bucket is the tightest
    admitted(lim.acquire("small", 100)).settle(1500)  # used more than reserved: token debt
    assert lim.remaining_share() == 0.0
