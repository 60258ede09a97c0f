"""Injection mode against the real API server: it calls the operator's webhook over TLS on loopback.

The operator runs as a process with its webhook on 127.0.0.1; the
MutatingWebhookConfiguration is the chart's own, rendered with ``webhook.url``
pointing there (the local API server cannot reach a Service: it has no
cluster network, and Endpoints may not name loopback addresses) and limited
to this module's namespaces. The operator makes its certificates, publishes
the CA bundle in that configuration, and renews the serving certificate every
20 s here (--webhook-cert-validity=30), so every test also runs across
rotations.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import operatorkit
import pytest
import yaml
from clusterkit import ClusterHandle
from operatorkit import Namespace, OperatorProcess, eventually

from llmgw_dev import binaries
from llmgw_operator import admission, kube, login, webhook

pytestmark = pytest.mark.cluster

RUN = secrets.token_hex(3)
PORT = operatorkit.free_port()
CONFIGURATION = f"llmgw-it-{RUN}"
SECRET = "llmgw-webhook-tls"
SELECT = {"llmgw-it-webhook": RUN}
GW = "chat"
VALIDITY = 30


@pytest.fixture(scope="module")
def system_namespace(cluster: ClusterHandle) -> Iterator[str]:
    name = f"opit-hook-{RUN}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator_args(system_namespace: str) -> tuple[str, ...]:
    return (
        f"--webhook-port={PORT}",
        "--webhook-address=127.0.0.1",
        "--webhook-host=127.0.0.1",
        f"--webhook-secret={system_namespace}/{SECRET}",
        f"--webhook-configuration={CONFIGURATION}",
        f"--webhook-cert-validity={VALIDITY}",
        "--webhook-cert-check=1",
        "--data-plane-period=1",
    )


def chart_configuration(*sets: str) -> dict[str, Any]:
    """The chart's MutatingWebhookConfiguration, as `helm template` renders it."""
    helm = binaries.ensure("helm")
    args = [
        f"--set=webhook.url=https://127.0.0.1:{PORT}/inject",
        *(f"--set-string=webhook.namespaceSelector.matchLabels.{k}={v}" for k, v in SELECT.items()),
        *(f"--set={s}" for s in sets),
    ]
    out = subprocess.run(
        [str(helm), "template", "it", str(operatorkit.ROOT / "helm" / "llmgw"), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (found,) = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "MutatingWebhookConfiguration"]
    found["metadata"]["name"] = CONFIGURATION
    document: dict[str, Any] = found
    return document


@pytest.fixture(scope="module")
def configuration(cluster: ClusterHandle, operator_process: OperatorProcess) -> Iterator[dict[str, Any]]:
    document = chart_configuration()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))

    def published() -> str | None:
        live = json.loads(
            cluster.kubectl("get", "mutatingwebhookconfiguration", CONFIGURATION, "-o", "json").stdout
        )
        bundle: str | None = live["webhooks"][0]["clientConfig"].get("caBundle")
        return bundle

    eventually(published, 60, "the operator's CA bundle in the webhook configuration")
    try:
        yield document
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", CONFIGURATION, check=False)


@pytest.fixture
def app(ns: Namespace, configuration: dict[str, Any]) -> Namespace:
    """A namespace the webhook serves, with an injection-mode gateway that is Ready."""
    ns.kubectl("label", "namespace", ns.name, *(f"{k}={v}" for k, v in SELECT.items()))
    samples = operatorkit.samples()
    gateway = {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "LLMGateway",
        "metadata": {"name": GW},
        "spec": {"routes": samples["chat"]["spec"]["routes"]},
    }
    ns.apply(samples["llm-provider-keys"], samples["primary"], samples["fallback"], gateway)
    ns.wait(f"llmgw/{GW}", "condition=Ready", timeout=60)
    return ns


def pods(ns: Namespace, selector: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = ns.get("pods", "-l", selector)["items"]
        return items if len(items) >= count else None

    return eventually(found, 60, f"{count} pods {selector}")


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    listed = spec.get("initContainers", []) + spec["containers"]
    return [c for c in listed if c["name"] == "llmgw-proxy"]


def assert_injected(pod: dict[str, Any]) -> None:
    (sidecar,) = sidecars(pod)
    spec = pod["spec"]
    assert spec["initContainers"][0]["name"] == "llmgw-proxy"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == operatorkit.PROXY_IMAGE
    assert {
        p: sidecar[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    } == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["llmgw-config"]["configMap"]["name"] == f"{GW}-proxy-config"
    assert volumes["llmgw-keys"]["secret"]["secretName"] == f"{GW}-provider-keys"
    assert pod["metadata"]["annotations"]["llmgateway.io/injected"] == GW


def requests_per_minute(ns: Namespace, expected: int) -> None:
    def rendered() -> bool:
        limit = ns.proxy_config(GW)["providers"]["primary"].get("rateLimit") or {}
        return bool(limit.get("requestsPerMinute") == expected)

    eventually(rendered, 30, f"primary's requestsPerMinute {expected} per pod")


def labelled(document: dict[str, Any], gateway: str = GW) -> dict[str, Any]:
    document["spec"]["template"]["metadata"].setdefault("labels", {})["llmgateway.io/gateway"] = gateway
    return document


def test_an_injection_mode_gateway_has_config_and_keys_but_no_deployment(app: Namespace) -> None:
    assert app.exists(f"configmap/{GW}-proxy-config")
    assert app.exists(f"secret/{GW}-provider-keys")
    assert not app.exists(f"deployment/{GW}")
    ready = app.condition(f"llmgw/{GW}", "Ready")
    assert ready is not None and ready["reason"] == "InjectionReady"


def test_pods_of_a_kubectl_created_deployment_get_the_sidecar(app: Namespace) -> None:
    document = json.loads(
        app.kubectl(
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=2",
            "--dry-run=client",
            "-o=json",
        )
    )
    app.kubectl("create", "-f", "-", input=json.dumps(labelled(document)))
    for pod in pods(app, "app=web", 2):
        assert_injected(pod)
        assert [c["name"] for c in pod["spec"]["containers"]] == ["busybox"]
    # The user's Deployment stays as they wrote it: the webhook changes pods only.
    template = app.get("deployment/web")["spec"]["template"]["spec"]
    assert "initContainers" not in template


def test_status_counts_injected_pods_and_limits_are_split_across_them(app: Namespace) -> None:
    document = json.loads(
        app.kubectl(
            "create",
            "deployment",
            "web",
            "--image=busybox:1.36",
            "--replicas=2",
            "--dry-run=client",
            "-o=json",
        )
    )
    app.kubectl("create", "-f", "-", input=json.dumps(labelled(document)))
    pods(app, "app=web", 2)
    app.wait(f"llmgw/{GW}", "jsonpath={.status.injection.current}=2")
    injected = app.get(f"llmgw/{GW}")["status"]["injection"]
    assert injected == {"image": operatorkit.PROXY_IMAGE, "pods": 2, "current": 2, "outdated": 0}

    requests_per_minute(app, 300)  # 600 shared by the 2 injected pods

    # A new sidecar image cannot reach running pods: they are counted as outdated.
    app.patch(f"llmgw/{GW}", {"spec": {"proxy": {"image": "registry.example/llmgw-proxy:it-2"}}})
    app.wait(f"llmgw/{GW}", "jsonpath={.status.injection.outdated}=2")
    assert app.get(f"llmgw/{GW}")["status"]["injection"]["current"] == 0

    app.kubectl("scale", "deployment/web", "--replicas=4")
    app.wait(f"llmgw/{GW}", "jsonpath={.status.injection.pods}=4")
    injected = app.get(f"llmgw/{GW}")["status"]["injection"]
    assert (injected["current"], injected["outdated"]) == (2, 2)
    requests_per_minute(app, 150)  # and re-split as they come


def test_statefulset_and_job_pods_get_the_sidecar(app: Namespace) -> None:
    container = {"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container]}},
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "batch"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "batch"}},
                "spec": {"containers": [container], "restartPolicy": "Never"},
            }
        },
    }
    app.apply(labelled(statefulset), labelled(job))
    assert_injected(pods(app, "app=db", 1)[0])
    assert_injected(pods(app, "app=batch", 1)[0])


def test_a_pod_without_the_label_is_untouched(app: Namespace) -> None:
    app.kubectl("run", "plain", "--image=busybox:1.36", "--restart=Never", "--", "sleep", "3600")
    pod = app.get("pod/plain")
    assert sidecars(pod) == []
    assert "llmgateway.io/injected" not in (pod["metadata"].get("annotations") or {})


def test_a_pod_naming_a_missing_gateway_is_refused_with_the_gateways_name(app: Namespace) -> None:
    proc = app.cluster.kubectl(
        "-n",
        app.name,
        "run",
        "lost",
        "--image=busybox:1.36",
        "--restart=Never",
        "--labels=llmgateway.io/gateway=nope",
        check=False,
    )
    assert proc.returncode != 0
    assert f'LLMGateway "nope", which does not exist in namespace {app.name}' in proc.stderr
    assert not app.exists("pod/lost")


def test_a_pod_applied_twice_has_one_sidecar(app: Namespace) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "twice", "labels": {"llmgateway.io/gateway": GW}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
    }
    app.apply(pod)
    app.apply(pod)
    live = app.get("pod/twice")
    assert_injected(live)
    assert [v["name"] for v in live["spec"]["volumes"]] == ["llmgw-config", "llmgw-keys"]


def _secret_cert(cluster: ClusterHandle, namespace: str) -> bytes:
    return _secret_cert_named(cluster, namespace, SECRET)


def _secret_cert_named(cluster: ClusterHandle, namespace: str, name: str) -> bytes:
    data = json.loads(cluster.kubectl("-n", namespace, "get", "secret", name, "-o", "json").stdout)["data"]
    return base64.b64decode(data["tls.crt"])


def _served_cert() -> bytes:
    pem = ssl.get_server_certificate(("127.0.0.1", PORT))
    return ssl.PEM_cert_to_DER_cert(pem)


def test_certificate_rotation_does_not_interrupt_admission(
    app: Namespace, cluster: ClusterHandle, system_namespace: str
) -> None:
    first = _secret_cert(cluster, system_namespace)
    created = 0
    # Pods keep being created, one after another, until a renewed certificate is stored and
    # served, and two more after that; every creation must be admitted and injected.
    after = 0
    while after < 2:
        assert created < 200, "no renewal within 200 pod creations"
        name = f"r{created}"
        app.kubectl(
            "run", name, "--image=busybox:1.36", "--restart=Never", f"--labels=llmgateway.io/gateway={GW}"
        )
        assert_injected(app.get(f"pod/{name}"))
        created += 1
        stored = _secret_cert(cluster, system_namespace)
        if stored != first and ssl.DER_cert_to_PEM_cert(_served_cert()).encode() == stored:
            after += 1


def test_with_the_operator_stopped_fail_refuses_labelled_pods_and_admits_the_rest(
    app: Namespace, operator_process: OperatorProcess
) -> None:
    operator_process.stop()
    try:
        refused = app.cluster.kubectl(
            "-n",
            app.name,
            "run",
            "down",
            "--image=busybox:1.36",
            "--restart=Never",
            f"--labels=llmgateway.io/gateway={GW}",
            check=False,
        )
        assert refused.returncode != 0
        assert 'failed calling webhook "inject.llmgateway.io"' in refused.stderr
        app.kubectl("run", "unlabelled", "--image=busybox:1.36", "--restart=Never")
        assert app.exists("pod/unlabelled") and not app.exists("pod/down")
    finally:
        operator_process.start()


def test_removing_the_template_switches_an_owned_gateway_to_injection(app: Namespace) -> None:
    owned = operatorkit.samples()["chat"]
    owned["metadata"]["name"] = "owned"
    app.apply(owned)
    app.wait("llmgw/owned", "condition=Reconciled")
    assert app.exists("deployment/owned")
    app.patch("llmgw/owned", {"spec": {"template": None, "replicas": None}})
    eventually(lambda: not app.exists("deployment/owned"), 30, "the owned Deployment deleted")
    app.wait("llmgw/owned", "jsonpath={.status.conditions[?(@.type=='Ready')].reason}=InjectionReady")


async def test_under_ignore_a_pod_the_sidecar_cannot_join_is_admitted_with_a_warning(
    app: Namespace, cluster: ClusterHandle
) -> None:
    # The decision the handler returns, against the real API: refused under Fail (above), a
    # warning and no patch under Ignore, never a half-injected pod.
    client = kube.Client(lambda: login.from_kubeconfig(cluster.kubeconfig))
    injector = admission.Injector(client, operatorkit.PROXY_IMAGE, native_sidecar=True, fail_closed=False)
    pod = {"metadata": {"labels": {"llmgateway.io/gateway": "nope"}}, "spec": {"containers": [{"name": "a"}]}}
    decision = await injector.decide(pod, app.name)
    assert decision.patch == []
    (warning,) = decision.warnings
    assert 'LLMGateway "nope", which does not exist' in warning and "failurePolicy Ignore" in warning
    closed = admission.Injector(client, operatorkit.PROXY_IMAGE, native_sidecar=True)
    with pytest.raises(admission.Refused, match='LLMGateway "nope"'):
        await closed.decide(pod, app.name)
    assert (
        await closed.decide({**pod, "metadata": {"labels": {"llmgateway.io/gateway": GW}}}, app.name)
    ).patch
    await client.close()


async def test_replicas_racing_to_create_the_certificates_all_load_the_winners(
    cluster: ClusterHandle, system_namespace: str
) -> None:
    # Replicas start together: each reads no Secret, each makes a bundle, one create wins (409 for
    # the others), and every replica must serve the stored certificate at once, not a period later.
    client = kube.Client(lambda: login.from_kubeconfig(cluster.kubeconfig))
    name = f"race-{secrets.token_hex(3)}"
    servers = [webhook.Server("127.0.0.1", 0) for _ in range(3)]
    keepers = [webhook.Keeper(client, s, system_namespace, name, ("127.0.0.1",)) for s in servers]
    await asyncio.gather(*(k.check() for k in keepers))
    stored = _secret_cert_named(cluster, system_namespace, name)
    assert [s.certificate for s in servers] == [stored] * 3
    await client.close()
