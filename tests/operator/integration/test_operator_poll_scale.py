"""The data-plane poller lists pods per namespace, in pages, not once per gateway.

Counted by the operator's own ``llmgw_operator_api_reads_total{verb="list",kind="Pod"}``
against its completed poll rounds (``llmgw_operator_dataplane_round_seconds_count``):
with 12 gateways in one namespace and pages of 5 pods, a round costs 3 LISTs, where
it cost 12 when every gateway's pods were listed on their own. The observations
still reach each gateway: every gateway's one pod is counted under its own name
although the pages cut across gateways.
"""

from __future__ import annotations

import copy
import json
import math
import re

import operatorkit
import pytest
from operatorkit import Namespace, OperatorProcess, eventually

pytestmark = pytest.mark.cluster

GATEWAYS = 12
PAGE = 5
PERIOD = 2
ROUNDS = 4


@pytest.fixture(scope="module")
def namespace_prefix() -> str:
    # Namespaces of its own: the operator counts pod LISTs and pods across every namespace it
    # watches, and earlier modules' namespaces may still be terminating with gateways in them.
    return "oppoll-"


@pytest.fixture(scope="module")
def operator_args() -> tuple[str, ...]:
    return (f"--data-plane-period={PERIOD}", f"--data-plane-page-size={PAGE}")


def poller_counts(process: OperatorProcess) -> tuple[float, float, dict[str, float]]:
    """(pod LISTs, completed rounds, ready pods seen per gateway) from the operator's /metrics."""
    lists = rounds = 0.0
    pods: dict[str, float] = {}
    for line in process.metrics_text().splitlines():
        name, _, rest = line.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        value = float(line.rsplit(" ", 1)[1]) if not line.startswith("#") else 0.0
        if name == "llmgw_operator_api_reads_total" and labels == {"verb": "list", "kind": "Pod"}:
            lists += value
        elif line.startswith("llmgw_operator_dataplane_round_seconds_count"):
            rounds += value
        elif name == "llmgw_operator_dataplane_pods":
            pods[labels["gateway"]] = pods.get(labels["gateway"], 0.0) + value
    return lists, rounds, pods


def test_one_paginated_pod_list_per_namespace_and_round(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    documents = operatorkit.samples()
    ns.apply(*(d for name, d in documents.items() if name != "chat"))
    names = [f"gw-{i:02d}" for i in range(GATEWAYS)]
    items = []
    for name in names:
        document = copy.deepcopy(documents["chat"])
        document["metadata"] = {"name": name, "namespace": ns.name}
        document["spec"]["replicas"] = 1
        items.append(document)
    ns.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    ns.kubectl("wait", "llmgw", "--all", "--for=condition=Ready", "--timeout=600s", timeout=620)
    # Each gateway's ready pod reached its own observation, whichever page it came in.
    eventually(
        lambda: poller_counts(operator_process)[2] == dict.fromkeys(names, 1.0),
        timeout=300,
        what="one ready pod observed per gateway",
    )

    lists_before, rounds_before, _ = poller_counts(operator_process)
    eventually(
        lambda: poller_counts(operator_process)[1] >= rounds_before + ROUNDS,
        timeout=300,
        what=f"{ROUNDS} more poll rounds",
    )
    lists_after, rounds_after, _ = poller_counts(operator_process)
    lists, rounds = lists_after - lists_before, rounds_after - rounds_before
    pages = math.ceil(GATEWAYS / PAGE)
    assert lists >= pages * (rounds - 1), (lists, rounds)  # the pages were listed, every round
    # One round may be in flight at either end of the window (and a `soon` round lists once too);
    # a LIST per gateway would be GATEWAYS per round.
    assert lists <= pages * (rounds + 2), (lists, rounds)
