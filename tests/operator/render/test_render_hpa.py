"""The HPA exists only with autoscaling and targets the gateway's Deployment."""

from __future__ import annotations

import pytest
import renderkit

from llmgw_operator.render import hpa, names


def test_no_autoscaling_no_hpa() -> None:
    assert hpa.render("chat", "ns", renderkit.gateway_spec(replicas=2)) is None


@pytest.mark.parametrize(
    ("targets", "metrics"),
    [
        pytest.param({"targetCPUUtilizationPercentage": 70}, [("cpu", 70)], id="cpu"),
        pytest.param({"targetMemoryUtilizationPercentage": 80}, [("memory", 80)], id="memory"),
        pytest.param(
            {"targetCPUUtilizationPercentage": 70, "targetMemoryUtilizationPercentage": 80},
            [("cpu", 70), ("memory", 80)],
            id="both",
        ),
    ],
)
def test_targets_the_deployment_with_the_declared_metrics(
    targets: dict[str, int], metrics: list[tuple[str, int]]
) -> None:
    rendered = hpa.render(
        "chat", "ns", renderkit.gateway_spec(autoscaling={"minReplicas": 2, "maxReplicas": 7} | targets)
    )
    assert rendered is not None
    assert rendered["apiVersion"] == "autoscaling/v2"
    assert rendered["metadata"]["labels"] == names.labels("chat")
    spec = rendered["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 7)
    assert [
        (m["resource"]["name"], m["resource"]["target"]["averageUtilization"]) for m in spec["metrics"]
    ] == metrics
    assert all(m["resource"]["target"]["type"] == "Utilization" for m in spec["metrics"])
