"""The autoscaling/v2 HorizontalPodAutoscaler for the gateway's Deployment, when one is declared."""

from __future__ import annotations

from typing import Any

from llmgw_operator.api import gateway
from llmgw_operator.render import names


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}},
    }


def render(gateway_name: str, namespace: str, spec: gateway.LLMGatewaySpec) -> dict[str, Any] | None:
    """None without ``spec.autoscaling``: the apply layer then deletes any HPA left from before."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    metrics = []
    if scaling.target_cpu_utilization_percentage is not None:
        metrics.append(_utilization("cpu", scaling.target_cpu_utilization_percentage))
    if scaling.target_memory_utilization_percentage is not None:
        metrics.append(_utilization("memory", scaling.target_memory_utilization_percentage))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.metadata(names.hpa(gateway_name), namespace, gateway_name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names.deployment(gateway_name),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
        },
    }
