"""The operator reports on itself: Prometheus metrics, a readiness probe, refused applies in the status."""

from __future__ import annotations

import copy
import pathlib
import re
import urllib.request

import operatorkit
import pytest
from clusterkit import ClusterHandle
from operatorkit import Namespace, OperatorProcess, eventually
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.cluster

GW = "chat"
# What docs/metrics.md documents and the chart's alerts query (tests/packaging/test_chart.py).
SERIES = {
    "controller_runtime_reconcile_total",
    "controller_runtime_reconcile_errors_total",
    "controller_runtime_reconcile_time_seconds",
    "workqueue_depth",
    "workqueue_adds_total",
    "workqueue_queue_duration_seconds",
    "workqueue_retries_total",
    "llmgw_operator_api_writes_total",
    "llmgw_operator_dataplane_polls_total",
    "llmgw_operator_dataplane_round_seconds",
    "llmgw_operator_gateways",
    "llmgw_operator_dataplane_pods",
}  # llmgw_operator_dataplane_provider_pods needs reporting pods: test_operator_dataplane.py scrapes it


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (http:// built here)
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by (name, sorted labels), parsed with Prometheus's own text parser."""
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def names(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _ in samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_the_documented_series_are_scraped_and_count_what_happened(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    ns.wait(f"llmgw/{GW}", "condition=Ready", timeout=90)
    ns.wait(f"llmgw/{GW}", "jsonpath={.status.config.unreporting}=2", timeout=60)

    samples = scrape(operator_process.metrics_port)
    assert names(samples) >= SERIES
    assert value(samples, "controller_runtime_reconcile_total", controller="llmgateway", result="success") > 0
    assert (
        value(samples, "controller_runtime_reconcile_total", controller="providerpolicy", result="success")
        > 0
    )
    assert value(samples, "llmgw_operator_api_writes_total", verb="apply", kind="Deployment") >= 1
    assert value(samples, "llmgw_operator_api_writes_total", verb="patch", kind="LLMGateway/status") >= 1
    # kwok's pods here have IPs nothing listens on.
    assert value(samples, "llmgw_operator_dataplane_polls_total", result="unreporting") >= 2
    assert value(samples, "llmgw_operator_gateways", condition="Ready", status="True") >= 1
    assert (
        value(samples, "llmgw_operator_dataplane_pods", namespace=ns.name, gateway=GW, state="unreporting")
        == 2
    )
    assert ("workqueue_depth", (("name", "llmgateway"),)) in samples


def test_a_pod_template_the_api_rejects_is_reconciled_false_with_the_apis_message(ns: Namespace) -> None:
    documents = operatorkit.samples()
    gateway = copy.deepcopy(documents[GW])
    # The operator's model and the CRD take any label map; the API refuses this value in a Deployment.
    gateway["spec"]["template"]["metadata"]["labels"]["tier"] = "not a valid label value!"
    ns.apply(*(d for name, d in documents.items() if name != GW), gateway)
    ns.wait(
        f"llmgw/{GW}",
        'jsonpath={.status.conditions[?(@.type=="Reconciled")].reason}=ApplyRefused',
        timeout=60,
    )
    condition = ns.condition(f"llmgw/{GW}", "Reconciled")
    assert condition is not None and condition["status"] == "False"
    assert "the API refused the Deployment" in condition["message"]
    assert "not a valid label value!" in condition["message"] or "Invalid value" in condition["message"]

    ns.patch(f"llmgw/{GW}", {"spec": {"template": {"metadata": {"labels": {"tier": "web"}}}}})
    ns.wait(f"llmgw/{GW}", "condition=Reconciled", timeout=60)


def test_ready_only_after_the_first_listing_has_had_its_passes(
    ns: Namespace, cluster: ClusterHandle, tmp_path: pathlib.Path
) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    ns.wait(f"llmgw/{GW}", "condition=Ready", timeout=90)
    # A second operator for this namespace alone: its passes find everything in place (no writes).
    second = OperatorProcess(cluster.kubeconfig, tmp_path / "second.log", namespaces=ns.name)
    second.start()
    try:
        offset = 0
        ready_line = second.wait_for_log(r"first listing processed: ready", offset, timeout=60)
        text = second.text()[: ready_line.start()]
        assert f"LLMGateway {ns.name}/{GW}: pass done" in text  # the gateway's pass came first
        assert f"ProviderPolicy {ns.name}/primary: pass done" in text

        def answered() -> str | None:
            status, body = get(f"http://127.0.0.1:{second.metrics_port}/readyz")
            return body if status == 200 else None

        body = eventually(answered, 30, "/readyz answering 200")
        assert '"ready"' in body
    finally:
        second.stop()
