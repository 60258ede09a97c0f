"""On a real API server: the CRDs install, the samples apply, each invalid sample is refused as documented.

Also writes a status computed by the condition helpers and reads it back, so
the status schema is known to keep exactly what the operator will write.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import secrets
import time
from collections.abc import Iterator

import pytest
import yaml
from clusterkit import ClusterHandle, printed_row

from llmgw_operator.render import conditions
from llmgw_operator.render.conditions import TRUE, Verdict

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[3]
INVALID = sorted((ROOT / "samples/invalid").glob("*.yaml"))


@pytest.fixture(scope="module")
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=llmgw-tests", "-f", str(crd)
        )
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/llmgateways.llmgateway.io",
        "crd/providerpolicies.llmgateway.io",
        "--timeout=60s",
    )
    name = f"crd-samples-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        for sample in sorted(ROOT.glob("samples/*.yaml")):
            cluster.kubectl("apply", "-n", name, "-f", str(sample))
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_valid_samples_are_stored_with_defaults(cluster: ClusterHandle, namespace: str) -> None:
    stored = json.loads(
        cluster.kubectl("get", "providerpolicy", "primary", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["rateLimit"]["scope"] == "shared"
    assert stored["spec"]["circuitBreaker"]["failOn"] == ["5xx", "timeout", "connection"]
    gateway = json.loads(cluster.kubectl("get", "llmgw", "chat", "-n", namespace, "-o", "json").stdout)
    assert gateway["spec"]["proxy"]["maxBodyBytes"] == 10 * 1024 * 1024
    assert gateway["spec"]["template"]["spec"]["containers"][0]["name"] == "app"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_refuses_the_invalid_sample_with_the_documented_error(
    cluster: ClusterHandle, namespace: str, path: pathlib.Path
) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect-error: ")
    refused = cluster.kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(path), check=False)
    assert refused.returncode != 0, f"{path.name} was accepted"
    assert expected in refused.stderr


def test_status_written_by_the_condition_helpers_survives_and_drives_columns_and_wait(
    cluster: ClusterHandle, namespace: str
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    deployment = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    }
    status = {
        "observedGeneration": 1,
        "replicas": 2,
        "readyReplicas": 2,
        "conditions": conditions.gateway_conditions(
            [],
            generation=1,
            now=now,
            policies=Verdict(TRUE, "Resolved", "policies resolved: fallback, primary"),
            reconciled=Verdict(TRUE, "Applied"),
            deployment=deployment,
        ),
    }
    cluster.kubectl(
        "patch", "llmgw", "chat", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip

    stored = yaml.safe_load(cluster.kubectl("get", "llmgw", "chat", "-n", namespace, "-o", "yaml").stdout)
    # The schema defaults the data plane's providers[] to empty; every field written survives.
    assert stored["status"] == {**status, "providers": []}
    cluster.kubectl("wait", "--for=condition=Ready", "llmgw/chat", "-n", namespace, "--timeout=10s")
    shown = printed_row(cluster.kubectl("get", "llmgw", "chat", "-n", namespace).stdout)
    assert list(shown) == ["NAME", "READY", "REASON", "PROVIDERS", "REPLICAS", "AGE"]
    assert [shown[c] for c in ("NAME", "READY", "REASON", "PROVIDERS", "REPLICAS")] == [
        "chat", "True", "Available", "", "2",
    ]  # fmt: skip


def test_the_category_lists_both_kinds(cluster: ClusterHandle, namespace: str) -> None:
    listed = cluster.kubectl("get", "llm", "-n", namespace, "-o", "name").stdout.split()
    assert "llmgateway.llmgateway.io/chat" in listed
    assert "providerpolicy.llmgateway.io/primary" in listed


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("providerpolicy.spec.rateLimit.scope", "Default: shared."),
        ("providerpolicy.spec.rateLimit.maxWait", "Default: 0."),
        ("providerpolicy.spec.apiVersion", "Rule: apiVersion is required when provider is azure-openai."),
        ("llmgateway.spec.replicas", "Rule: replicas and autoscaling are mutually exclusive."),
    ],
)
def test_kubectl_explain_shows_defaults_and_cross_field_rules(
    cluster: ClusterHandle, namespace: str, field: str, says: str
) -> None:
    # The API server publishes a new CRD schema to OpenAPI a moment after it is Established.
    def shown() -> str:
        proc = cluster.kubectl("explain", field, check=False)
        return " ".join(proc.stdout.split()) if proc.returncode == 0 else ""

    deadline = time.monotonic() + 30
    text = shown()
    while says not in text and time.monotonic() < deadline:
        time.sleep(0.5)  # polling the API server's OpenAPI publication: there is no watch for it
        text = shown()
    assert says in text
