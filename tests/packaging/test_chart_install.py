"""`helm install` of the chart into a real API server, as a user would run it.

Each test gets its own release and namespace. The namespace enforces the
"restricted" Pod Security Standard, so a pod spec that breaks it never gets
created and the Deployment never becomes available. The granted rights are
checked with `kubectl auth can-i` as the operator's ServiceAccount.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from clusterkit import ClusterHandle

from llmgw_dev import binaries

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = str(ROOT / "helm" / "llmgw")
SAMPLES = ROOT / "samples"


class Release:
    def __init__(self, cluster: ClusterHandle, suffix: str) -> None:
        self.cluster = cluster
        self.name = f"llmgw-{suffix}"
        self.namespace = f"llmgw-chart-{suffix}"
        self.extra_namespaces: list[str] = []

    def create_namespace(self, name: str) -> str:
        self.cluster.kubectl("create", "namespace", name)
        self.cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
        return name

    def install(self, *sets: str) -> None:
        args = ["install", self.name, CHART, "--namespace", self.namespace]
        args += [f"--set={s}" for s in sets]
        # kwok's fake nodes report the pods Running, so the watcher sees the Deployment available.
        proc = self.cluster.helm(*args, "--wait=watcher", "--timeout=3m", timeout=240, check=False)
        if proc.returncode != 0:
            state = self.cluster.kubectl(
                "get", "deployments,replicasets,pods,events", "-n", self.namespace, "-o", "wide", check=False
            )
            pytest.fail(f"helm install failed: {proc.stderr}\n{state.stdout}{state.stderr}")

    @property
    def account(self) -> str:
        # The chart's full name is "<release>-llmgw" unless the release name contains "llmgw".
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def can(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        where = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        as_account = ["--as", self.account, *where]
        # `can-i VERB kind/status` would ask about an object named "status".
        kind, _, sub = resource.partition("/")
        subresource = [f"--subresource={sub}"] if sub else []
        proc = self.cluster.kubectl("auth", "can-i", verb, kind, *subresource, *as_account, check=False)
        answer: str = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stderr
        return answer == "yes"


@pytest.fixture
def release(cluster: ClusterHandle) -> Iterator[Release]:
    binaries.ensure("helm")
    rel = Release(cluster, uuid.uuid4().hex[:8])
    rel.create_namespace(rel.namespace)
    try:
        yield rel
    finally:
        cluster.helm("uninstall", rel.name, "--namespace", rel.namespace, check=False)
        for namespace in [rel.namespace, *rel.extra_namespaces]:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_test_namespaces_really_refuse_pods_that_break_the_restricted_standard(release: Release) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unrestricted", "namespace": release.namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    proc = release.cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0
    assert "violates PodSecurity" in proc.stderr


def test_cluster_wide_install_runs_restricted_pods_with_least_privilege(release: Release) -> None:
    release.install("replicas=2")
    kubectl = release.cluster.kubectl
    ns = release.namespace
    jsonpath = "jsonpath={.status.availableReplicas}"
    available = kubectl("get", "deployment", release.name, "-n", ns, "-o", jsonpath)
    assert available.stdout == "2"
    kubectl("get", "serviceaccount", release.name, "-n", ns)
    kubectl("get", "clusterrole", release.name)
    kubectl("get", "clusterrolebinding", release.name)
    kubectl("get", "poddisruptionbudget", release.name, "-n", ns)
    kubectl("get", "clusterkopfpeering", release.name)
    kubectl("get", "crd", "llmgateways.llmgateway.io", "providerpolicies.llmgateway.io")
    assert not release.can("patch", "llmgateways.llmgateway.io")
    assert release.can("patch", "llmgateways.llmgateway.io/status")
    assert release.can("create", "secrets")
    assert release.can("patch", "deployments.apps")
    assert release.can("delete", "horizontalpodautoscalers.autoscaling")
    assert release.can("watch", "horizontalpodautoscalers.autoscaling")
    # A gateway whose template is removed switches to injection mode and deletes its Deployment.
    assert release.can("delete", "deployments.apps")
    assert not release.can("delete", "secrets")
    assert release.can("watch", "namespaces")
    assert release.can("patch", "clusterkopfpeerings.kopf.dev")
    assert not release.can("get", "pods")
    assert not release.can("delete", "namespaces")
    assert not release.can("create", "clusterroles.rbac.authorization.k8s.io")


def test_namespaced_install_is_confined_to_the_watched_namespaces(release: Release) -> None:
    watched = release.create_namespace(f"{release.namespace}-w")
    other = release.create_namespace(f"{release.namespace}-o")
    release.extra_namespaces += [watched, other]
    release.install(f"watchNamespaces={{{watched}}}", "peering.enabled=true")
    kubectl = release.cluster.kubectl
    kubectl("get", "role", release.name, "-n", watched)
    kubectl("get", "rolebinding", release.name, "-n", watched)
    kubectl("get", "kopfpeering", release.name, "-n", watched)
    assert release.can("create", "secrets", watched)
    assert release.can("patch", "providerpolicies.llmgateway.io/status", watched)
    assert release.can("patch", "kopfpeerings.kopf.dev", watched)
    assert not release.can("get", "secrets", other)
    assert not release.can("get", "secrets", release.namespace)
    assert release.can("list", "namespaces")
    assert not release.can("delete", "namespaces")
    assert release.can("watch", "customresourcedefinitions.apiextensions.k8s.io")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _service_account_kubeconfig(release: Release, path: Path) -> Path:
    """The admin kubeconfig's cluster, with the chart's ServiceAccount token as the only credential."""
    admin = yaml.safe_load(
        release.cluster.kubectl("config", "view", "--raw", "--minify", "-o", "yaml").stdout
    )
    token = release.cluster.kubectl("create", "token", release.name, "-n", release.namespace).stdout.strip()
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "operator"
    path.write_text(yaml.safe_dump(admin))
    return path


def _operator_command_line(
    release: Release, kubeconfig: Path, pod: str, webhook_port: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """The installed Deployment's arguments and environment, for a local process named like a pod."""
    got = release.cluster.kubectl("get", "deployment", release.name, "-n", release.namespace, "-o", "json")
    container = json.loads(got.stdout)["spec"]["template"]["spec"]["containers"][0]
    fields = {"metadata.name": pod, "metadata.namespace": release.namespace}
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    for item in container["env"]:
        value = item.get("value")
        env[item["name"]] = value if value is not None else fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    # The pod listens on 0.0.0.0:8080 and :8081; a local process takes free ports.
    liveness = f"--liveness=http://127.0.0.1:{_free_port()}/healthz"
    metrics = f"--metrics-port={_free_port()}"
    args = [re.sub(r"^--liveness=.*", liveness, arg) for arg in container["args"]]
    args = [re.sub(r"^--metrics-port=.*", metrics, arg) for arg in args]
    # And the webhook's 9443: on loopback, where a chart installed with webhook.url reaches it.
    hook = f"--webhook-port={webhook_port or _free_port()}"
    args = [re.sub(r"^--webhook-port=.*", hook, arg) for arg in args]
    if hook in args:
        args.append("--webhook-address=127.0.0.1")
    return [str(Path(sys.executable).with_name("llmgw-operator")), *args], env


class LocalOperator:
    """llmgw-operator run here as one of the chart's pods would run, with the chart's rights only."""

    def __init__(self, release: Release, folder: Path, pod: str, webhook_port: int | None = None) -> None:
        kubeconfig = _service_account_kubeconfig(release, folder / f"{pod}.kubeconfig")
        self.pod = pod
        command, env = _operator_command_line(release, kubeconfig, pod, webhook_port)
        self.log_path = folder / f"{pod}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@contextlib.contextmanager
def local_operators(
    release: Release, folder: Path, *pods: str, webhook_ports: list[int] | None = None
) -> Iterator[list[LocalOperator]]:
    started: list[LocalOperator] = []
    try:
        for i, pod in enumerate(pods):
            started.append(LocalOperator(release, folder, pod, webhook_ports[i] if webhook_ports else None))
        yield started
    finally:
        for operator in started:
            operator.stop()


@pytest.mark.parametrize(
    "cluster_wide", [pytest.param(True, id="cluster-wide"), pytest.param(False, id="namespaced-with-peering")]
)
def test_the_operator_reconciles_a_gateway_with_only_the_charts_rights(
    release: Release, tmp_path: Path, cluster_wide: bool
) -> None:
    watched = release.create_namespace(f"{release.namespace}-w")
    release.extra_namespaces.append(watched)
    release.install(*([] if cluster_wide else [f"watchNamespaces={{{watched}}}", "peering.enabled=true"]))
    with local_operators(release, tmp_path, f"{release.name}-local") as (operator,):
        for sample in ("secret", "providerpolicy-primary", "providerpolicy-fallback", "llmgateway"):
            release.cluster.kubectl("apply", "-n", watched, "-f", str(SAMPLES / f"{sample}.yaml"))
        waited = release.cluster.kubectl(
            "wait",
            "-n",
            watched,
            "--for=condition=Reconciled",
            "llmgateway/chat",
            "--timeout=90s",
            check=False,
            timeout=120,
        )
        output = operator.output()
        assert waited.returncode == 0, f"{waited.stderr}\noperator log:\n{output[-6000:]}"
        release.cluster.kubectl("get", "deployment", "chat", "-n", watched)
        # kopf logs refused requests (APIForbiddenError) and then degrades quietly.
        for refusal in ("Forbidden", "Not enough permissions"):
            assert refusal not in output, output[-6000:]


def test_replicas_take_distinct_peering_priorities(release: Release, tmp_path: Path) -> None:
    release.install("replicas=2")
    pods = [f"{release.name}-7778776bb-{suffix}" for suffix in ("dqcvk", "qfq4m")]
    with local_operators(release, tmp_path, *pods) as operators:
        deadline = time.monotonic() + 60
        peers: dict[str, dict[str, object]] = {}
        while len(peers) < 2:
            assert time.monotonic() < deadline, f"peers seen: {peers}\n{operators[0].output()[-3000:]}"
            got = release.cluster.kubectl("get", "clusterkopfpeering", release.name, "-o", "json")
            peers = json.loads(got.stdout).get("status") or {}
        assert set(peers) == set(pods)
        assert len({peer["priority"] for peer in peers.values()}) == 2
        for operator in operators:
            # kopf's warning when priorities tie, right before it pauses every peer.
            assert "Possibly conflicting operators with the same priority" not in operator.output()


def test_the_charts_webhook_injects_pods_with_only_the_charts_rights(
    release: Release, tmp_path: Path
) -> None:
    """The chart's webhook configuration, pointed at a local operator that has the chart's token: it
    creates its certificate Secret, publishes the CA bundle, and the API server's calls inject."""
    watched = release.create_namespace(f"{release.namespace}-w")
    release.extra_namespaces.append(watched)
    port = _free_port()
    release.install(f"webhook.url=https://127.0.0.1:{port}/inject")
    configuration = f"{release.name}-{release.namespace}"
    kubectl = release.cluster.kubectl
    operator = LocalOperator(release, tmp_path, f"{release.name}-local", webhook_port=port)
    try:
        published = kubectl(
            "wait",
            f"mutatingwebhookconfiguration/{configuration}",
            "--for=jsonpath={.webhooks[0].clientConfig.caBundle}",
            "--timeout=60s",
            check=False,
            timeout=90,
        )
        assert published.returncode == 0, (
            f"no caBundle published: {published.stderr}\n{operator.output()[-4000:]}"
        )
        for sample in ("secret", "providerpolicy-primary", "providerpolicy-fallback", "injection/llmgateway"):
            kubectl("apply", "-n", watched, "-f", str(SAMPLES / f"{sample}.yaml"))
        kubectl("wait", "-n", watched, "--for=condition=Ready", "llmgateway/chat-injected", "--timeout=90s")
        restricted = {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app", "labels": {"llmgateway.io/gateway": "chat-injected"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "securityContext": restricted}]},
        }
        # The namespace enforces the restricted Pod Security Standard: the sidecar meets it too.
        kubectl("apply", "-n", watched, "-f", "-", input=json.dumps(pod))
        live = json.loads(kubectl("get", "pod", "app", "-n", watched, "-o", "json").stdout)
        assert [c["name"] for c in live["spec"]["initContainers"]] == ["llmgw-proxy"]
        output = operator.output()
        for refusal in ("Forbidden", "forbidden", "Not enough permissions"):
            assert refusal not in output, output[-6000:]
    finally:
        operator.stop()


def test_every_replica_serves_the_webhook_whichever_holds_the_peering_lock(
    release: Release, tmp_path: Path
) -> None:
    """Two replicas in peering, started together (so both race to create the certificate Secret):
    kopf runs one and keeps the other standing by, and both answer admissions, the standby first.
    The chart's Service sends them to every ready replica; here the configuration's URL is pointed
    at one replica, then at the other."""
    watched = release.create_namespace(f"{release.namespace}-w")
    release.extra_namespaces.append(watched)
    ports = [_free_port(), _free_port()]
    release.install("replicas=2", f"webhook.url=https://127.0.0.1:{ports[0]}/inject")
    kubectl = release.cluster.kubectl
    pods = [f"{release.name}-7778776bb-{s}" for s in ("dqcvk", "qfq4m")]
    with local_operators(release, tmp_path, *pods, webhook_ports=ports):
        for sample in ("secret", "providerpolicy-primary", "providerpolicy-fallback", "injection/llmgateway"):
            kubectl("apply", "-n", watched, "-f", str(SAMPLES / f"{sample}.yaml"))
        kubectl("wait", "-n", watched, "--for=condition=Ready", "llmgateway/chat-injected", "--timeout=90s")
        # kopf runs the peer of the highest priority; the other stands by. Ask the lower one first.
        deadline = time.monotonic() + 60
        peers: dict[str, dict[str, object]] = {}
        while len(peers) < 2:
            assert time.monotonic() < deadline, f"peers seen: {peers}"
            got = kubectl("get", "clusterkopfpeering", release.name, "-o", "json")
            peers = json.loads(got.stdout).get("status") or {}
        by_priority = sorted(pods, key=lambda pod: int(str(peers[pod]["priority"])))
        ports = [ports[pods.index(pod)] for pod in by_priority]
        configuration = f"{release.name}-{release.namespace}"
        kubectl(
            "wait",
            f"mutatingwebhookconfiguration/{configuration}",
            "--for=jsonpath={.webhooks[0].clientConfig.caBundle}",
            "--timeout=60s",
        )
        restricted = {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for i, port in enumerate(ports):
            url = f"https://127.0.0.1:{port}/inject"
            patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url}]
            kubectl(
                "patch", "mutatingwebhookconfiguration", configuration, "--type=json", "-p", json.dumps(patch)
            )
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"app-{i}", "labels": {"llmgateway.io/gateway": "chat-injected"}},
                "spec": {
                    "containers": [{"name": "app", "image": "busybox:1.36", "securityContext": restricted}]
                },
            }
            created = kubectl("apply", "-n", watched, "-f", "-", input=json.dumps(pod), check=False)
            assert created.returncode == 0, created.stderr
            live = json.loads(kubectl("get", "pod", f"app-{i}", "-n", watched, "-o", "json").stdout)
            assert [c["name"] for c in live["spec"]["initContainers"]] == ["llmgw-proxy"]
