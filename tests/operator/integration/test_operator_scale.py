"""Many gateways: reconcile passes read from the operator's watch caches, not the API.

Counted two ways: the operator's own ``llmgw_operator_api_reads_total`` and
kube-apiserver's ``apiserver_request_total`` (single-object GETs of the kinds
the operator reads; every client's, so the count can only be high, never low).
Outcomes, not timings: the gateways converge, the reads stay within one per
pass on average, and a policy edit reaches every gateway that uses it.
"""

from __future__ import annotations

import copy
import json
import re

import operatorkit
import pytest
import yaml
from clusterkit import ClusterHandle
from operatorkit import Namespace, OperatorProcess, eventually

pytestmark = pytest.mark.cluster

GATEWAYS = 30
# Kinds a pass reads; pods are the data-plane poller's, per poll round, not per pass.
READ_RESOURCES = (
    "llmgateways",
    "providerpolicies",
    "configmaps",
    "secrets",
    "deployments",
    "horizontalpodautoscalers",
)


def apiserver_gets(cluster: ClusterHandle) -> float:
    """Single-object GETs of the kinds a pass reads, all clients, since kube-apiserver started."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") == "GET" and labels.get("resource") in READ_RESOURCES:
            total += float(line.rsplit(" ", 1)[1])
    return total


def operator_counts(process: OperatorProcess) -> dict[str, float]:
    """Passes (both controllers), and the operator's reads of the kinds a pass reads, by verb."""
    text = process.metrics_text()
    counts = {"passes": 0.0, "get": 0.0, "list": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        value = float(line.rsplit(" ", 1)[1]) if rest else 0.0
        if name == "controller_runtime_reconcile_total":
            counts["passes"] += value
        elif name == "llmgw_operator_api_reads_total" and labels.get("kind") != "Pod":
            counts[labels["verb"]] += value
    return counts


def gateways(ns: Namespace) -> list[str]:
    sample = operatorkit.samples()["chat"]
    names = [f"gw-{i:03d}" for i in range(GATEWAYS)]
    items = []
    for name in names:
        document = copy.deepcopy(sample)
        document["metadata"] = {"name": name, "namespace": ns.name}
        document["spec"]["replicas"] = 1
        items.append(document)
    # create, not apply: kubectl apply GETs each object first, and those GETs would be counted here.
    ns.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return names


def primary_totals(ns: Namespace) -> dict[str, int]:
    """Each gateway's rendered ``timeouts.total`` for the primary provider."""
    listing = json.loads(ns.kubectl("get", "configmaps", "-l", "llmgateway.io/gateway", "-o", "json"))
    totals = {}
    for cm in listing["items"]:
        document = yaml.safe_load(cm["data"]["proxy.yaml"])
        totals[cm["metadata"]["labels"]["llmgateway.io/gateway"]] = document["providers"]["primary"][
            "timeouts"
        ]["total"]
    return totals


def test_many_gateways_converge_reading_at_most_once_per_pass_and_follow_a_policy_edit(
    ns: Namespace, operator_process: OperatorProcess, cluster: ClusterHandle
) -> None:
    documents = operatorkit.samples()
    ns.apply(*(d for name, d in documents.items() if name != "chat"))
    for policy in ("primary", "fallback"):
        # Generous: kopf starts a new namespace's watches once its namespace watch reports it,
        # which on a loaded machine has taken a minute.
        ns.wait(f"providerpolicy/{policy}", "condition=SecretResolved", timeout=300)

    gets_before, ours_before = apiserver_gets(cluster), operator_counts(operator_process)
    names = gateways(ns)
    ns.kubectl("wait", "llmgw", "--all", "--for=condition=Ready", "--timeout=600s", timeout=620)
    gets, ours = apiserver_gets(cluster) - gets_before, operator_counts(operator_process)
    passes = ours["passes"] - ours_before["passes"]
    own_reads = ours["get"] + ours["list"] - ours_before["get"] - ours_before["list"]
    own_lists = ours["list"] - ours_before["list"]
    assert passes >= GATEWAYS
    # Each new gateway's wanted children are looked up once (a name may be held by someone else's
    # object, which no watch shows); everything else comes from the watches.
    assert own_reads <= passes, (own_reads, passes, ours)
    assert gets + own_lists <= passes, (gets, own_lists, passes)

    assert primary_totals(ns) == dict.fromkeys(
        names, operatorkit.samples()["primary"]["spec"]["timeouts"]["total"]
    )
    gets_before, ours_before = apiserver_gets(cluster), operator_counts(operator_process)
    ns.patch("providerpolicy/primary", {"spec": {"timeouts": {"total": 91}}})
    eventually(
        lambda: primary_totals(ns) == dict.fromkeys(names, 91),
        timeout=300,
        what="the edited policy's timeout in every gateway's config",
    )
    gets, ours = apiserver_gets(cluster) - gets_before, operator_counts(operator_process)
    passes = ours["passes"] - ours_before["passes"]
    assert passes >= GATEWAYS
    # The edit re-renders from the cached policy, gateways and children: no reads at all.
    assert ours["get"] + ours["list"] - ours_before["get"] - ours_before["list"] == 0, ours
    assert gets <= passes, (gets, passes)
