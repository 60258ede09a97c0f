"""The control plane and the operator under failure, on a private control plane these tests break.

kube-apiserver and etcd are SIGKILLed and restarted in the middle of a 200-gateway apply, the
operator is SIGKILLed and restarted, the active one of two peered replicas is killed, one gateway
is edited by many clients at once, and the operator's connections to the API server go silent.
Each test asserts outcomes (every gateway Ready at its generation, exactly one child of each kind,
no orphans, the rendered config of the last spec, no writes at steady state); the durations are
printed (`-s`) and recorded in docs/reliability.md, never asserted.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import chaoskit
import operatorkit
import pytest
import yaml
from chaoskit import converge, convergence_problems
from operatorkit import OperatorProcess, eventually

from llmgw_dev import binaries
from llmgw_dev import cluster as local_cluster

pytestmark = pytest.mark.cluster

BULK = 200
# Generous: a loaded 2-core machine converges 200 gateways in well under this.
CONVERGE_TIMEOUT = 420
POLL_PERIOD = "--data-plane-period=5"
KOPF_PEERING_CRDS = operatorkit.ROOT / "helm" / "llmgw" / "crds" / "kopf-peering.yaml"


@pytest.fixture(scope="module")
def private() -> Iterator[local_cluster.Cluster]:
    """A control plane of this module's own: the tests kill its API server and etcd."""
    c = local_cluster.up(name=f"chaos-{os.getpid()}", nodes=0)
    try:
        c.kubectl("apply", "-f", "-", input=chaoskit.loopback_nodes())
        c.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=90s", timeout=120)
        c.kubectl("apply", "-f", str(operatorkit.CRDS), "-f", str(KOPF_PEERING_CRDS))
        c.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=90)
        yield c
    finally:
        local_cluster.down(c)


def start_operator(
    kubeconfig: pathlib.Path, log: pathlib.Path, namespace: str, *args: str, peering: str | None = None
) -> OperatorProcess:
    process = OperatorProcess(kubeconfig, log, namespaces=namespace, extra_args=args, peering=peering)
    process.start()
    return process


@pytest.fixture
def ns(private: local_cluster.Cluster) -> Iterator[str]:
    with chaoskit.namespace(private, f"chaos-{secrets.token_hex(4)}") as name:
        private.kubectl("apply", "-f", "-", input=chaoskit.as_list(chaoskit.shared_objects(name)))
        yield name


@pytest.fixture
def operator(private: local_cluster.Cluster, ns: str, tmp_path: pathlib.Path) -> Iterator[OperatorProcess]:
    process = start_operator(private.kubeconfig, tmp_path / "operator.log", ns, POLL_PERIOD)
    try:
        yield process
    finally:
        process.stop()


def apply_in_background(c: local_cluster.Cluster, documents: list[dict[str, Any]]) -> subprocess.Popen[str]:
    """``kubectl apply`` of one List, as a user or a CI job applies a directory, left running."""
    proc = subprocess.Popen(
        [str(binaries.ensure("kubectl")), "--kubeconfig", str(c.kubeconfig), "apply", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(chaoskit.as_list(documents))
    proc.stdin.close()
    return proc


def apply_until_accepted(c: local_cluster.Cluster, documents: list[dict[str, Any]]) -> None:
    """Apply again what the interrupted apply may have missed, as its user would (retrying while the
    control plane still refuses: etcd back is not yet the API server reconnected to it)."""

    def accepted() -> bool:
        proc = c.kubectl("apply", "-f", "-", input=chaoskit.as_list(documents), check=False, timeout=300)
        return proc.returncode == 0

    eventually(accepted, 120, "kubectl apply accepted after the restart")


def created(c: local_cluster.Cluster, namespace: str, at_least: int) -> int | None:
    try:
        count = len(chaoskit.gateways(c, namespace))
    except (AssertionError, OSError):
        return None
    return count if count >= at_least else None


def crash_mid_apply(c: local_cluster.Cluster, namespace: str, component: str) -> None:
    """Apply BULK gateways; once a quarter exist, SIGKILL ``component`` and start it again; apply
    again; then every gateway must converge with exactly its children."""
    names = {f"gw-{i:03d}" for i in range(BULK)}
    documents = [chaoskit.gateway(n, namespace) for n in sorted(names)]
    started = time.monotonic()
    applying = apply_in_background(c, documents)
    eventually(lambda: created(c, namespace, BULK // 4), 120, f"{BULK // 4} gateways created")
    ready_before = chaoskit.ready_count(c, namespace)
    killed = time.monotonic()
    local_cluster.kill(c, component)
    local_cluster.start_again(c, component)
    back = time.monotonic()
    applying.wait(timeout=300)
    apply_until_accepted(c, documents)
    took = converge(lambda: convergence_problems(c, namespace, names), CONVERGE_TIMEOUT, f"after {component}")
    total = time.monotonic() - started
    print(
        f"\n[chaos] {component} SIGKILLed with {ready_before}/{BULK} gateways Ready, back serving in "
        f"{back - killed:.1f}s; all {BULK} converged {total:.1f}s after the first apply "
        f"({took:.1f}s after the second apply)"
    )
    # The crash came in the middle: the scenario tested what it says.
    assert ready_before < BULK


def test_restart_helpers_bring_a_component_back_on_its_ports_with_its_data(
    private: local_cluster.Cluster,
) -> None:
    private.kubectl("create", "configmap", "survives", "-n", "default", "--from-literal=k=v")
    try:
        for name in ("etcd", "kube-apiserver"):
            before = local_cluster.component(private, name)
            with pytest.raises(local_cluster.ClusterError, match="still running"):
                local_cluster.start_again(private, name)
            after = local_cluster.restart(private, name)
            assert after.pid != before.pid
            assert after.argv == before.argv
            assert private.alive()[name]
            # The state file names the new process, so `down` from another process stops it.
            assert local_cluster.Cluster.load(private.name).components == private.components
        eventually(
            lambda: (
                private.kubectl("get", "configmap", "survives", "-n", "default", check=False).returncode == 0
            ),
            60,
            "the ConfigMap read back through the restarted API server from the restarted etcd",
        )
    finally:
        private.kubectl("delete", "configmap", "survives", "-n", "default", check=False)


def test_api_server_killed_mid_apply_every_gateway_converges_once(
    private: local_cluster.Cluster, ns: str, operator: OperatorProcess
) -> None:
    crash_mid_apply(private, ns, "kube-apiserver")


def test_etcd_killed_mid_apply_every_gateway_converges_once(
    private: local_cluster.Cluster, ns: str, operator: OperatorProcess
) -> None:
    crash_mid_apply(private, ns, "etcd")


def data_plane_seen(c: local_cluster.Cluster, namespace: str) -> list[str]:
    """Gateways whose pods the poller has not reported on yet (its first write after a start)."""
    return [g["metadata"]["name"] for g in chaoskit.gateways(c, namespace) if "config" not in g["status"]]


def test_operator_killed_mid_apply_converges_without_duplicates_and_then_writes_nothing(
    private: local_cluster.Cluster, ns: str, tmp_path: pathlib.Path
) -> None:
    log = tmp_path / "operator.log"
    process = start_operator(private.kubeconfig, log, ns, POLL_PERIOD)
    try:
        names = {f"gw-{i:03d}" for i in range(BULK // 2)}
        documents = [chaoskit.gateway(n, ns) for n in sorted(names)]
        private.kubectl("apply", "-f", "-", input=chaoskit.as_list(documents), timeout=300)
        eventually(lambda: chaoskit.ready_count(private, ns) >= len(names) // 4, 300, "a quarter Ready")
        ready_before = chaoskit.ready_count(private, ns)
        process.kill()
        started = time.monotonic()
        process.start()
        converge(lambda: convergence_problems(private, ns, names), CONVERGE_TIMEOUT, "after the restart")
        converge(lambda: data_plane_seen(private, ns), 120, "every gateway polled")
        took = time.monotonic() - started
        assert ready_before < len(names)

        # Steady state: a quiet window covering two poll rounds writes nothing at all: the
        # operator's own count, and every gateway's resourceVersion (any writer's change, in this
        # namespace only: the API server's counters also count earlier tests' namespaces, still
        # being deleted). It starts once both held still for a moment: a write in flight when they
        # are first read would be counted by the operator at once and land only inside the window.
        port = process.metrics_port
        quiet = threading.Event()

        def versions() -> dict[str, str]:
            return {
                g["metadata"]["name"]: g["metadata"]["resourceVersion"]
                for g in chaoskit.gateways(private, ns)
            }

        def settled() -> tuple[dict[str, float], dict[str, str]] | None:
            first = chaoskit.write_counts(port), versions()
            quiet.wait(3)  # how long the counts must hold still to call it the start of the window
            second = chaoskit.write_counts(port), versions()
            return first if first == second else None

        ours, theirs = eventually(settled, 120, "the operator's writes to settle")
        quiet.wait(12)  # an observation window: nothing to await, the assertion is that nothing happens
        assert chaoskit.write_counts(port) == ours
        assert versions() == theirs
        assert convergence_problems(private, ns, names) == []
        print(
            f"\n[chaos] operator SIGKILLed with {ready_before}/{len(names)} Ready; after its restart all "
            f"converged and polled in {took:.1f}s; 0 writes in the 12 s after"
        )
    finally:
        process.stop()


def test_edits_from_many_clients_end_at_the_last_spec(
    private: local_cluster.Cluster, ns: str, operator: OperatorProcess
) -> None:
    private.kubectl("apply", "-f", "-", input=json.dumps(chaoskit.gateway("edited", ns)))
    converge(lambda: convergence_problems(private, ns, {"edited"}), 120, "the gateway before the edits")
    clients, per_client = 5, 20
    failures: list[str] = []

    def edit(client: int) -> None:
        # Each kubectl is a client of its own; a thread's are one after another.
        for k in range(per_client):
            patch = {"spec": {"cache": {"maxEntries": 1000 + client * 100 + k}}}
            done = private.kubectl(
                "patch",
                "-n",
                ns,
                "llmgateway",
                "edited",
                "--type=merge",
                "-p",
                json.dumps(patch),
                check=False,
            )
            if done.returncode != 0:
                failures.append(f"client {client} edit {k}: {done.stderr.strip()}")

    started = time.monotonic()
    threads = [threading.Thread(target=edit, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    edited = time.monotonic()
    assert failures == []

    def settled() -> list[str]:
        gw = chaoskit.gateways(private, ns)[0]
        problems = chaoskit.gateway_problems(gw)
        data = chaoskit.items(private, f"/api/v1/namespaces/{ns}/configmaps?labelSelector={chaoskit.MANAGED}")
        rendered = yaml.safe_load(data[0]["data"]["proxy.yaml"])["cache"]
        wanted = gw["spec"]["cache"]["maxEntries"]
        if rendered.get("maxEntries", rendered.get("max_entries")) != wanted:
            problems.append(f"ConfigMap cache {rendered} != spec {wanted}")
        return problems

    took = converge(settled, 120, "the last spec")
    gw = chaoskit.gateways(private, ns)[0]
    # Merge patches of distinct values, each a new generation.
    assert gw["metadata"]["generation"] == 1 + clients * per_client
    print(
        f"\n[chaos] {clients * per_client} edits from {clients} clients in {edited - started:.1f}s; "
        f"status at the last generation and the ConfigMap at the last spec {took:.1f}s after the last edit"
    )


# -- two replicas in peering; the active one is killed -------------------------------------

PEERING = "chaos-peers"
WEBHOOK_SECRET = "llmgw-webhook-tls"


def webhook_configuration(name: str, namespace: str, port: int) -> dict[str, Any]:
    """Pods labelled with a gateway in ``namespace`` go to the webhook behind ``port`` (the balancer
    that stands in for the chart's Service), refused when no replica answers (failurePolicy Fail)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "inject.llmgateway.io",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/inject"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {
                    "matchExpressions": [{"key": "llmgateway.io/gateway", "operator": "Exists"}]
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }


class Admissions:
    """Creates a labelled pod every half second from a thread and records whether each was admitted
    with the sidecar, so the webhook is exercised before, during and after the failover."""

    def __init__(self, c: local_cluster.Cluster, namespace: str, gateway: str) -> None:
        self.cluster = c
        self.namespace, self.gateway = namespace, gateway
        self.results: list[str] = []  # "ok" or what went wrong
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Admissions:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            pod: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"app-{len(self.results)}",
                    "labels": {"llmgateway.io/gateway": self.gateway},
                },
                "spec": {
                    "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "1d"]}]
                },
            }
            made = self.cluster.kubectl(
                "create", "-n", self.namespace, "-o", "json", "-f", "-", input=json.dumps(pod), check=False
            )
            if made.returncode != 0:
                self.results.append(f"refused: {made.stderr.strip()[:200]}")
            else:
                spec = json.loads(made.stdout)["spec"]
                names = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
                self.results.append(
                    "ok" if "llmgw-proxy" in names else f"admitted without the sidecar: {names}"
                )
            self._stop.wait(0.5)  # the pace of a client creating pods, not a wait for a condition

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return self.results


def test_standby_takes_over_from_a_killed_active_replica_and_admission_keeps_working(
    private: local_cluster.Cluster, ns: str, tmp_path: pathlib.Path
) -> None:
    c = private
    c.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING, "namespace": ns}}
    ))  # fmt: skip
    ports = [operatorkit.free_port(), operatorkit.free_port()]
    balancer = chaoskit.StallProxy(ports)
    configuration = f"chaos-{ns}"
    replicas = []
    try:
        for i, (port, priority) in enumerate(zip(ports, (200, 100), strict=True)):
            args = (
                POLL_PERIOD,
                f"--priority={priority}",
                f"--webhook-port={port}",
                "--webhook-address=127.0.0.1",
                "--webhook-host=127.0.0.1",
                f"--webhook-secret={ns}/{WEBHOOK_SECRET}",
                f"--webhook-configuration={configuration}",
            )
            log = tmp_path / f"replica-{i}.log"
            replicas.append(start_operator(c.kubeconfig, log, ns, *args, peering=PEERING))
        active, standby = replicas
        active.wait_for_log(r"Resuming operations", 0, timeout=60)

        def peers() -> dict[str, Any]:
            found = c.kubectl("-n", ns, "get", "kopfpeering", PEERING, "-o", "json").stdout
            status: dict[str, Any] = json.loads(found).get("status") or {}
            return status

        eventually(lambda: len(peers()) == 2, 60, "both replicas in the peering object")
        c.kubectl(
            "apply", "-f", "-", input=json.dumps(webhook_configuration(configuration, ns, balancer.port))
        )

        def published() -> bool:
            live = json.loads(
                c.kubectl("get", "mutatingwebhookconfiguration", configuration, "-o", "json").stdout
            )
            return bool(live["webhooks"][0]["clientConfig"].get("caBundle"))

        eventually(published, 60, "the CA bundle in the webhook configuration")
        injected = chaoskit.gateway("inj", ns)
        del injected["spec"]["template"], injected["spec"]["replicas"]
        c.kubectl("apply", "-f", "-", input=chaoskit.as_list([chaoskit.gateway("before", ns), injected]))
        converge(
            lambda: [p for g in chaoskit.gateways(c, ns) for p in chaoskit.gateway_problems(g)],
            120,
            "the gateways before the failover",
        )
        # The bound the standby waits is the active replica's own record: the configured lifetime.
        assert sorted(p["lifetime"] for p in peers().values()) == [10, 10]
        assert "Resuming operations" not in standby.text()  # it stood by

        admissions = Admissions(c, ns, "inj").start()
        eventually(lambda: len(admissions.results) >= 3, 60, "admissions before the failover")
        offset = standby.offset()
        active.kill()
        killed = time.monotonic()
        c.kubectl("apply", "-f", "-", input=json.dumps(chaoskit.gateway("after", ns)))
        took = converge(
            lambda: (
                chaoskit.gateway_problems(chaoskit.gateways(c, ns, "after")[0])
                if chaoskit.gateways(c, ns, "after")
                else ["not created"]
            ),
            120,
            "the gateway created after the failover",
            interval=0.2,
        )
        resumed = standby.wait_for_log(r"Resuming operations", offset, timeout=10)
        during = len(admissions.results)
        eventually(lambda: len(admissions.results) >= during + 3, 60, "admissions after the failover")
        results = admissions.stop()
        assert resumed
        assert [r for r in results if r != "ok"] == []
        print(
            f"\n[chaos] active replica SIGKILLed: the standby reconciled a new gateway to Ready "
            f"{took:.1f}s later ({time.monotonic() - killed:.1f}s to now); "
            f"{len(results)} pods admitted with the sidecar, none refused"
        )
    finally:
        for replica in replicas:
            replica.stop()
        balancer.close()
        c.kubectl("delete", "mutatingwebhookconfiguration", configuration, check=False)


# -- a watch that goes silent ------------------------------------------------------------------

INACTIVITY = 20  # below the default (70 s) to keep the test short; docs/reliability.md has both


def test_sigterm_is_honoured_while_an_api_request_hangs_on_a_silent_connection(
    private: local_cluster.Cluster, ns: str, tmp_path: pathlib.Path
) -> None:
    c = private
    proxy = chaoskit.StallProxy([c.api_port])
    kubeconfig = chaoskit.kubeconfig_through(c, proxy.port, tmp_path / "kubeconfig")
    process = start_operator(kubeconfig, tmp_path / "operator.log", ns, "--data-plane-period=1")
    try:
        c.kubectl("apply", "-f", "-", input=json.dumps(chaoskit.gateway("hung", ns)))
        converge(lambda: convergence_problems(c, ns, {"hung"}), 120, "the gateway")
        proxy.stall()
        # The poller's next request goes out on a pooled connection that is now silent; its
        # worker thread waits for the request timeout (30 s), and urllib3 then tries again.
        eventually(lambda: proxy.swallowed > 0, 30, "a request sent into a silenced connection")
        assert process.stop(timeout=10) == 0
    finally:
        process.stop()
        proxy.close()


def test_a_silently_stalled_connection_to_the_api_server_is_noticed_and_an_edit_converges(
    private: local_cluster.Cluster, ns: str, tmp_path: pathlib.Path
) -> None:
    c = private
    proxy = chaoskit.StallProxy([c.api_port])
    kubeconfig = chaoskit.kubeconfig_through(c, proxy.port, tmp_path / "kubeconfig")
    process = start_operator(
        kubeconfig, tmp_path / "operator.log", ns, POLL_PERIOD, f"--watch-inactivity={INACTIVITY}"
    )
    try:
        c.kubectl("apply", "-f", "-", input=json.dumps(chaoskit.gateway("stalled", ns)))
        converge(lambda: convergence_problems(c, ns, {"stalled"}), 120, "the gateway before the stall")
        silenced = proxy.stall()
        stalled = time.monotonic()
        c.kubectl("-n", ns, "patch", "llmgw", "stalled", "--type=merge", "-p",
                  json.dumps({"spec": {"cache": {"maxEntries": 777}}}))  # fmt: skip

        def edited() -> list[str]:
            gw = chaoskit.gateways(c, ns)[0]
            problems = chaoskit.gateway_problems(gw)
            data = chaoskit.items(c, f"/api/v1/namespaces/{ns}/configmaps?labelSelector={chaoskit.MANAGED}")
            rendered = yaml.safe_load(data[0]["data"]["proxy.yaml"])["cache"]
            if rendered.get("maxEntries", rendered.get("max_entries")) != 777:
                problems.append(f"ConfigMap cache {rendered}")
            return problems

        took = converge(edited, 300, "the edit made while the connections were silent", interval=0.5)
        print(
            f"\n[chaos] {silenced} operator connections to the API server silenced; the edit made then "
            f"converged {took:.1f}s later ({time.monotonic() - stalled:.1f}s after the stall)"
        )
        assert silenced > 0
    finally:
        process.stop()
        proxy.close()
