"""The order a pass applies a gateway's children in: what pods mount first, together; then what makes pods."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw_operator import reconcile


def manifest(kind: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": kind.lower()}}


@pytest.mark.parametrize(
    ("kinds", "stages"),
    [
        (
            ["ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler"],
            [["ConfigMap", "Secret"], ["Deployment"], ["HorizontalPodAutoscaler"]],
        ),
        (["ConfigMap", "Secret", "Deployment"], [["ConfigMap", "Secret"], ["Deployment"]]),
        (["ConfigMap", "Secret"], [["ConfigMap", "Secret"]]),  # injection mode
    ],
)
def test_mounted_children_go_together_before_the_ones_that_make_pods(
    kinds: list[str], stages: list[list[str]]
) -> None:
    got = reconcile._apply_stages([manifest(k) for k in kinds])
    assert [[m["kind"] for m in stage] for stage in got] == stages
