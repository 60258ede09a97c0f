from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import budgets, global_limits


def wall(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC).timestamp()


def test_budget_periods_are_utc_calendar_days_and_months() -> None:
    budget = config.TokenBudget(tokens_per_day=10, tokens_per_month=300)
    day, month = budgets.periods(budget, wall(2026, 12, 31, 23, 59, 30))
    assert (day.name, day.label, day.ends) == ("day", "2026-12-31", wall(2027, 1, 1))
    assert (month.name, month.label, month.ends) == ("month", "2026-12", wall(2027, 1, 1))
    assert day.ttl == 30 + budgets.KEEP + 1
    (feb,) = budgets.periods(config.TokenBudget(tokens_per_month=1), wall(2028, 2, 29, 12))
    assert (feb.label, feb.ends) == ("2028-02", wall(2028, 3, 1))


@given(st.floats(0, 4e9, allow_nan=False))
def test_a_period_holds_its_moment_and_its_key_outlives_it(moment: float) -> None:
    for period in budgets.periods(config.TokenBudget(tokens_per_day=1, tokens_per_month=1), moment):
        assert moment < period.ends
        assert period.ttl >= period.ends - moment + budgets.KEEP


def provider(**fields: object) -> config.Provider:
    return config.Provider.model_validate({"baseUrl": "http://x/v1", "sharedId": "ns/policy", **fields})


def test_plans_name_keys_by_the_policy_and_hold_only_global_limits() -> None:
    p = provider(
        rate_limit=config.RateLimit(requests_per_minute=60, tokens_per_minute=600, scope="global"),
        model_rate_limits={
            "big": config.RateLimit(tokens_per_minute=100, scope="global", default_max_tokens=7),
            "local": config.RateLimit(requests_per_minute=5),
        },
    )
    default, models = global_limits.plans("llmgw", p)
    assert [b.key for b in default.buckets] == ["llmgw:{ns/policy}:p:rq", "llmgw:{ns/policy}:p:tk"]
    assert [b.key for b in models["big"].buckets][-1] == "llmgw:{ns/policy}:m:big:tk"
    assert models["big"].default_max_tokens == 7
    assert len(models["local"].buckets) == 2  # the provider's global buckets only
    keys, args = global_limits.reserve_args(models["big"], 40, [], [])
    assert keys[-1] == "llmgw:{ns/policy}:m:big:tk"
    assert args == [
        3,
        0,
        1.0,
        60,
        1,
        pytest.approx(1e-9),
        10.0,
        600,
        40,
        pytest.approx(1e-9),
        100 / 60,
        100,
        40,
        pytest.approx(1e-9),
    ]


def test_replies_are_read_into_decisions() -> None:
    plan = global_limits.Plan((global_limits.Bucket("k", global_limits.TOKENS, 1.0, 10.0, 0.0),), None, 256)
    assert global_limits.read_reserve(plan, [0, 250_000, 42]) == global_limits.Granted(0.25, (42,))
    assert global_limits.read_reserve(plan, [1, 1, 3_000_000]) == global_limits.Denied("tokens", 3.0)
    assert global_limits.read_reserve(plan, [2, 1]) == global_limits.Denied("too_large", None)
    assert global_limits.read_reserve(plan, [3, 1, 99]) == global_limits.Denied("budget", None, 0, 99)
    for bad in ([], [9], [1, 5, 1], "OK", [b"0"]):
        with pytest.raises(global_limits.BadReply):
            global_limits.read_reserve(plan, bad)


@given(limit=st.integers(1, 10**9), share=st.integers(1, 10_000))
def test_the_fallback_splits_a_global_limit_and_never_falls_short(limit: int, share: int) -> None:
    glob = config.RateLimit(requests_per_minute=limit, scope="global", fallback_share=share)
    split = global_limits.fallback_limit(glob)
    assert split is not None and split.requests_per_minute is not None
    assert split.requests_per_minute * share >= limit
    assert (split.requests_per_minute - 1) * share < limit
    local = config.RateLimit(requests_per_minute=limit)
    assert global_limits.fallback_limit(local) is local
    assert global_limits.local_limit(glob) is None


def test_scripts_ship_with_the_package() -> None:
    assert "redis.call('TIME')" in global_limits.script("global_reserve")
    assert "redis.call('TIME')" in global_limits.script("global_adjust")
    assert global_limits.batch_script().count("redis.call('TIME')") == 1  # once per batch
