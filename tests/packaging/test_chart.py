"""The Helm chart lints, refuses bad values, renders least-privilege objects, and validates
against the API server's own schemas."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmgw_proxy.runtime import state
from llmgw_proxy.telemetry import metrics

CHART = Path(__file__).resolve().parents[2] / "helm" / "llmgw"
NAMESPACE = "llmgw-system"  # the namespace the conftest renders into
VERSION = metadata.version("llmgw")  # the chart's appVersion, so the default image tag
Render = Callable[[dict[str, Any]], list[dict[str, Any]]]
pytestmark = pytest.mark.slow

MONITORING_ON = {
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboard": {"enabled": True},
}
COMBINATIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"replicas": 3, "monitoring": MONITORING_ON}, id="three-replicas-with-monitoring"),
    pytest.param({"watchNamespaces": ["team-a", "team-b"]}, id="watch-two-namespaces"),
    pytest.param({"redis": {"enabled": True}}, id="with-redis"),
    pytest.param({"redis": {"enabled": True, "persistence": {"enabled": True}}}, id="with-persistent-redis"),
    pytest.param(
        {"replicas": 2, "watchNamespaces": ["team-a"], "monitoring": MONITORING_ON},
        id="watch-one-namespace-with-peering-and-monitoring",
    ),
    pytest.param(
        {
            "image": {"digest": "sha256:" + "0" * 64},
            "serviceAccount": {"create": False, "name": "existing"},
            "logLevel": "debug",
            "extraEnv": [{"name": "X", "value": "1"}],
        },
        id="digest-existing-service-account-debug",
    ),
]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def rules_granting(rules: list[dict[str, Any]], resource: str) -> set[str]:
    return {verb for rule in rules if resource in rule["resources"] for verb in rule["verbs"]}


# --- lint and values schema -------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("values", COMBINATIONS)
def test_chart_lints_clean(helm: Path, tmp_path: Path, values: dict[str, Any], strict: bool) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [str(helm), "lint", str(CHART), "-f", str(values_file), *(["--strict"] if strict else [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        pytest.param({"replicaz": 2}, "replicaz", id="unknown-top-level-key"),
        pytest.param({"image": {"tagg": "x"}}, "tagg", id="unknown-image-key"),
        pytest.param({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", id="namespace-not-dns-label"),
        pytest.param({"watchNamespaces": ["a", "a"]}, "/watchNamespaces", id="duplicate-namespace"),
        pytest.param({"replicas": -1}, "/replicas", id="negative-replicas"),
        pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest-not-sha256"),
        pytest.param({"logLevel": "trace"}, "/logLevel", id="unknown-log-level"),
        pytest.param(
            {"monitoring": {"prometheusRule": {"errorRatio": 2}}}, "errorRatio", id="ratio-above-one"
        ),
        pytest.param({"monitoring": {"podMonitor": {"interval": "often"}}}, "interval", id="bad-duration"),
    ],
)
def test_values_schema_refuses_bad_values(
    helm_template: Callable[..., str], values: dict[str, Any], complaint: str
) -> None:
    assert complaint in helm_template(values, check=False)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, ["watches every namespace."], id="defaults"),
        pytest.param(
            {"watchNamespaces": ["team-a", "team-b"], "replicas": 2, "monitoring": MONITORING_ON},
            ["the namespaces team-a, team-b", 'kopf peering "r-llmgw"', "PodMonitor r-llmgw-sidecars"],
            id="namespaces-peering-monitoring",
        ),
    ],
)
def test_notes_say_what_was_installed(helm: Path, values: dict[str, Any], expected: list[str]) -> None:
    sets = [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]
    args = [str(helm), "install", "r", str(CHART), "--dry-run=client", "-n", NAMESPACE, *sets]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"installed as r-llmgw in namespace {NAMESPACE}" in notes
    for text in expected:
        assert text in notes


# --- the operator's Deployment ----------------------------------------------------------------


@pytest.mark.parametrize("values", COMBINATIONS)
def test_pods_meet_the_restricted_pod_security_standard(render: Render, values: dict[str, Any]) -> None:
    spec = one(render(values), "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & spec.keys()
    assert all({"emptyDir"} >= volume.keys() - {"name"} for volume in spec.get("volumes", []))
    for container in spec["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx.get("privileged", False) is False
        assert ctx.get("runAsUser", spec["securityContext"]["runAsUser"]) != 0


def test_defaults_watch_the_whole_cluster_with_one_standalone_replica(render: Render) -> None:
    docs = render({})
    deployment = one(docs, "Deployment")
    container = operator_container(docs)
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert container["image"] == f"ghcr.io/llmgw/llmgw-operator:{VERSION}"
    assert container["args"] == [
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=8081",
        "--data-plane-period=15",
        "--data-plane-timeout=2",
        "--data-plane-concurrency=64",
        "--data-plane-rate=100",
        "--standalone",
        "--webhook-port=9443",
        "--webhook-secret=r-llmgw-webhook-tls",
        "--webhook-failure-policy=Fail",
        "--webhook-configuration=r-llmgw-llmgw-system",
        "--webhook-cert-validity=7776000",
        "--webhook-host=r-llmgw-webhook.llmgw-system.svc",
        "--webhook-host=r-llmgw-webhook.llmgw-system.svc.cluster.local",
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["ports"] == [
        {"name": "liveness", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},
        {"name": "webhook", "containerPort": 9443, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert env_of(container)["LLMGW_PROXY_IMAGE"] == f"ghcr.io/llmgw/llmgw-proxy:{VERSION}"
    assert "LLMGW_PEERING_PRIORITY_FROM_POD_NAME" not in env_of(container)
    assert not of_kind(docs, "PodDisruptionBudget")
    assert not [d for d in docs if d["apiVersion"].startswith(("kopf.dev/", "monitoring.coreos.com/"))]


def test_several_replicas_peer_with_distinct_priorities_and_keep_one_available(render: Render) -> None:
    docs = render({"replicas": 3})
    container = operator_container(docs)
    peering = one(docs, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in container["args"]
    assert "--standalone" not in container["args"]
    assert not [a for a in container["args"] if a.startswith("--priority")]
    env = env_of(container)
    assert env["LLMGW_PEERING_PRIORITY_FROM_POD_NAME"] == "true"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]


def test_peering_can_be_switched_on_for_a_single_replica_under_a_chosen_name(render: Render) -> None:
    docs = render({"peering": {"enabled": True, "name": "llmgw-peers"}})
    assert "--peering=llmgw-peers" in operator_container(docs)["args"]
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "llmgw-peers"
    assert not of_kind(docs, "PodDisruptionBudget")


def test_a_digest_pins_the_image_over_the_tag(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    docs = render({"image": {"tag": "9.9.9", "digest": digest}, "proxyImage": {"tag": "1.2.3"}})
    container = operator_container(docs)
    assert container["image"] == f"ghcr.io/llmgw/llmgw-operator@{digest}"
    assert env_of(container)["LLMGW_PROXY_IMAGE"] == "ghcr.io/llmgw/llmgw-proxy:1.2.3"


def test_data_plane_polling_reaches_the_operator_as_flags(render: Render) -> None:
    plane = {"period": 5, "timeout": 0.5, "concurrency": 8, "rate": 20}
    args = operator_container(render({"dataPlane": plane}))["args"]
    assert [a for a in args if "data-plane" in a] == [
        "--data-plane-period=5",
        "--data-plane-timeout=0.5",
        "--data-plane-concurrency=8",
        "--data-plane-rate=20",
    ]


def test_gateway_pod_rules_reach_the_operator_as_flags(render: Render) -> None:
    assert not [a for a in operator_container(render({}))["args"] if "allow" in a]
    pods = {
        "allowedServiceAccounts": ["app", "batch"],
        "allowPrivileged": True,
        "allowHostNamespaces": True,
        "allowHostPath": True,
    }
    args = operator_container(render({"gatewayPods": pods}))["args"]
    assert [a for a in args if "allow" in a] == [
        "--allowed-service-account=app",
        "--allowed-service-account=batch",
        "--allow-privileged",
        "--allow-host-namespaces",
        "--allow-host-path",
    ]


# --- RBAC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", COMBINATIONS)
def test_rbac_never_grants_wildcards_or_more_than_listing_pods(
    render: Render, values: dict[str, Any]
) -> None:
    docs = render(values)
    for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['kind']} {role['metadata']['name']}: {rule}"
            assert not {"pods/exec", "nodes"} & set(rule["resources"])
            if "pods" in rule["resources"]:  # listed to poll the ready ones' GET /status
                assert (rule["resources"], rule["verbs"]) == (["pods"], ["list"])


def test_cluster_wide_install_binds_one_cluster_role(render: Render) -> None:
    docs = render({"replicas": 2})
    role = one(docs, "ClusterRole")
    rules = role["rules"]
    assert rules_granting(rules, "namespaces") == {"list", "watch"}
    assert rules_granting(rules, "pods") == {"list"}
    assert rules_granting(rules, "customresourcedefinitions") == {"get", "list", "watch"}
    assert rules_granting(rules, "llmgateways") == {"get", "list", "watch"}
    assert rules_granting(rules, "llmgateways/status") == {"patch"}
    assert rules_granting(rules, "providerpolicies/status") == {"patch"}
    for child in ("secrets", "configmaps"):
        assert rules_granting(rules, child) == {"get", "list", "watch", "create", "patch"}
    # delete: a gateway whose template is removed switches to injection mode.
    assert rules_granting(rules, "deployments") == {"get", "list", "watch", "create", "patch", "delete"}
    assert rules_granting(rules, "mutatingwebhookconfigurations") == {"get", "patch"}
    assert rules_granting(rules, "horizontalpodautoscalers") == {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    }
    assert rules_granting(rules, "events") == {"create"}
    assert rules_granting(rules, "clusterkopfpeerings") == {"get", "list", "watch", "patch"}
    # The one Role: the webhook's certificate Secret in the release's namespace.
    assert [r["metadata"]["name"] for r in of_kind(docs, "Role")] == ["r-llmgw-webhook"]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(docs, "ServiceAccount")["metadata"]["name"],
            "namespace": NAMESPACE,
        }
    ]


def test_standalone_operator_gets_no_peering_rights(render: Render) -> None:
    rules = one(render({}), "ClusterRole")["rules"]
    assert not [rule for rule in rules if "kopf.dev" in rule["apiGroups"]]


def test_watched_namespaces_get_a_role_each_and_only_crd_and_namespace_reads_cluster_wide(
    render: Render,
) -> None:
    docs = render({"watchNamespaces": ["team-a", "team-b"], "replicas": 2})
    container = operator_container(docs)
    assert container["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in container["args"]
    cluster_rules = one(docs, "ClusterRole")["rules"]
    assert cluster_rules == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["r-llmgw-llmgw-system"],
            "verbs": ["get", "patch"],
        },
    ]
    roles = {
        r["metadata"]["namespace"]: r
        for r in of_kind(docs, "Role")
        if r["metadata"]["namespace"] != NAMESPACE
    }
    bindings = {
        b["metadata"]["namespace"]: b
        for b in of_kind(docs, "RoleBinding")
        if b["metadata"]["namespace"] != NAMESPACE
    }
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for namespace, role in roles.items():
        assert rules_granting(role["rules"], "secrets") == {"get", "list", "watch", "create", "patch"}
        assert rules_granting(role["rules"], "kopfpeerings") == {"get", "list", "watch", "patch"}
        assert bindings[namespace]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert bindings[namespace]["subjects"][0]["namespace"] == NAMESPACE
    peerings = of_kind(docs, "KopfPeering")
    assert {p["metadata"]["namespace"] for p in peerings} == {"team-a", "team-b"}
    assert not of_kind(docs, "ClusterKopfPeering")


def test_rbac_and_service_account_can_be_left_to_the_user(render: Render) -> None:
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --- monitoring --------------------------------------------------------------------------------

# The proxy's metric names the alerts and the dashboard query; see llmgw_proxy.metrics.
PROXY_METRICS = {
    "llmgw_requests_total",
    "llmgw_request_duration_seconds_bucket",
    "llmgw_upstream_duration_seconds_bucket",
    "llmgw_upstream_duration_seconds_count",
    "llmgw_breaker_state",
    "llmgw_ratelimit_rejections_total",
    "llmgw_ratelimit_remaining",
    "llmgw_tokens_total",
    "llmgw_cache_lookups_total",
    "llmgw_in_flight_requests",
    "llmgw_config_reload_failures_total",
    "llmgw_config_generation",
    "llmgw_time_to_first_token_seconds_bucket",
}


def _queried_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bllmgw_[a-z_]+\b", text))


def test_the_redis_for_trying_shared_state_is_off_by_default_and_small_when_on(render: Render) -> None:
    assert not of_kind(render({}), "StatefulSet")
    docs = render({"redis": {"enabled": True}})
    redis = one(docs, "StatefulSet")
    service = next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == "r-llmgw-redis")
    assert redis["spec"]["replicas"] == 1
    assert service["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis"}]
    spec = redis["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--maxmemory" in container["args"] and "volumeClaimTemplates" not in redis["spec"]
    kept = one(
        render({"redis": {"enabled": True, "persistence": {"enabled": True, "size": "2Gi"}}}), "StatefulSet"
    )
    assert kept["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_monitoring_is_off_by_default(render: Render) -> None:
    assert not [d for d in render({}) if d["kind"] in ("PodMonitor", "PrometheusRule", "ConfigMap")]


def test_pod_monitor_scrapes_every_sidecars_admin_port(render: Render) -> None:
    docs = render({"monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    monitor = one(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"] == {
        "matchExpressions": [{"key": "llmgateway.io/gateway", "operator": "Exists"}]
    }
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "llmgw-admin", "path": "/metrics", "interval": "30s"}
    ]
    scoped = one(render({"watchNamespaces": ["team-a"], "monitoring": MONITORING_ON}), "PodMonitor")
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


# The operator's series the alerts query; tests/operator/integration/test_operator_metrics.py
# scrapes a running operator and finds each of them.
OPERATOR_METRICS = {
    "controller_runtime_reconcile_errors_total",
    "controller_runtime_reconcile_total",
    "workqueue_depth",
    "llmgw_operator_dataplane_provider_pods",
    "llmgw_operator_dataplane_pods",
}


def test_operator_alerts_cover_reconcile_errors_a_stuck_queue_providers_and_config(render: Render) -> None:
    rule = one(render({"monitoring": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    group = next(g for g in rule["spec"]["groups"] if g["name"] == "llmgw.operator")
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {
        "LLMGatewayOperatorReconcileErrors",
        "LLMGatewayOperatorQueueStuck",
        "LLMGatewayProvidersUnhealthy",
        "LLMGatewayConfigNotApplied",
    }
    assert alerts["LLMGatewayProvidersUnhealthy"]["expr"].rstrip().endswith("> 0.5")
    queried = set(
        re.findall(r"\b(?:llmgw_operator|controller_runtime|workqueue)_[a-z_]+\b", json.dumps(group))
    )
    assert queried == OPERATOR_METRICS


def test_operator_pod_monitor_scrapes_the_metrics_port(render: Render) -> None:
    monitor = one(render({"monitoring": {"operatorPodMonitor": {"enabled": True}}}), "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
    ]
    operator = one(render({}), "Deployment")
    assert monitor["spec"]["selector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]


def test_alerts_cover_errors_breakers_rate_limits_and_latency(render: Render) -> None:
    rule = one(
        render({"monitoring": {"prometheusRule": {"enabled": True, "errorRatio": 0.2}}}), "PrometheusRule"
    )
    sidecar = next(g for g in rule["spec"]["groups"] if g["name"] == "llmgw.sidecar")
    alerts = {r["alert"]: r for r in sidecar["rules"]}
    assert set(alerts) == {
        "LLMGatewayHighErrorRatio",
        "LLMGatewayCircuitBreakerOpen",
        "LLMGatewayRateLimitSaturated",
        "LLMGatewayHighLatencyP99",
    }
    assert alerts["LLMGatewayHighErrorRatio"]["expr"].rstrip().endswith("> 0.2")
    assert "== 2" in alerts["LLMGatewayCircuitBreakerOpen"]["expr"]
    for alert in alerts.values():
        assert alert["for"] == "10m"
        # Prometheus, not Helm, fills these in.
        assert "{{ $labels." in alert["annotations"]["description"]
    assert _queried_metrics(json.dumps(sidecar)) <= PROXY_METRICS


def test_dashboard_is_a_grafana_config_map_over_the_proxy_metrics(render: Render) -> None:
    config_map = one(render({"monitoring": {"dashboard": {"enabled": True}}}), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["llmgw.json"])
    assert dashboard["uid"] == "llmgw-sidecars"
    queried = _queried_metrics(json.dumps(dashboard["panels"]))
    assert queried <= PROXY_METRICS
    assert {"llmgw_requests_total", "llmgw_breaker_state", "llmgw_ratelimit_rejections_total"} <= queried


def test_chart_queries_only_metrics_the_proxy_exports() -> None:
    exported: set[str] = set()
    for family in metrics.Metrics(state.Live(time.monotonic)).registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        exported |= {family.name + suffix for suffix in suffixes}
    missing = PROXY_METRICS - exported
    assert not missing, f"the chart queries metrics the proxy does not export: {sorted(missing)}"


# --- schemas of the API server -----------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize("values", COMBINATIONS)
def test_rendered_objects_validate_against_the_api_servers_schemas(
    helm_template: Callable[..., str], kubeconform: Path, kubeconform_schemas: str, values: dict[str, Any]
) -> None:
    manifests = helm_template(values, "--include-crds")
    proc = subprocess.run(
        [
            str(kubeconform),
            "-strict",
            "-summary",
            "-schema-location",
            kubeconform_schemas,
            # No prometheus-operator CRDs exist offline to make schemas from.
            "-skip",
            "PodMonitor,PrometheusRule",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Invalid: 0, Errors: 0" in proc.stdout


@pytest.mark.cluster
def test_kubeconform_with_these_schemas_refuses_an_unknown_field(
    helm_template: Callable[..., str], kubeconform: Path, kubeconform_schemas: str
) -> None:
    manifests = helm_template({}).replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecondz:")
    proc = subprocess.run(
        [str(kubeconform), "-strict", "-schema-location", kubeconform_schemas, "-"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "terminationGracePeriodSecondz" in proc.stdout


def test_every_alert_names_only_labels_its_query_keeps(render: Render) -> None:
    # Each rule's result carries the labels of its leftmost aggregation (the other sides only
    # match or filter it), so a description may name only those; any other renders empty.
    rule = one(render({"monitoring": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            lines = alert["expr"].splitlines()
            query = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
            kept = re.search(r"\bby \(([^)]*)\)", query)
            assert kept is not None, alert["alert"]
            named = set(re.findall(r"\$labels\.(\w+)", json.dumps(alert["annotations"])))
            assert named <= {label.strip() for label in kept.group(1).split(",")}, alert["alert"]
