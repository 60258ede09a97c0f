"""The hand-kept series expose as standard Prometheus counters and histograms."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.runtime import state
from llmgw_proxy.telemetry import metrics

LABELS = {"route": "r", "provider": "p", "model": "m"}


def observed(*durations: float) -> metrics.Metrics:
    m = metrics.Metrics(state.Live(time.monotonic))
    for d in durations:
        m.observe("r", "p", "m", 200, d, None, None, None)
    return m


@pytest.mark.parametrize(
    ("value", "le", "count"),
    [
        pytest.param(0.005, "0.005", 1.0, id="on-a-bound-counts-in-it"),
        pytest.param(0.0051, "0.005", 0.0, id="just-above-a-bound-does-not"),
        pytest.param(0.0051, "0.01", 1.0, id="next-bound"),
        pytest.param(1000.0, "300.0", 0.0, id="beyond-every-bound"),
        pytest.param(1000.0, "+Inf", 1.0, id="always-in-inf"),
    ],
)
def test_places_an_observation_in_cumulative_buckets(value: float, le: str, count: float) -> None:
    m = observed(value)
    assert m.registry.get_sample_value("llmgw_request_duration_seconds_bucket", {**LABELS, "le": le}) == count


@given(st.lists(st.floats(min_value=0, max_value=1e4), max_size=50))
def test_histogram_count_and_sum_match_the_observations(durations: list[float]) -> None:
    m = observed(*durations)
    if not durations:
        assert m.registry.get_sample_value("llmgw_request_duration_seconds_count", LABELS) is None
        return
    assert m.registry.get_sample_value("llmgw_request_duration_seconds_count", LABELS) == len(durations)
    assert m.registry.get_sample_value("llmgw_request_duration_seconds_sum", LABELS) == pytest.approx(
        sum(durations)
    )


def test_counts_requests_by_status_and_tokens_by_kind() -> None:
    m = metrics.Metrics(state.Live(time.monotonic))
    m.observe("r", "p", "m", 200, 0.1, 0.05, 3, 5)
    m.observe("r", "p", "m", 200, 0.1, 0.05, 4, None)
    m.observe("r", "p", "m", 502, 0.1, None, None, None)
    get = m.registry.get_sample_value
    assert get("llmgw_requests_total", {**LABELS, "status": "200"}) == 2
    assert get("llmgw_requests_total", {**LABELS, "status": "502"}) == 1
    assert get("llmgw_tokens_total", {**LABELS, "kind": "prompt"}) == 7
    assert get("llmgw_tokens_total", {**LABELS, "kind": "completion"}) == 5
    assert get("llmgw_upstream_duration_seconds_count", {"provider": "p", "model": "m"}) == 2
