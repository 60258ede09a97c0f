"""The chart's injection webhook: its configuration, Service, certificates' two options and RBAC."""

from __future__ import annotations

from typing import Any

import pytest
from test_chart import NAMESPACE, Render, of_kind, one, operator_container, rules_granting

pytestmark = pytest.mark.slow

SERVICE_HOSTS = [f"r-llmgw-webhook.{NAMESPACE}.svc", f"r-llmgw-webhook.{NAMESPACE}.svc.cluster.local"]


def webhook_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    found: dict[str, Any] = hook
    return found


def test_labelled_pods_reach_every_replica_through_the_service(render: Render) -> None:
    docs = render({"replicas": 3})
    hook = webhook_of(docs)
    assert hook["clientConfig"]["service"] == {
        "name": "r-llmgw-webhook",
        "namespace": NAMESPACE,
        "path": "/inject",
        "port": 443,
    }
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    # Every replica, not only the one holding the peering lock: the selector names no role.
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in operator_container(docs)["ports"]


def test_the_configuration_is_scoped_short_and_fails_closed_by_default(render: Render) -> None:
    hook = webhook_of(render({}))
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 5
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["sideEffects"] == "None"
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["objectSelector"] == {
        "matchExpressions": [
            {"key": "llmgateway.io/gateway", "operator": "Exists"},
            {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["llmgw-operator"]},
        ]
    }
    # The operator's own pods never wait for the operator.
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [NAMESPACE, "kube-system"]


def test_failure_policy_ignore_reaches_the_configuration_and_the_operator(render: Render) -> None:
    docs = render({"webhook": {"failurePolicy": "Ignore"}})
    assert webhook_of(docs)["failurePolicy"] == "Ignore"
    assert "--webhook-failure-policy=Ignore" in operator_container(docs)["args"]


def test_self_managed_certificates_need_one_secret_and_the_configurations_ca_bundle(render: Render) -> None:
    docs = render({})
    args = operator_container(docs)["args"]
    assert "--webhook-secret=r-llmgw-webhook-tls" in args
    assert "--webhook-configuration=r-llmgw-llmgw-system" in args
    assert [a for a in args if a.startswith("--webhook-host=")] == [
        f"--webhook-host={h}" for h in SERVICE_HOSTS
    ]
    assert one(docs, "MutatingWebhookConfiguration")["metadata"]["name"] == "r-llmgw-llmgw-system"
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"][0] == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["r-llmgw-webhook-tls"],
        "verbs": ["get", "patch"],
    }
    assert role["rules"][1]["verbs"] == ["create"]
    cluster_rules = one(docs, "ClusterRole")["rules"]
    (rule,) = [r for r in cluster_rules if "mutatingwebhookconfigurations" in r["resources"]]
    assert rule["resourceNames"] == ["r-llmgw-llmgw-system"] and rule["verbs"] == ["get", "patch"]


def test_cert_manager_fills_the_secret_and_injects_the_ca_bundle(render: Render) -> None:
    docs = render({"webhook": {"certificates": "cert-manager"}})
    args = operator_container(docs)["args"]
    assert "--webhook-certs=external" in args
    assert not [a for a in args if a.startswith("--webhook-configuration")]
    configuration = one(docs, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/r-llmgw-webhook"
    }
    certificate = one(docs, "Certificate")
    assert certificate["spec"]["secretName"] == "r-llmgw-webhook-tls"
    assert certificate["spec"]["dnsNames"] == SERVICE_HOSTS
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": "r-llmgw-webhook"}
    assert one(docs, "Issuer")["spec"] == {"selfSigned": {}}
    # The operator only reads the Secret, and never touches the configuration.
    assert one(docs, "Role")["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["r-llmgw-webhook-tls"],
            "verbs": ["get"],
        }
    ]
    assert rules_granting(one(docs, "ClusterRole")["rules"], "mutatingwebhookconfigurations") == set()


def test_a_named_issuer_replaces_the_self_signed_one(render: Render) -> None:
    issuer = {"kind": "ClusterIssuer", "name": "corp-ca", "group": "cert-manager.io"}
    docs = render({"webhook": {"certificates": "cert-manager", "certManager": {"issuerRef": issuer}}})
    assert one(docs, "Certificate")["spec"]["issuerRef"] == issuer


def test_a_url_replaces_the_service_for_an_operator_outside_the_cluster(render: Render) -> None:
    docs = render({"webhook": {"url": "https://127.0.0.1:9443/inject"}})
    assert webhook_of(docs)["clientConfig"] == {"url": "https://127.0.0.1:9443/inject"}
    assert not of_kind(docs, "Service")
    assert "--webhook-host=127.0.0.1" in operator_container(docs)["args"]


def test_without_the_webhook_nothing_of_it_is_rendered(render: Render) -> None:
    docs = render({"webhook": {"enabled": False}})
    assert not of_kind(docs, "MutatingWebhookConfiguration") and not of_kind(docs, "Service")
    assert not of_kind(docs, "Role")
    assert not [a for a in operator_container(docs)["args"] if a.startswith("--webhook")]
    assert rules_granting(one(docs, "ClusterRole")["rules"], "mutatingwebhookconfigurations") == set()
