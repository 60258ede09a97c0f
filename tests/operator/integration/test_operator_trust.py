"""What a resource author cannot make the operator do, on a real control plane, driven with kubectl.

The operator of this module runs as the chart runs it with
``gatewayPods.allowedServiceAccounts: [default, app]`` and the other pod rules
at their defaults (docs/security.md, "The trust model").
"""

from __future__ import annotations

import base64
import copy
import json
import time
from typing import Any

import operatorkit
import pytest
from operatorkit import Namespace, OperatorProcess, eventually

from llmgw_operator.render import names

pytestmark = pytest.mark.cluster

GW = "chat"
KEYS = "llm-provider-keys"
FOREIGN = {"app.kubernetes.io/managed-by": "someone-else"}
# How long "nothing happens" is watched for (as in test_operator_cluster.py): a pass takes
# milliseconds, so a few seconds show that none was caused.
QUIET_WINDOW = 3.0


@pytest.fixture(scope="module")
def operator_args() -> tuple[str, ...]:
    return ("--allowed-service-account=default", "--allowed-service-account=app")


def documents(
    *, without: tuple[str, ...] = (), template: dict[str, Any] | None = None, **gateway: Any
) -> list[dict[str, Any]]:
    """The samples minus some, with a pod template and gateway spec fields of the test's choosing."""
    found = operatorkit.samples()
    if template is not None:
        found[GW]["spec"]["template"] = template
    found[GW]["spec"] |= gateway
    return [d for name, d in found.items() if name not in without]


def pod_template(**pod: Any) -> dict[str, Any]:
    template: dict[str, Any] = copy.deepcopy(operatorkit.samples()[GW]["spec"]["template"])
    template["spec"] |= pod
    return template


def wait_reason(ns: Namespace, ref: str, type_: str, reason: str) -> dict[str, Any]:
    ns.wait(ref, f'jsonpath={{.status.conditions[?(@.type=="{type_}")].reason}}={reason}')
    found = ns.condition(ref, type_)
    assert found is not None
    return found


def warning_event(ns: Namespace, kind: str, name: str, reason: str) -> dict[str, Any]:
    return eventually(
        lambda: next(
            (e for e in ns.events(kind, name) if e["reason"] == reason and e["type"] == "Warning"), None
        ),
        what=f"a Warning Event {reason} on {kind} {name}",
    )


def settled_ready(ns: Namespace) -> None:
    ns.wait(f"llmgw/{GW}", "condition=Ready", timeout=90)
    ns.kubectl("rollout", "status", f"deployment/{GW}", "--timeout=60s")


# -- pod templates -------------------------------------------------------------------------------


def test_a_host_network_template_is_refused_at_admission(ns: Namespace) -> None:
    (gateway,) = [d for d in documents(template=pod_template(hostNetwork=True)) if d["kind"] == "LLMGateway"]
    proc = ns.cluster.kubectl("-n", ns.name, "apply", "-f", "-", input=json.dumps(gateway), check=False)
    assert proc.returncode != 0
    assert "template.spec.hostNetwork is not allowed" in proc.stderr
    assert not ns.exists(f"llmgw/{GW}")


@pytest.mark.parametrize(
    ("pod", "named"),
    [
        pytest.param(
            {"serviceAccountName": "admin"},
            "serviceAccountName admin is not among the allowed ServiceAccounts (app, default)",
            id="service-account-outside-the-charts-list",
        ),
        pytest.param({"hostPID": True}, "template.spec.hostPID is not allowed", id="host-pid"),
        pytest.param(
            {"volumes": [{"name": "node", "hostPath": {"path": "/"}}]},
            "hostPath volume node is not allowed",
            id="host-path",
        ),
    ],
)
def test_a_refused_pod_template_creates_nothing_and_says_why(
    ns: Namespace, pod: dict[str, Any], named: str
) -> None:
    ns.apply(*documents(template=pod_template(**pod)))

    reconciled = wait_reason(ns, f"llmgw/{GW}", "Reconciled", "PodTemplateRefused")
    assert reconciled["status"] == "False"
    assert named in reconciled["message"]
    ready = ns.condition(f"llmgw/{GW}", "Ready")
    assert ready is not None and ready["status"] == "False"
    event = warning_event(ns, "LLMGateway", GW, "PodTemplateRefused")
    assert named in event["message"]
    for ref in (f"deployment/{GW}", f"configmap/{GW}-proxy-config", f"secret/{GW}-provider-keys"):
        assert not ns.exists(ref), ref


def test_a_template_changed_to_a_refused_one_leaves_the_deployment_as_it_was(ns: Namespace) -> None:
    ns.apply(*documents())
    settled_ready(ns)
    before = ns.get(f"deployment/{GW}")

    ns.patch(f"llmgw/{GW}", {"spec": {"template": {"spec": {"serviceAccountName": "admin"}}}})

    wait_reason(ns, f"llmgw/{GW}", "Reconciled", "PodTemplateRefused")
    after = ns.get(f"deployment/{GW}")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "serviceAccountName" not in after["spec"]["template"]["spec"]

    # An allowed ServiceAccount is applied (the pods cannot start without it, so Ready is not awaited).
    ns.patch(f"llmgw/{GW}", {"spec": {"template": {"spec": {"serviceAccountName": "app"}}}})
    eventually(
        lambda: ns.get(f"deployment/{GW}")["spec"]["template"]["spec"].get("serviceAccountName") == "app",
        what="the allowed ServiceAccount in the Deployment",
    )
    wait_reason(ns, f"llmgw/{GW}", "Reconciled", "Applied")


# -- name collisions -----------------------------------------------------------------------------


def foreign_hpa(target: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": GW, "labels": FOREIGN},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": 2,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                }
            ],
        },
    }


FOREIGN_OBJECTS = [
    pytest.param(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{GW}-proxy-config"},
            "data": {"a": "b"},
        },
        "configmap",
        id="configmap",
    ),
    pytest.param(
        # Labelled like the operator's own: a label is no claim to ownership.
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{GW}-provider-keys", "labels": names.labels(GW)},
            "data": {"other": base64.b64encode(b"someone else's").decode()},
        },
        "secret",
        id="secret-with-the-operators-labels",
    ),
    pytest.param(foreign_hpa("web"), "horizontalpodautoscalers.v2.autoscaling", id="hpa"),
    pytest.param(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": GW, "labels": FOREIGN},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]},
                },
            },
        },
        "deployment",
        id="deployment",
    ),
]
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}


def assert_untouched(before: dict[str, Any], after: dict[str, Any]) -> None:
    """The same object, with what its creator gave it, and no field ever written by the operator.

    (The HPA controller writes a foreign HPA's status, so resourceVersion alone cannot tell.)
    """
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    for field in ("spec", "data"):
        assert after.get(field) == before.get(field), field
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert "ownerReferences" not in after["metadata"]
    assert after["metadata"].get("deletionTimestamp") is None
    managers = {m["manager"] for m in after["metadata"]["managedFields"]}
    assert "llmgw-operator" not in managers, managers


@pytest.mark.parametrize(("foreign", "resource"), FOREIGN_OBJECTS)
def test_a_child_name_held_by_a_foreign_object_is_a_name_conflict_and_the_object_is_untouched(
    ns: Namespace, foreign: dict[str, Any], resource: str
) -> None:
    ns.apply(foreign)
    ref = f"{resource}/{foreign['metadata']['name']}"
    before = ns.get(ref, "--show-managed-fields")
    scaling: dict[str, Any] = (
        {"replicas": None, "autoscaling": AUTOSCALING} if foreign["kind"].startswith("Horizontal") else {}
    )

    ns.apply(*documents(**scaling))

    reconciled = wait_reason(ns, f"llmgw/{GW}", "Reconciled", "NameConflict")
    assert reconciled["status"] == "False"
    assert f"{foreign['kind']} {foreign['metadata']['name']}" in reconciled["message"]
    warning_event(ns, "LLMGateway", GW, "NameConflict")
    assert_untouched(before, ns.get(ref, "--show-managed-fields"))
    if foreign["kind"] != "Deployment":
        assert not ns.exists(f"deployment/{GW}")  # nothing applied
    assert not ns.exists(f"configmap/{GW}-proxy-config") or foreign["kind"] == "ConfigMap"

    # Once the name is free the gateway takes it (the operator looks again with backoff).
    ns.kubectl("delete", ref)
    ns.wait(f"llmgw/{GW}", "condition=Reconciled", timeout=90)
    owners = ns.get(ref)["metadata"]["ownerReferences"]
    assert [o["name"] for o in owners] == [GW]


def test_a_foreign_hpa_is_not_deleted_by_a_gateway_without_autoscaling(ns: Namespace) -> None:
    ns.apply(foreign_hpa("web"))
    ref = f"horizontalpodautoscalers.v2.autoscaling/{GW}"
    before = ns.get(ref, "--show-managed-fields")

    ns.apply(*documents())
    settled_ready(ns)

    assert_untouched(before, ns.get(ref, "--show-managed-fields"))


# -- key Secrets ---------------------------------------------------------------------------------


def test_a_secret_not_marked_as_a_provider_key_is_not_read_until_labelled(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    unmarked = [copy.deepcopy(d) for d in documents()]
    for document in unmarked:
        if document["kind"] == "Secret":
            del document["metadata"]["labels"]
    ns.apply(*unmarked)

    secret = wait_reason(ns, "providerpolicy/primary", "SecretResolved", "SecretNotMarked")
    assert secret["status"] == "False"
    assert f"Secret {KEYS} is not marked" in secret["message"]
    assert "llmgateway.io/provider-key=true" in secret["message"]
    resolved = wait_reason(ns, f"llmgw/{GW}", "PoliciesResolved", "SecretNotMarked")
    assert KEYS in resolved["message"]
    warning_event(ns, "ProviderPolicy", "primary", "SecretNotMarked")
    assert not ns.exists(f"deployment/{GW}")
    assert not ns.exists(f"secret/{GW}-provider-keys")

    # The operator's Secret watch selects marked Secrets server-side: a change to an unmarked
    # one never reaches it, even one a policy names (before, it was watched and read again).
    time.sleep(QUIET_WINDOW)  # let the passes that the status writes caused finish; see QUIET_WINDOW
    offset = operator_process.offset()
    ns.patch(f"secret/{KEYS}", {"stringData": {"other": "changed"}})
    time.sleep(QUIET_WINDOW)  # absence cannot be awaited, only observed
    assert f"GET /api/v1/namespaces/{ns.name}/secrets/{KEYS} " not in operator_process.text()[offset:]

    # The label is the owner's consent; the server-side watch sees it arrive.
    ns.kubectl("label", f"secret/{KEYS}", "llmgateway.io/provider-key=true")

    ns.wait(f"llmgw/{GW}", "condition=Ready", timeout=90)
    ns.wait("providerpolicy/primary", "condition=SecretResolved")
    data = ns.get(f"secret/{GW}-provider-keys")["data"]
    assert data == {"primary": operatorkit.b64(operatorkit.SAMPLE_KEY)}


INVALID_KEYS = [
    pytest.param(b"sk-inner\nnewline-0123456789", id="inner-newline"),
    pytest.param(b"\xff\xfesk-not-utf8-0123456789", id="not-utf8"),
    pytest.param(b"", id="empty"),
    pytest.param(b"sk-with-a-nul\x00-0123456789", id="control-character"),
]


@pytest.mark.parametrize("bad", INVALID_KEYS)
def test_an_invalid_key_is_reported_and_the_pods_keep_the_last_good_one(
    ns: Namespace, operator_process: OperatorProcess, bad: bytes
) -> None:
    ns.apply(*documents())
    settled_ready(ns)
    rendered = f"secret/{GW}-provider-keys"
    before = ns.get(rendered)
    offset = operator_process.offset()

    ns.patch(f"secret/{KEYS}", {"data": {"primary": base64.b64encode(bad).decode()}})

    secret = wait_reason(ns, "providerpolicy/primary", "SecretResolved", "InvalidKey")
    assert secret["status"] == "False"
    assert f"key primary of Secret {KEYS}" in secret["message"]
    wait_reason(ns, f"llmgw/{GW}", "PoliciesResolved", "InvalidKey")
    warning_event(ns, "ProviderPolicy", "primary", "InvalidKey")
    after = ns.get(rendered)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == {"primary": operatorkit.b64(operatorkit.SAMPLE_KEY)}

    # The bad value, or any readable stretch of it, appears nowhere the operator writes.
    forbidden = [base64.b64encode(bad).decode()] if bad else []
    forbidden += [part for part in bad.decode("utf-8", "replace").split() if len(part) > 6]
    forbidden = [f.replace("\x00", "") for f in forbidden]
    places = {
        "policy status": json.dumps(ns.get("providerpolicy/primary").get("status")),
        "gateway status": json.dumps(ns.get(f"llmgw/{GW}").get("status")),
        "events": ns.kubectl("get", "events", "-o", "json"),
        "operator log": operator_process.text()[offset:],
    }
    for place, text in places.items():
        for form in forbidden:
            assert form not in text, f"the invalid key appears in the {place}"


# -- labels --------------------------------------------------------------------------------------


def test_children_carry_only_the_operators_labels_and_the_owner_reference(ns: Namespace) -> None:
    found = documents()
    gateway = next(d for d in found if d["kind"] == "LLMGateway")
    gateway["metadata"]["labels"] = {"argocd.argoproj.io/secret-type": "repository", "team": "a"}
    ns.apply(*found)
    settled_ready(ns)

    uid = ns.get(f"llmgw/{GW}")["metadata"]["uid"]
    children = {
        f"configmap/{GW}-proxy-config": names.labels(GW),
        f"secret/{GW}-provider-keys": names.labels(GW) | {"llmgateway.io/provider-key": "rendered"},
        f"deployment/{GW}": names.labels(GW),
    }
    for ref, labels in children.items():
        meta = ns.get(ref)["metadata"]
        assert meta["labels"] == labels, ref
        assert [(o["uid"], o["controller"]) for o in meta["ownerReferences"]] == [(uid, True)], ref
