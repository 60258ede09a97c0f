"""The data plane in the CR: real sidecars behind kwok pods, polled by the real operator process.

Each gateway's pods land on a fake node whose pod IPs are loopback addresses
(see dataplanekit), and a real ``llmgw-proxy`` serves each pod's IP and admin
port with the config the operator rendered. The operator runs as in
production, polling pod IP and admin port, only with a short period.
"""

from __future__ import annotations

import json
import pathlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from clusterkit import ClusterHandle
from dataplanekit import FakeProviderProcess, Kubelet, ensure_node, pod_template
from operatorkit import Namespace, OperatorProcess, eventually
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.cluster

GW = "chat"
ADMIN_PORT = 19090  # not the default: the operator must take it from the spec
PERIOD = 1.0
# Two poll periods, plus the reconcile pass and the watch that carries the status to kubectl.
WITHIN = int(2 * PERIOD + 20)
# Long enough that the open breaker is still open (not yet half-open) while a loaded machine gets
# through the polls, status writes and scrape that observe it; recovery then waits it out.
OPEN_FOR = 20
REFUSED = 'jsonpath={.status.conditions[?(@.type=="ConfigApplied")].reason}=ReloadRefused'


@pytest.fixture(scope="module")
def operator_args() -> tuple[str, ...]:
    return (f"--data-plane-period={PERIOD}", "--data-plane-timeout=1")


@pytest.fixture(scope="module")
def node(cluster: ClusterHandle) -> None:
    ensure_node(cluster)


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, FakeProviderProcess]]:
    started = {"primary": FakeProviderProcess(), "fallback": FakeProviderProcess()}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture
def kubelet(ns: Namespace, node: None, tmp_path: pathlib.Path) -> Iterator[Kubelet]:
    kit = Kubelet(ns, tmp_path, GW, ADMIN_PORT)
    yield kit
    kit.stop()


def policy(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "ProviderPolicy",
        "metadata": {"name": name},
        "spec": {"provider": "openai-compatible", "baseURL": url + "/v1", "retry": {"attempts": 1}, **spec},
    }


def gateway(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "LLMGateway",
        "metadata": {"name": GW},
        "spec": {
            "replicas": replicas,
            "template": pod_template(),
            "routes": [{"model": "*", "targets": [{"policy": "primary"}, {"policy": "fallback"}]}],
            "proxy": {"adminPort": ADMIN_PORT},
        },
    }


def deploy(
    ns: Namespace, kubelet: Kubelet, providers: dict[str, FakeProviderProcess], replicas: int, serve: int
) -> None:
    """The gateway and its policies; sidecars for the first ``serve`` pods; healthy and applied."""
    for fake in providers.values():
        fake.clear()
    breaker = {"consecutiveFailures": 1, "openDuration": OPEN_FOR, "maxOpenDuration": OPEN_FOR}
    ns.apply(
        policy("primary", providers["primary"].url, circuitBreaker=breaker),
        policy("fallback", providers["fallback"].url),
        gateway(replicas),
    )
    for pod, ip in kubelet.wait_pods(replicas)[:serve]:
        kubelet.start(pod, ip)
    ns.wait(f"llmgw/{GW}", f"jsonpath={{.status.config.upToDate}}={serve}", timeout=WITHIN + 30)
    ns.wait(f"llmgw/{GW}", "condition=ProvidersHealthy", timeout=WITHIN)
    ns.wait(f"llmgw/{GW}", "condition=ConfigApplied", timeout=WITHIN)


def reasons(ns: Namespace) -> list[str]:
    return [e["reason"] for e in ns.events("LLMGateway", GW)]


def test_an_open_breaker_turns_providers_healthy_false_and_recovery_turns_it_back(
    ns: Namespace,
    kubelet: Kubelet,
    providers: dict[str, FakeProviderProcess],
    operator_process: OperatorProcess,
) -> None:
    deploy(ns, kubelet, providers, replicas=2, serve=2)
    assert "ProviderUnhealthy" not in reasons(ns)

    providers["primary"].plan({"status": 500, "times": 0})
    for sidecar in kubelet.sidecars.values():
        assert sidecar.chat() == 200  # the fallback answers; the primary's breaker opens
    ns.wait(f"llmgw/{GW}", "condition=ProvidersHealthy=false", timeout=WITHIN)

    condition = ns.condition(f"llmgw/{GW}", "ProvidersHealthy")
    assert condition is not None
    assert condition["reason"] == "BreakerOpen"
    assert "primary: breaker open in 2 of 2 pods" in condition["message"]
    status = ns.get(f"llmgw/{GW}")["status"]
    primary = next(p for p in status["providers"] if p["name"] == "primary")
    assert (primary["podsReporting"], primary["breakerOpen"]) == (2, 2)
    assert "ProviderUnhealthy" in reasons(ns)
    table = ns.kubectl("get", f"llmgw/{GW}")
    assert "PROVIDERS" in table.splitlines()[0] and "BreakerOpen" in table.splitlines()[1]
    policy_status = eventually(
        lambda: (s := ns.get("providerpolicy/primary").get("status", {})).get("breakerOpenPods") == 2 and s,
        WITHIN,
        "the policy's breakerOpenPods",
    )
    assert policy_status["gateways"] == [GW]
    url = f"http://127.0.0.1:{operator_process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as scraped:
        families = {f.name: f for f in text_string_to_metric_families(scraped.read().decode())}
    open_pods = {
        s.labels["state"]: s.value
        for s in families["llmgw_operator_dataplane_provider_pods"].samples
        if s.labels["namespace"] == ns.name and s.labels["provider"] == "primary"
    }
    assert open_pods == {"reporting": 2, "breaker_open": 2, "half_open": 0, "paused": 0}

    providers["primary"].clear()

    # The breaker turns half-open after its open duration; the next request is its probe.
    def recovered() -> bool:
        for sidecar in kubelet.sidecars.values():
            sidecar.chat()
        condition = ns.condition(f"llmgw/{GW}", "ProvidersHealthy") or {}
        return bool(condition.get("status") == "True")

    eventually(recovered, OPEN_FOR + WITHIN, "ProvidersHealthy=True again")
    assert "ProviderRecovered" in reasons(ns)
    assert reasons(ns).count("ProviderUnhealthy") == 1  # one Event per transition, not per poll


def test_a_pod_that_refuses_its_config_turns_config_applied_false_with_count_and_reason(
    ns: Namespace, kubelet: Kubelet, providers: dict[str, FakeProviderProcess]
) -> None:
    deploy(ns, kubelet, providers, replicas=2, serve=2)
    applied = ns.get(f"llmgw/{GW}")["status"]["config"]
    assert (applied["upToDate"], applied["outdated"]) == (2, 0)

    ns.patch("providerpolicy/fallback", {"spec": {"timeouts": {"total": 90}}})
    eventually(lambda: "total: 90" in kubelet.rendered(), WITHIN, "the new config in the ConfigMap")
    good, bad = sorted(kubelet.sidecars)
    kubelet.publish(good)
    kubelet.publish(bad, "version: 1\nproviders: {}\n")  # a config this pod's sidecar refuses
    # ReloadPending may come first (the ConfigMap changed before the pods reloaded); then this.
    ns.wait(f"llmgw/{GW}", REFUSED, timeout=WITHIN)

    # The refusal can be polled before the good pod's reload is: wait until both are counted.
    def counted() -> dict[str, Any] | None:
        found = ns.condition(f"llmgw/{GW}", "ConfigApplied")
        return found if found is not None and "1 of 2 pods" in found["message"] else None

    condition = eventually(counted, WITHIN, "the refusing pod and the reloaded one both counted")
    assert condition["reason"] == "ReloadRefused"
    assert "1 of 2 pods run an older config" in condition["message"]
    assert "config_invalid in 1 pod" in condition["message"]
    status = ns.get(f"llmgw/{GW}")["status"]["config"]
    assert (status["upToDate"], status["outdated"]) == (1, 1)
    assert "ConfigNotApplied" in reasons(ns)

    kubelet.publish(bad)
    ns.wait(f"llmgw/{GW}", "condition=ConfigApplied", timeout=WITHIN)


def test_an_unreachable_pod_is_unreporting_and_does_not_flip_health(
    ns: Namespace,
    kubelet: Kubelet,
    providers: dict[str, FakeProviderProcess],
    operator_process: OperatorProcess,
) -> None:
    deploy(ns, kubelet, providers, replicas=3, serve=2)  # the third pod has no sidecar behind its IP
    config = eventually(
        lambda: (c := ns.get(f"llmgw/{GW}")["status"].get("config", {})).get("unreporting") == 1 and c,
        WITHIN,
        "one unreporting pod",
    )
    assert (config["upToDate"], config["outdated"]) == (2, 0)
    condition = ns.condition(f"llmgw/{GW}", "ProvidersHealthy")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Healthy")
    assert condition["message"] == "2 pods report every provider healthy; 1 pod did not report"
    assert json.dumps(ns.get(f"llmgw/{GW}")["status"]).count("BreakerOpen") == 0


def test_a_steady_data_plane_causes_no_writes(
    ns: Namespace,
    kubelet: Kubelet,
    providers: dict[str, FakeProviderProcess],
    operator_process: OperatorProcess,
) -> None:
    deploy(ns, kubelet, providers, replicas=2, serve=2)
    policy_ready = "jsonpath={.status.breakerOpenPods}=0"
    for name in ("primary", "fallback"):
        ns.wait(f"providerpolicy/{name}", policy_ready, timeout=WITHIN)
    for sidecar in kubelet.sidecars.values():
        assert sidecar.chat() == 200  # traffic moves buckets and timestamps, not the counts
    polls = rf"GET /api/v1/namespaces/{ns.name}/pods\?\S*labelSelector"  # a round's LIST, or a page of it
    start = operator_process.wait_for_log(polls, operator_process.offset(), timeout=WITHIN).end()
    offset = start
    for _ in range(2):  # two more poll rounds of this gateway, each seen in the operator's log
        offset = operator_process.wait_for_log(polls, offset, timeout=WITHIN).end()
    assert operator_process.writes_since(0, ns.name)  # the log shows writes: the check below sees them
    assert operator_process.writes_since(start, ns.name) == []
