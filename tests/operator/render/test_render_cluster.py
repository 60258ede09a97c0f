"""On a real control plane: the rendered children are accepted as they are, and the rendered
Deployment rolls out to a state the readiness verdict calls Ready."""

from __future__ import annotations

import base64
import json
import pathlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from clusterkit import ClusterHandle

from llmgw_operator.api import gateway, policy
from llmgw_operator.render import children, conditions, resolve

pytestmark = pytest.mark.cluster

SAMPLES = pathlib.Path(__file__).resolve().parents[3] / "samples"


def _sample_children(native_sidecar: bool) -> children.Children:
    documents = [yaml.safe_load(p.read_text()) for p in sorted(SAMPLES.glob("*.yaml"))]
    secret = next(d for d in documents if d["kind"] == "Secret")
    secret_data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    policies: dict[str, resolve.Observed] = {
        d["metadata"]["name"]: policy.ProviderPolicySpec.model_validate(d["spec"])
        for d in documents
        if d["kind"] == "ProviderPolicy"
    }
    document = next(d for d in documents if d["kind"] == "LLMGateway")
    spec = gateway.LLMGatewaySpec.model_validate(
        document["spec"]
        | {"replicas": None, "autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 80}}
    )
    resolution = resolve.gateway_policies(spec, policies, {secret["metadata"]["name"]: secret_data})
    return children.render(
        "chat",
        "placeholder",
        spec,
        resolution,
        observed_replicas=None,
        default_image="registry.example/llmgw-proxy:test",
        native_sidecar=native_sidecar,
    )


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    name = f"render-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(cluster: ClusterHandle, namespace: str, manifests: list[dict[str, Any]], *extra: str) -> None:
    for manifest in manifests:
        manifest["metadata"]["namespace"] = namespace
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=llmgw-tests", *extra, "-f", "-",
        input="\n---\n".join(json.dumps(m) for m in manifests),
    )  # fmt: skip


@pytest.mark.parametrize(
    "native", [pytest.param(True, id="native-sidecar"), pytest.param(False, id="container")]
)
def test_the_api_server_accepts_every_child(cluster: ClusterHandle, namespace: str, native: bool) -> None:
    _apply(cluster, namespace, _sample_children(native).manifests(), "--dry-run=server")


def test_the_rendered_deployment_rolls_out_and_reads_as_ready(cluster: ClusterHandle, namespace: str) -> None:
    rendered = _sample_children(native_sidecar=True)
    _apply(cluster, namespace, rendered.manifests())
    cluster.kubectl("scale", "deployment/chat", "-n", namespace, "--replicas=2")
    cluster.kubectl("rollout", "status", "deployment/chat", "-n", namespace, "--timeout=90s")

    observed = json.loads(cluster.kubectl("get", "deployment", "chat", "-n", namespace, "-o", "json").stdout)
    verdict = conditions.deployment_ready(observed)
    assert (verdict.status, verdict.reason) == (conditions.TRUE, "Available"), verdict.message
    assert conditions.replica_counts(observed) == (2, 2)
