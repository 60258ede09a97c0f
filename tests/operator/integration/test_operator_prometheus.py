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


def rendered(template: str, enable: str) -> dict[str, Any]:
    """One template of the chart with ``enable`` set to true, rendered by the pinned helm."""
    proc = subprocess.run(
        [
            str(binaries.ensure("helm")),
            "template",
            "r",
            str(operatorkit.ROOT / "helm" / "llmgw"),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--set",
            f"{enable}=true",
            "--show-only",
            f"templates/{template}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document: dict[str, Any] = yaml.safe_load(proc.stdout)
    return document


def operator_pod_monitor_endpoint() -> dict[str, Any]:
    """The chart's operator PodMonitor endpoint."""
    monitor = rendered("operator-podmonitor.yaml", "monitoring.operatorPodMonitor.enabled")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    result: dict[str, Any] = endpoint
    return result


def operator_alerts() -> list[dict[str, Any]]:
    rule = rendered("prometheusrule.yaml", "monitoring.prometheusRule.enabled")
    rules: list[dict[str, Any]] = next(g for g in rule["spec"]["groups"] if g["name"] == "llmgw.operator")[
        "rules"
    ]
    return rules


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

    def namespaces() -> set[str]:
        # Earlier tests of the session may have left a gateway of the same name in their own
        # namespaces, with the same operator watching them: look for this one's among them.
        return {
            s["metric"].get("namespace", "") for s in prometheus.query(query) if float(s["value"][1]) == 2
        }

    prometheus.wait(lambda: ns.name in namespaces(), 30, "the gateway's unreporting pods in its namespace")
    assert OPERATOR_NAMESPACE not in namespaces()
    # The operator's own series carry its pod's namespace.
    depth = prometheus.query('workqueue_depth{name="llmgateway"}')
    assert [s["metric"]["namespace"] for s in depth] == [OPERATOR_NAMESPACE]

    # The operator alerts' expressions without their thresholds, on the real series: every label
    # a description names is set where there is data, and the per-gateway one has data.
    with_data = set()
    for alert in operator_alerts():
        core = re.sub(r"\s*(>|==)\s*[0-9.]+\s*$", "", alert["expr"].strip())
        used = set(re.findall(r"\$labels\.(\w+)", alert["annotations"]["description"]))
        for sample in prometheus.query(core):
            with_data.add(alert["alert"])
            assert all(sample["metric"].get(label) for label in used), (alert["alert"], sample["metric"])
    assert "LLMGatewayConfigNotApplied" in with_data
