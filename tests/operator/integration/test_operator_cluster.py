"""The operator against a real control plane, driven with kubectl the way users drive it.

One operator process serves the whole module (it watches only namespaces named
``opit-*``, so other folders' objects on the shared cluster are left alone);
each test works in a fresh namespace.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
from typing import Any

import operatorkit
import pytest
from clusterkit import printed_row
from operatorkit import Namespace, OperatorProcess, eventually

from llmgw_operator.render import conditions
from llmgw_proxy import config

pytestmark = pytest.mark.cluster

GW = "chat"
ROTATED_KEY = "sk-rotated-not-a-real-key"
CHILDREN = (f"configmap/{GW}-proxy-config", f"secret/{GW}-provider-keys", f"deployment/{GW}")
# How long "nothing happens" is watched for, after the operator has been seen
# finishing a pass: long enough for a pass's remaining requests (milliseconds
# each) and for the watch events they would cause to come back, short enough to
# keep the module fast. Absence cannot be awaited; it can only be observed.
QUIET_WINDOW = 3.0


def apply_samples(ns: Namespace, *, without: tuple[str, ...] = (), **changes: dict[str, Any]) -> None:
    """The samples, minus some, with top-level ``spec`` changes per object name."""
    documents = operatorkit.samples()
    for name, spec in changes.items():
        documents[name]["spec"] = documents[name]["spec"] | spec
    ns.apply(*(d for name, d in documents.items() if name not in without))


def rotate_primary_key(ns: Namespace) -> None:
    """Change the referenced Secret's key and wait until the gateway's keys Secret carries it."""
    ns.patch("secret/llm-provider-keys", {"stringData": {"primary": ROTATED_KEY}})
    eventually(
        lambda: ns.get(f"secret/{GW}-provider-keys")["data"] == {"primary": operatorkit.b64(ROTATED_KEY)},
        what="the rotated key in the gateway's Secret",
    )


def wait_ready(ns: Namespace, gateway: str = GW) -> None:
    ns.wait(f"llmgw/{gateway}", "condition=Ready", timeout=90)


def wait_reason(ns: Namespace, ref: str, type_: str, reason: str) -> None:
    ns.wait(ref, f"jsonpath={{.status.conditions[?(@.type=={type_!r})].reason}}={reason}".replace("'", '"'))


def template_annotations(ns: Namespace) -> dict[str, str]:
    annotations: dict[str, str] = ns.get(f"deployment/{GW}")["spec"]["template"]["metadata"]["annotations"]
    return annotations


def nudge_and_watch_quiet(
    operator: OperatorProcess, ns: Namespace, refs: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """Resource versions before and after a reconcile pass the test provoked, plus a quiet window.

    An annotation on the gateway makes the operator run a full pass over it;
    the pass's last log line shows it got that far.
    """
    # The log shows the writes that made the gateway: the check for none below can see one.
    assert operator.writes_since(0, ns.name)
    offset = operator.offset()
    ns.kubectl("annotate", f"llmgw/{GW}", f"opit.llmgateway.io/nudge={secrets.token_hex(4)}", "--overwrite")
    before = ns.resource_versions(*refs)
    operator.wait_for_log(rf"LLMGateway {ns.name}/{GW}: pass done", offset)
    time.sleep(QUIET_WINDOW)  # a bounded window for asserting absence; see QUIET_WINDOW
    after = ns.resource_versions(*refs)
    assert operator.writes_since(offset, ns.name) == []
    return before, after


def wait_data_plane(ns: Namespace, pods: int = 2) -> None:
    """The first poll of the gateway's ready pods is in its status and its policies'. kwok's pods
    here run nothing behind their IPs, so the poll finds them unreporting."""
    ns.wait(f"llmgw/{GW}", f"jsonpath={{.status.config.unreporting}}={pods}", timeout=60)
    for name in ("primary", "fallback"):
        ns.wait(f"providerpolicy/{name}", "jsonpath={.status.breakerOpenPods}=0", timeout=60)


def settled_ready(ns: Namespace) -> None:
    """Ready, the Deployment controller done writing the rollout's last status, and the data
    plane's first poll written."""
    wait_ready(ns)
    ns.kubectl("rollout", "status", f"deployment/{GW}", "--timeout=60s")
    wait_data_plane(ns)


# -- creation ----------------------------------------------------------------------


def test_applying_the_samples_makes_the_gateway_ready_with_owned_children(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    wait_ready(ns)

    gateway = ns.get(f"llmgw/{GW}")
    for ref in CHILDREN:
        owners = ns.get(ref)["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "llmgateway.io/v1alpha1",
                "kind": "LLMGateway",
                "name": GW,
                "uid": gateway["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], ref

    compiled = config.parse(ns.proxy_config(GW))
    assert set(compiled.providers) == {"primary", "fallback"}
    assert compiled.providers["primary"].api_key_file == "/etc/llmgw/keys/primary"
    keys = ns.get(f"secret/{GW}-provider-keys")["data"]
    assert keys == {"primary": operatorkit.b64(operatorkit.SAMPLE_KEY)}

    pod = ns.get(f"deployment/{GW}")["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "llmgw-proxy")
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == operatorkit.PROXY_IMAGE
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert sidecar[probe]["httpGet"]["port"] == 9090, probe
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}

    wait_data_plane(ns)
    status = ns.get(f"llmgw/{GW}")["status"]
    assert status["observedGeneration"] == gateway["metadata"]["generation"]
    assert status["readyReplicas"] == 2
    # kwok's pods here have IPs nothing listens on: the data-plane conditions say no pod reported.
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "PoliciesResolved": ("True", "Resolved"),
        "Reconciled": ("True", "Applied"),
        "Ready": ("True", "Available"),
        "ProvidersHealthy": ("Unknown", "NoReports"),
        "ConfigApplied": ("Unknown", "NoReports"),
    }
    assert status["config"]["unreporting"] == 2
    # Events are posted right after the status patch that made the transition.
    eventually(
        lambda: {e["reason"] for e in ns.events("LLMGateway", GW)} >= {"Resolved", "Applied", "Available"},
        what="the gateway's transition Events",
    )
    # The first rollout's progress is no transition: Ready=True says it is done.
    assert not {e["reason"] for e in ns.events("LLMGateway", GW)} & conditions.ROLLING_OUT
    for policy in ("primary", "fallback"):
        ns.wait(f"providerpolicy/{policy}", "condition=Accepted")
        ns.wait(f"providerpolicy/{policy}", "condition=SecretResolved")
    eventually(
        lambda: {e["reason"] for e in ns.events("ProviderPolicy", "primary")} >= {"Valid", "SecretFound"},
        what="the primary policy's transition Events",
    )


def test_a_ready_gateway_sees_no_writes_at_steady_state(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    refs = (f"llmgw/{GW}", "providerpolicy/primary", "providerpolicy/fallback", *CHILDREN)
    before, after = nudge_and_watch_quiet(operator_process, ns, refs)
    assert after == before


def test_a_new_gateways_passes_read_none_of_its_children(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    offset = operator_process.offset()
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    wait_ready(ns)

    # Each child was applied create-only, from no copy and without a GET first.
    written = operator_process.writes_since(offset, ns.name)
    child_paths = (
        f"/api/v1/namespaces/{ns.name}/configmaps/{GW}-proxy-config",
        f"/api/v1/namespaces/{ns.name}/secrets/{GW}-provider-keys",
        f"/apis/apps/v1/namespaces/{ns.name}/deployments/{GW}",
    )
    for path in child_paths:
        assert any(w.startswith(f'"PATCH {path}?') for w in written), (path, written)
    read = operator_process.reads_since(offset, ns.name)
    assert not [r for r in read if r.strip('"').split()[1].split("?")[0] in child_paths], read


# -- changes -----------------------------------------------------------------------


def test_a_policy_edit_changes_the_config_without_restarting_pods(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    deployment = ns.get(f"deployment/{GW}")

    ns.patch("providerpolicy/primary", {"spec": {"timeouts": {"total": 90}, "rateLimit": {"maxWait": 5}}})

    primary = eventually(
        lambda: (p := ns.proxy_config(GW)["providers"]["primary"])["timeouts"]["total"] == 90 and p,
        what="the new total timeout in the ConfigMap",
    )
    assert primary["rateLimit"]["maxWait"] == 5
    after = ns.get(f"deployment/{GW}")
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]
    assert after["spec"]["template"] == deployment["spec"]["template"]


def test_a_new_proxy_image_rolls_the_pods(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    hash_before = template_annotations(ns)["llmgateway.io/restart-hash"]

    ns.patch(f"llmgw/{GW}", {"spec": {"proxy": {"image": "registry.example/llmgw-proxy:it-2"}}})

    def sidecar_image() -> str:
        pod = ns.get(f"deployment/{GW}")["spec"]["template"]["spec"]
        return str(next(c["image"] for c in pod["initContainers"] if c["name"] == "llmgw-proxy"))

    eventually(lambda: sidecar_image() == "registry.example/llmgw-proxy:it-2", what="the new sidecar image")
    assert template_annotations(ns)["llmgateway.io/restart-hash"] != hash_before
    ns.kubectl("rollout", "status", f"deployment/{GW}", "--timeout=60s")
    generation = ns.get(f"llmgw/{GW}")["metadata"]["generation"]
    ns.wait(f"llmgw/{GW}", f"jsonpath={{.status.observedGeneration}}={generation}")
    wait_ready(ns)


def test_rotating_the_referenced_key_updates_the_gateways_keys_secret(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    wait_ready(ns)

    rotate_primary_key(ns)


def test_shared_limits_are_split_across_the_replicas(ns: Namespace) -> None:
    apply_samples(
        ns,
        chat={"replicas": 3},
        primary={"rateLimit": {"requestsPerMinute": 100, "scope": "shared"}},
    )

    def rendered() -> int | None:
        # Polled from right after the apply: the ConfigMap, or the limit in it, may not be there yet.
        if not ns.exists(f"configmap/{GW}-proxy-config"):
            return None
        limit = ns.proxy_config(GW)["providers"].get("primary", {}).get("rateLimit") or {}
        return limit.get("requestsPerMinute")

    def requests_per_minute(expected: int) -> None:
        eventually(lambda: rendered() == expected, what=f"requestsPerMinute {expected} per pod")

    requests_per_minute(34)  # ceil(100 / 3)
    ns.patch(f"llmgw/{GW}", {"spec": {"replicas": 4}})
    requests_per_minute(25)
    # perPod limits are every pod's own, whatever the replica count.
    assert ns.proxy_config(GW)["providers"]["fallback"]["rateLimit"]["requestsPerMinute"] == 120


def test_declaring_autoscaling_creates_an_hpa_and_removing_it_deletes_the_hpa(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    wait_ready(ns)
    scaling = {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}

    ns.patch(f"llmgw/{GW}", {"spec": {"replicas": None, "autoscaling": scaling}})

    eventually(lambda: ns.exists(f"hpa/{GW}"), what="the HPA")
    hpa = ns.get(f"horizontalpodautoscalers.v2.autoscaling/{GW}")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": GW}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["metadata"]["ownerReferences"][0]["name"] == GW
    # Given up, so the HPA's writes are the only ones to spec.replicas.
    eventually(lambda: "f:replicas" not in operator_owned_spec(ns), what="the operator releasing replicas")

    # Like every other child, an HPA edited or deleted by hand is put back.
    ns.patch(f"hpa/{GW}", {"spec": {"maxReplicas": 9}})
    eventually(lambda: ns.get(f"hpa/{GW}")["spec"]["maxReplicas"] == 3, what="maxReplicas restored")
    ns.kubectl("delete", f"hpa/{GW}")
    eventually(lambda: ns.exists(f"hpa/{GW}"), what="the HPA recreated")

    ns.patch(f"llmgw/{GW}", {"spec": {"autoscaling": None, "replicas": 1}})

    ns.wait(f"hpa/{GW}", "delete")
    # Fixed replicas are the operator's to set again.
    ns.patch(f"llmgw/{GW}", {"spec": {"replicas": 2}})
    eventually(lambda: ns.get(f"deployment/{GW}")["spec"]["replicas"] == 2, what="2 replicas")
    assert "f:replicas" in operator_owned_spec(ns)


def operator_owned_spec(ns: Namespace) -> dict[str, Any]:
    """The Deployment spec fields the operator's server-side applies own."""
    entries = ns.get(f"deployment/{GW}", "--show-managed-fields")["metadata"]["managedFields"]
    mine = next(e for e in entries if e["manager"] == "llmgw-operator" and e["operation"] == "Apply")
    spec: dict[str, Any] = mine["fieldsV1"]["f:spec"]
    return spec


def test_a_policy_no_route_names_any_more_takes_its_key_out_of_the_gateway(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    wait_ready(ns)
    assert set(ns.get(f"secret/{GW}-provider-keys")["data"]) == {"primary"}

    routes = [{"model": "gpt-4o-mini", "targets": [{"policy": "fallback", "model": "llama3"}]}]
    ns.patch(f"llmgw/{GW}", {"spec": {"routes": routes}})

    eventually(
        lambda: not ns.get(f"secret/{GW}-provider-keys").get("data"),
        what="the primary policy's key gone from the gateway's Secret",
    )
    assert set(ns.proxy_config(GW)["providers"]) == {"fallback"}


def test_children_deleted_or_edited_by_hand_are_put_back(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    config_before = ns.proxy_config(GW)
    keys_before = ns.get(f"secret/{GW}-provider-keys")["data"]

    # One at a time: any pass over the gateway repairs every child, so each
    # change must bring its own pass about.
    ns.kubectl("delete", f"configmap/{GW}-proxy-config")
    eventually(
        lambda: ns.exists(f"configmap/{GW}-proxy-config") and ns.proxy_config(GW) == config_before,
        what="the ConfigMap recreated",
    )
    ns.patch(f"secret/{GW}-provider-keys", {"data": {"primary": operatorkit.b64("tampered")}})
    eventually(lambda: ns.get(f"secret/{GW}-provider-keys")["data"] == keys_before, what="the key restored")
    ns.kubectl("delete", f"deployment/{GW}")
    eventually(lambda: ns.exists(f"deployment/{GW}"), what="the Deployment recreated")
    ns.kubectl("rollout", "status", f"deployment/{GW}", "--timeout=60s")
    wait_ready(ns)


def test_deleting_a_policy_in_use_marks_the_gateway_unresolved_and_keeps_its_children(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    versions = ns.resource_versions(*CHILDREN)

    ns.kubectl("delete", "providerpolicy/fallback")

    wait_reason(ns, f"llmgw/{GW}", "PoliciesResolved", "PolicyNotFound")
    ready = ns.condition(f"llmgw/{GW}", "Ready")
    assert ready is not None and ready["status"] == "False"
    # The pods go on serving the last good config.
    assert ns.resource_versions(*CHILDREN) == versions


# -- missing references --------------------------------------------------------------


def test_a_missing_secret_is_named_until_it_is_created(ns: Namespace) -> None:
    apply_samples(ns, without=("llm-provider-keys",))

    wait_reason(ns, f"llmgw/{GW}", "PoliciesResolved", "SecretNotFound")
    resolved = ns.condition(f"llmgw/{GW}", "PoliciesResolved")
    assert resolved is not None and "llm-provider-keys" in resolved["message"]
    ready = ns.condition(f"llmgw/{GW}", "Ready")
    assert ready is not None and ready["status"] == "False"
    wait_reason(ns, "providerpolicy/primary", "SecretResolved", "SecretNotFound")
    assert not ns.exists(f"deployment/{GW}")
    eventually(
        lambda: any(
            e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in ns.events("LLMGateway", GW)
        ),
        what="a Warning Event naming the missing Secret",
    )

    ns.apply(operatorkit.samples()["llm-provider-keys"])

    wait_ready(ns)
    ns.wait("providerpolicy/primary", "condition=SecretResolved")


def test_a_missing_policy_is_named_until_it_is_created(ns: Namespace) -> None:
    apply_samples(ns, without=("primary",))

    wait_reason(ns, f"llmgw/{GW}", "PoliciesResolved", "PolicyNotFound")
    resolved = ns.condition(f"llmgw/{GW}", "PoliciesResolved")
    assert resolved is not None and "primary" in resolved["message"]
    # Policies are looked up in the gateway's namespace only: the message says which one.
    assert f"namespace {ns.name}" in resolved["message"]
    ready = ns.condition(f"llmgw/{GW}", "Ready")
    assert ready is not None and ready["status"] == "False"

    ns.apply(operatorkit.samples()["primary"])

    wait_ready(ns)


def test_a_gateway_only_pydantic_refuses_is_not_accepted_and_named(ns: Namespace) -> None:
    # The CRD cannot see into the pod template; the model refuses the sidecar's own
    # container name there. (Every ProviderPolicy rule now has a CEL twin, so no policy
    # the API server admits reaches this path any more, unless the CRD is older.)
    template = copy.deepcopy(operatorkit.samples()[GW]["spec"]["template"])
    template["spec"]["containers"][0]["name"] = "llmgw-proxy"
    apply_samples(ns, chat={"template": template})

    wait_reason(ns, f"llmgw/{GW}", "Reconciled", "InvalidSpec")
    for type_ in ("PoliciesResolved", "Reconciled"):
        condition = ns.condition(f"llmgw/{GW}", type_)
        assert condition is not None
        assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
        assert "the container name llmgw-proxy is reserved" in condition["message"]
    assert not ns.exists(f"deployment/{GW}")


def test_a_ready_gateway_made_invalid_says_so_and_still_counts_its_serving_pods(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    versions = ns.resource_versions(*CHILDREN)
    template = copy.deepcopy(operatorkit.samples()[GW]["spec"]["template"])
    template["spec"]["containers"][0]["name"] = "llmgw-proxy"

    ns.patch(f"llmgw/{GW}", {"spec": {"template": template}})

    wait_reason(ns, f"llmgw/{GW}", "Ready", "InvalidSpec")
    ready = ns.condition(f"llmgw/{GW}", "Ready")
    assert ready is not None and ready["status"] == "False"
    assert "the container name llmgw-proxy is reserved" in ready["message"]
    # The policies are fine; only the gateway is refused. And the Deployment,
    # left as it was, still serves its pods: the status counts them.
    status = ns.get(f"llmgw/{GW}")["status"]
    deployment = ns.get(f"deployment/{GW}")["status"]
    assert (status["replicas"], status["readyReplicas"]) == (
        deployment["replicas"],
        deployment["readyReplicas"],
    )
    assert status["replicas"] == operatorkit.samples()[GW]["spec"]["replicas"]
    shown = printed_row(ns.kubectl("get", f"llmgw/{GW}", "-o", "wide"))
    assert [shown["READY"], shown["REASON"], shown["REPLICAS"]] == [
        "False",
        "InvalidSpec",
        str(status["replicas"]),
    ]
    assert ns.resource_versions(*CHILDREN) == versions


def test_get_llmpp_shows_a_missing_key_secret_beside_accepted(ns: Namespace) -> None:
    apply_samples(ns, without=("llm-provider-keys",))
    wait_reason(ns, "providerpolicy/primary", "SecretResolved", "SecretNotFound")

    header, row = ns.kubectl("get", "llmpp/primary", "-o", "wide").splitlines()
    shown = dict(zip(header.split(), row.split(), strict=False))
    assert (shown["ACCEPTED"], shown["SECRETRESOLVED"]) == ("True", "False")
    assert "SecretNotFound" in row

    ns.apply(operatorkit.samples()["llm-provider-keys"])
    ns.wait("providerpolicy/primary", "condition=SecretResolved")
    header, row = ns.kubectl("get", "llmpp/primary").splitlines()
    assert dict(zip(header.split(), row.split(), strict=False))["SECRETRESOLVED"] == "True"


# -- deletion and restarts ---------------------------------------------------------------


def test_deleting_the_gateway_collects_its_children(ns: Namespace) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    selector = f"llmgateway.io/gateway={GW}"
    assert ns.kubectl("get", "replicasets,pods", "-l", selector, "-o", "name").strip()

    ns.kubectl("delete", f"llmgw/{GW}")

    for ref in CHILDREN:
        ns.wait(ref, "delete")
    for kind in ("replicasets", "pods"):

        def collected(kind: str = kind) -> bool:
            return not ns.kubectl("get", kind, "-l", selector, "-o", "name").strip()

        eventually(collected, timeout=60, what=f"{kind} of the gateway collected")
    # What the gateway only referenced is not its to take along.
    for ref in ("secret/llm-provider-keys", "providerpolicy/primary", "providerpolicy/fallback"):
        assert ns.exists(ref), ref


def test_a_restarted_operator_adopts_its_children_without_writes(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    settled_ready(ns)
    refs = (f"llmgw/{GW}", "providerpolicy/primary", "providerpolicy/fallback", *CHILDREN)
    identity = {ref: ns.get(ref)["metadata"]["uid"] for ref in CHILDREN}
    versions = ns.resource_versions(*refs)

    operator_process.stop()
    offset = operator_process.offset()
    operator_process.start()

    # Its first pass over the gateway after the restart finds the children and writes nothing.
    operator_process.wait_for_log(rf"LLMGateway {ns.name}/{GW}: pass done", offset)
    time.sleep(QUIET_WINDOW)  # a bounded window for asserting absence; see QUIET_WINDOW
    assert operator_process.writes_since(offset, ns.name) == []
    assert ns.resource_versions(*refs) == versions
    assert {ref: ns.get(ref)["metadata"]["uid"] for ref in CHILDREN} == identity
    listing = ns.kubectl(
        "get", "configmaps,secrets,deployments", "-l", f"llmgateway.io/gateway={GW}", "-o", "name"
    )
    assert sorted(listing.split()) == sorted(
        [f"configmap/{GW}-proxy-config", f"secret/{GW}-provider-keys", f"deployment.apps/{GW}"]
    )


# -- secrecy (last: it reads everything the module's tests made the operator log) ------


def test_provider_keys_appear_nowhere_but_the_secrets(
    ns: Namespace, operator_process: OperatorProcess
) -> None:
    ns.kubectl("apply", "-f", str(operatorkit.SAMPLES))
    wait_ready(ns)
    rotate_primary_key(ns)
    forbidden = [
        form
        for key in (operatorkit.SAMPLE_KEY, ROTATED_KEY)
        for form in (key, base64.b64encode(key.encode()).decode())
    ]
    places = {
        "gateway status": json.dumps(ns.get(f"llmgw/{GW}").get("status")),
        "policy statuses": json.dumps(
            [ns.get(f"providerpolicy/{p}").get("status") for p in ("primary", "fallback")]
        ),
        "events": ns.kubectl("get", "events", "-o", "json"),
        "operator log": operator_process.text(),
    }
    for place, text in places.items():
        for form in forbidden:
            assert form not in text, f"a provider key appears in the {place}"
