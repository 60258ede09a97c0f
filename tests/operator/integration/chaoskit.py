"""What the control-plane chaos tests share: a private cluster they may break, a TCP proxy that can
stall its connections, and the checks that say a namespace of gateways has converged.

The tests kill kube-apiserver and etcd, so they never run on the session's cluster: ``private``
starts one of their own (``llmgw_dev.cluster.up``) with fake nodes whose pods take loopback
addresses, so the operator's data-plane polls reach only 127.0.0.0/8 (and are refused at once).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import json
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import operatorkit

from llmgw_dev import cluster as local_cluster

NODES = 5  # 110 pods each: two namespaces of 200 one-replica gateways fit while one is being deleted
GATEWAY_LABEL = "llmgateway.io/gateway"
MANAGED = "app.kubernetes.io/managed-by=llmgw-operator"
CHILD_KINDS = ("configmaps", "secrets", "deployments", "replicasets", "pods")


def loopback_nodes(count: int = NODES) -> str:
    nodes = [local_cluster.fake_node(f"chaos-{i}", pod_cidr=f"127.0.{200 + i}.0/24") for i in range(count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})


def gateway(name: str, namespace: str, max_entries: int = 500) -> dict[str, Any]:
    """The sample gateway with one replica (kwok pods are cheap, not free)."""
    document = copy.deepcopy(operatorkit.samples()["chat"])
    document["metadata"] = {"name": name, "namespace": namespace}
    document["spec"]["replicas"] = 1
    document["spec"]["cache"] = {"maxEntries": max_entries}
    return document


def shared_objects(namespace: str) -> list[dict[str, Any]]:
    """The key Secret and the two policies every gateway routes to."""
    samples = operatorkit.samples()
    out = []
    for name in ("llm-provider-keys", "primary", "fallback"):
        document = copy.deepcopy(samples[name])
        document["metadata"]["namespace"] = namespace
        out.append(document)
    return out


def as_list(documents: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})


# -- reading the cluster directly (no kubectl process per poll) ----------------------


def items(c: local_cluster.Cluster, path: str) -> list[dict[str, Any]]:
    status, body = c.get(path, timeout=30)
    if status != 200:
        raise AssertionError(f"GET {path}: {status} {body[:200]}")
    found: list[dict[str, Any]] = json.loads(body)["items"]
    return found


def gateways(c: local_cluster.Cluster, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    """The gateways of ``namespace`` (with ``name``, that one or none)."""
    found = items(c, f"/apis/llmgateway.io/v1alpha1/namespaces/{namespace}/llmgateways")
    return [g for g in found if name is None or g["metadata"]["name"] == name]


def ready_count(c: local_cluster.Cluster, namespace: str) -> int:
    return sum(1 for g in gateways(c, namespace) if not gateway_problems(g))


def gateway_problems(gw: dict[str, Any]) -> list[str]:
    """What keeps one gateway from being converged: Ready, every condition of this generation."""
    name, generation = gw["metadata"]["name"], gw["metadata"]["generation"]
    status = gw.get("status") or {}
    problems = []
    if status.get("observedGeneration") != generation:
        problems.append(f"{name}: observedGeneration {status.get('observedGeneration')} != {generation}")
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    for type_ in ("Ready", "Reconciled", "PoliciesResolved"):
        cond = conditions.get(type_)
        if cond is None or cond["status"] != "True":
            problems.append(f"{name}: {type_} is {cond and (cond['status'], cond['reason'])}")
    for cond in conditions.values():
        if cond.get("observedGeneration") != generation:
            problems.append(f"{name}: {cond['type']} is of generation {cond.get('observedGeneration')}")
    return problems


def convergence_problems(c: local_cluster.Cluster, namespace: str, expected: set[str]) -> list[str]:
    """Everything that keeps ``namespace`` from holding exactly ``expected`` gateways, each Ready at
    its generation with exactly one child of each kind, and no child without its gateway."""
    found = {g["metadata"]["name"]: g for g in gateways(c, namespace)}
    problems = [f"gateway {n} missing" for n in sorted(expected - found.keys())]
    problems += [f"gateway {n} unexpected" for n in sorted(found.keys() - expected)]
    for gw in found.values():
        problems += gateway_problems(gw)
    uids = {name: g["metadata"]["uid"] for name, g in found.items()}
    counts: dict[tuple[str, str], int] = collections.Counter()
    for kind in CHILD_KINDS:
        prefix = "/api/v1" if kind in ("configmaps", "secrets", "pods") else "/apis/apps/v1"
        selector = MANAGED if kind in ("configmaps", "secrets", "deployments") else GATEWAY_LABEL
        for child in items(c, f"{prefix}/namespaces/{namespace}/{kind}?labelSelector={selector}"):
            meta = child["metadata"]
            owner = meta.get("labels", {}).get(GATEWAY_LABEL, "")
            if owner not in uids:
                problems.append(f"orphan {kind} {meta['name']} (gateway {owner!r} does not exist)")
                continue
            if meta.get("deletionTimestamp"):
                continue  # on its way out (an old ReplicaSet's pod): not a duplicate
            counts[(owner, kind)] += 1
            controller = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
            if kind in ("configmaps", "secrets", "deployments") and [r["uid"] for r in controller] != [
                uids[owner]
            ]:
                problems.append(f"{kind} {meta['name']} is not controlled by gateway {owner}")
    for name in found:
        for kind in CHILD_KINDS:
            if counts[(name, kind)] != 1:
                problems.append(f"gateway {name}: {counts[(name, kind)]} {kind}, not 1")
    return problems


def converge(check: Callable[[], list[str]], timeout: float, what: str, interval: float = 1.0) -> float:
    """Poll ``check`` until it finds no problem; return the seconds that took. A deadline turns a
    scenario that never converges into a failure naming what is left (never a timed assertion)."""
    started = time.monotonic()
    problems: list[str] = ["not checked yet"]
    while time.monotonic() - started < timeout:
        try:
            problems = check()
        except (AssertionError, OSError) as e:  # the API server is still coming back
            problems = [f"{type(e).__name__}: {e}"]
        if not problems:
            return time.monotonic() - started
        time.sleep(interval)  # polling interval of a deadline-bounded poll
    shown = "\n  ".join(problems[:20])
    raise AssertionError(f"{what}: not converged after {timeout:.0f}s; {len(problems)} problems:\n  {shown}")


def write_counts(metrics_port: int) -> dict[str, float]:
    """The operator's own llmgw_operator_api_writes_total, by verb and kind."""

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("llmgw_operator_api_writes_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


# -- a TCP proxy that can stall what it carries ------------------------------------------


@dataclasses.dataclass
class _Link:
    client: socket.socket
    upstream: socket.socket
    stalled: threading.Event = dataclasses.field(default_factory=threading.Event)


class StallProxy:
    """Forwards 127.0.0.1:<port> to the first of ``backends`` that accepts a connection (a Service
    in front of replicas, for the webhook), bytes untouched (TLS passes through).

    ``stall()`` makes every connection open at that moment go silent without closing: nothing is
    forwarded in either direction and no FIN or RST is sent, as when a load balancer or NAT in
    between loses its state or the server behind it is restarted. Connections made later work.
    """

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.accepted = 0
        self.swallowed = 0  # reads from clients on silenced connections
        threading.Thread(target=self._accept, daemon=True, name="stall-proxy").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        for port in self.backends:
            with contextlib.suppress(OSError):
                return socket.create_connection(("127.0.0.1", port), timeout=5)
        return None

    def _pump(self, link: _Link) -> None:
        ends = {link.client: link.upstream, link.upstream: link.client}
        open_ = [link.client, link.upstream]
        try:
            while not self._closed.is_set() and link.client in open_:
                readable, _, _ = select.select(open_, [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if link.stalled.is_set():
                        # Silence: what the client sends goes nowhere (counted, so a test knows a
                        # request now hangs), and neither end's close reaches the other.
                        if not data:
                            open_.remove(sock)
                        elif sock is link.client:
                            with self._lock:
                                self.swallowed += 1
                        continue
                    if not data:
                        return
                    ends[sock].sendall(data)
            self._closed.wait()
        except OSError:
            return
        finally:
            for sock in ends:
                with contextlib.suppress(OSError):
                    sock.close()

    def stall(self) -> int:
        """Silence every connection open now; returns how many."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.stalled.set()
        return len(links)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def kubeconfig_through(c: local_cluster.Cluster, port: int, path: Any) -> Any:
    """A copy of the cluster's kubeconfig whose server is the proxy on ``port``; the API server's
    certificate names 127.0.0.1, whatever the port."""
    config = json.loads(c.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def namespace(c: local_cluster.Cluster, name: str) -> Iterator[str]:
    c.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        c.kubectl("delete", "namespace", name, "--wait=false", check=False)
