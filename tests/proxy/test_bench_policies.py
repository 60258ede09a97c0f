"""The policy-cost benchmark measures what it says: every request a cache miss, answered."""

from __future__ import annotations

import pytest

from llmgw_dev import bench_policies


@pytest.mark.parametrize(
    ("mode", "entries"),
    [pytest.param("policies", 30, id="policies-on-stores-each-answer"), pytest.param("plain", 0, id="plain")],
)
async def test_each_benchmark_request_is_answered_and_misses_the_cache(mode: str, entries: int) -> None:
    _, stored = await bench_policies.serve(mode, 30, 0)
    assert stored == entries


def test_the_benchmark_bodies_are_unique_and_of_one_length() -> None:
    bodies = {bench_policies.body(i) for i in range(1000)}
    assert len(bodies) == 1000
    assert len({len(b) for b in bodies}) == 1
