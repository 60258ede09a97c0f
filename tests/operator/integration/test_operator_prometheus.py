"""A real Prometheus scrapes the operator the way the chart's operator PodMonitor has it scraped:
the target is up, the documented series arrive, and the per-gateway series keep the gateway's
namespace, which the chart's alerts group and describe by."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import operatorkit
import promkit
import pytest
import yaml
from operatorkit import Namespace, OperatorProcess

from llmgw_dev import binaries

pytestmark = pytest.mark.cluster

GW = "chat"
OPERATOR_NAMESPACE = "llmgw-system"
METRICS_PAGE = operatorkit.ROOT / "docs" / "metrics.md"
# Exported once pods report a provider (test_operator_dataplane.py has reporting sidecars); the
# sample gateway's kwok pods here answer no poll.
NEEDS_REPORTING_PODS = {"llmgw_operator_dataplane_provider_pods"}


def documented_operator_series() -> set[str]:
    operator = METRICS_PAGE.read_text().split("## Operator metrics")[1]
    return set(re.findall(r"^\| `([a-z_]+)` \|", operator, flags=re.M))


def operator_pod_monitor_endpoint() -> dict[str, Any]:
    """The chart's operator PodMonitor endpoint, rendered by the pinned helm."""
    proc = subprocess.run(
        [
            str(binaries.ensure("helm")),
            "template",
            "r",
            str(operatorkit.ROOT / "helm" / "llmgw"),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--set",
            "monitoring.operatorPodMonitor.enabled=true",
            "--show-only",
            "templates/operator-podmonitor.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (endpoint,) = yaml.safe_load(proc.stdout)["spec"]["podMetricsEndpoints"]
    result: dict[str, Any] = endpoint
    return result


def test_prometheus_scrapes_the_operator_as_its_pod_monitor_says(
    ns: Namespace, operator_process: OperatorProcess, start_prometheus: promkit.StartPrometheus
) -> None:
    endpoint = operator_pod_monitor_endpoint()
    job = promkit.scrape_job(
        "llmgw-operator",
        f"http://127.0.0.1:{operator_process.metrics_port}",
        # What the Prometheus Operator sets from the operator's pod.
        {"namespace": OPERATOR_NAMESPACE, "pod": "r-llmgw-5f7d-xyz", "container": "operator"},
        honor_labels=bool(endpoint.get("honorLabels", False)),
        path=endpoint["path"],
    )
    prometheus = start_prometheus([job])
    prometheus.wait(prometheus.targets_up, 30, "operator target up")

    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    ns.wait(f"llmgw/{GW}", "condition=Ready", timeout=90)
    ns.wait(f"llmgw/{GW}", "jsonpath={.status.config.unreporting}=2", timeout=60)

    expected = documented_operator_series() - NEEDS_REPORTING_PODS

    def missing() -> set[str]:
        scraped = {re.sub(r"_(bucket|sum|count)$", "", n) for n in prometheus.series_names()}
        return {n for n in expected if n not in scraped}

    prometheus.wait(lambda: not missing(), 30, f"documented operator series {sorted(missing())}")

    # The alerts' `by (namespace, gateway)` and "{{ $labels.namespace }}/{{ $labels.gateway }}"
    # must name the gateway's namespace, not the operator's.
    query = (
        f'max by (namespace, gateway) (llmgw_operator_dataplane_pods{{gateway="{GW}",state="unreporting"}})'
    )

    def gateway_samples() -> list[dict[str, Any]]:
        return [s for s in prometheus.query(query) if float(s["value"][1]) == 2]

    prometheus.wait(lambda: bool(gateway_samples()), 30, "the gateway's unreporting pods")
    assert [s["metric"]["namespace"] for s in gateway_samples()] == [ns.name]
    # The operator's own series carry its pod's namespace.
    depth = prometheus.query('workqueue_depth{name="llmgateway"}')
    assert [s["metric"]["namespace"] for s in depth] == [OPERATOR_NAMESPACE]
