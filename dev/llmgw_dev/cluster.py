"""A real Kubernetes control plane on loopback, for tests and the demo.

etcd, kube-apiserver, kube-controller-manager (garbage collector, Deployment and
ReplicaSet controllers), kube-scheduler and kwok (fake nodes that run pods
without a kubelet) are started as child processes. Ports are picked at run
time so clusters can run side by side. A state file records the process ids
so ``down`` stops exactly what ``up`` started, even from another process, and
the argv of each, so ``kill`` and ``start_again`` can crash one component and
bring it back on the same ports and data (the chaos tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmgw_dev import binaries

FAKE_NODES = 3
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
"""What ``up`` starts and talks to the control plane with."""
ADMIN_USER = "llmgw-admin"


class ClusterError(RuntimeError):
    pass


# Popen objects of the components this process started. Holding them keeps
# Python from warning that a child is still running when the object would be
# collected, and lets `down` reap its own children instead of leaving zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


def registry_dir() -> Path:
    """Where named clusters leave a pointer to their state."""
    return binaries.cache_root() / "clusters"


def free_port() -> int:
    # Bind-then-release leaves a small race; the component that loses it
    # fails loudly at start and `up` reports that component's log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Component:
    name: str
    pid: int
    argv0: str
    start_ticks: str
    log: str
    # What it was started with, so `start_again` can bring it back on the same ports and data.
    argv: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Cluster:
    name: str
    data_dir: Path
    api_port: int
    etcd_port: int
    token: str
    components: list[Component] = dataclasses.field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "apiserver-certs" / "apiserver.crt"

    # -- state file -----------------------------------------------------------------

    def save(self) -> None:
        state = dataclasses.asdict(self)
        state["data_dir"] = str(self.data_dir)
        (self.data_dir / "state.json").write_text(json.dumps(state, indent=2))
        registry_dir().mkdir(parents=True, exist_ok=True)
        (registry_dir() / f"{self.name}.json").write_text(json.dumps({"data_dir": str(self.data_dir)}))

    @classmethod
    def load(cls, name: str) -> Cluster:
        pointer = registry_dir() / f"{name}.json"
        if not pointer.is_file():
            raise ClusterError(f"no cluster named {name!r} is up (no {pointer})")
        try:
            data_dir = Path(json.loads(pointer.read_text())["data_dir"])
            state = json.loads((data_dir / "state.json").read_text())
            state["data_dir"] = data_dir
            state["components"] = [Component(**c) for c in state["components"]]
            return cls(**state)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClusterError(
                f"cluster {name!r}: its state ({pointer}) is unreadable or from another version of "
                f"llmgw-dev ({type(e).__name__}: {e}); stop its processes by hand and delete that file"
            ) from None

    # -- talking to it --------------------------------------------------------------

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(  # noqa: S310 - our own https URL
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubeconfig, *args, input=input, check=check, timeout=timeout)

    def alive(self) -> dict[str, bool]:
        return {c.name: _pid_is(c.pid, c.start_ticks) for c in self.components}


def run_kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = [str(binaries.ensure("kubectl")), "--kubeconfig", str(kubeconfig), *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Fields after the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def _pid_is(pid: int, start_ticks: str) -> bool:
    """The pid is alive and is the process we started (not a reused pid).

    The start time in /proc/<pid>/stat identifies a process for its whole life;
    the command line does not (it reads empty while a process is in state D).
    """
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == start_ticks


def _wait_for(what: str, check: Callable[[], bool], timeout: float, cluster: Cluster, component: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if check():
            return
        for c in cluster.components:
            if c.name == component and not _pid_is(c.pid, c.start_ticks):
                raise ClusterError(f"{component} exited during start-up; log tail:\n{_tail(Path(c.log))}")
        time.sleep(delay)  # polling a process we do not control: nothing to await
        delay = min(delay * 1.5, 0.5)
    log = next((c.log for c in cluster.components if c.name == component), None)
    tail = _tail(Path(log)) if log else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _start(cluster: Cluster, name: str, argv: list[str]) -> None:
    cluster.components.append(_spawn(cluster, name, argv, "wb"))
    cluster.save()


def _spawn(cluster: Cluster, name: str, argv: list[str], mode: str) -> Component:
    log = cluster.data_dir / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open(mode) as out:
        # A new session: the components outlive the `up` command and ignore
        # the terminal's Ctrl-C; `down` signals them by pid.
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _children[proc.pid] = proc
    return Component(
        name=name, pid=proc.pid, argv0=argv[0], start_ticks=_start_ticks(proc.pid), log=str(log), argv=argv
    )


# -- crashing and restarting one component (the chaos tests) --------------------------


def component(cluster: Cluster, name: str) -> Component:
    for c in cluster.components:
        if c.name == name:
            return c
    raise ClusterError(f"cluster {cluster.name!r} has no component {name!r}")


def kill(cluster: Cluster, name: str, timeout: float = 10) -> None:
    """SIGKILL one component, as a crash or an OOM kill would end it, and return once it is gone."""
    c = component(cluster, name)
    if _pid_is(c.pid, c.start_ticks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(c.pid, signal.SIGKILL)
    proc = _children.pop(c.pid, None)
    if proc is not None:
        proc.wait(timeout=timeout)
    elif not _gone_by(c, time.monotonic() + timeout):
        raise ClusterError(f"{name} (pid {c.pid}) outlived SIGKILL for {timeout:.0f}s")


def start_again(cluster: Cluster, name: str, timeout: float = 90) -> Component:
    """Start a stopped component with the argv it first had (so its ports and data directory),
    its log appended to, and return once it serves again."""
    old = component(cluster, name)
    if _pid_is(old.pid, old.start_ticks):
        raise ClusterError(f"{name} is still running (pid {old.pid}); kill it first")
    if not old.argv:
        raise ClusterError(f"{name} was started by an older llmgw-dev that kept no argv; cannot restart it")
    new = _spawn(cluster, name, old.argv, "ab")
    cluster.components[cluster.components.index(old)] = new
    cluster.save()
    _wait_for(f"{name} to serve again", lambda: _serves(cluster, new), timeout, cluster, name)
    return new


def restart(cluster: Cluster, name: str, timeout: float = 90) -> Component:
    """``kill`` then ``start_again``: a crash and the supervisor's restart."""
    kill(cluster, name)
    return start_again(cluster, name, timeout)


def _serves(cluster: Cluster, c: Component) -> bool:
    """The component's own health endpoint answers (kwok has none we can reach: alive is enough)."""
    if c.name == "etcd":
        return _http_ok(f"http://127.0.0.1:{cluster.etcd_port}/health")
    if c.name == "kube-apiserver":
        return _readyz(cluster)
    port = next((a.split("=", 1)[1] for a in c.argv if a.startswith("--secure-port=")), None)
    if port is not None:
        return _https_ok(f"https://127.0.0.1:{port}/healthz")
    return _pid_is(c.pid, c.start_ticks)


def _write_kubeconfig(cluster: Cluster) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_file)},
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": cluster.token}}],
        "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": ADMIN_USER}}],
        "current-context": cluster.name,
    }
    cluster.kubeconfig.write_text(json.dumps(config, indent=2))
    cluster.kubeconfig.chmod(0o600)


def fake_node(
    name: str,
    *,
    zone: str | None = None,
    pod_cidr: str | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A node kwok manages (its annotation selects it). With a ``pod_cidr`` inside 127.0.0.0/8,
    kwok hands its pods loopback addresses, so a process on this machine can stand behind a pod
    IP (the demo's sidecar, the data-plane tests' sidecars)."""
    labels = {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if zone is not None:
        labels |= {"kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": zone}
    spec: dict[str, Any] = {}
    if pod_cidr is not None:
        spec |= {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": labels,
        },
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


def _fake_nodes_manifest(count: int) -> str:
    nodes = [fake_node(f"kwok-node-{i}", zone=f"zone-{i % 3}") for i in range(count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})


def up(name: str | None = None, nodes: int = FAKE_NODES, timeout: float = 90) -> Cluster:
    """Start every component and return once fake nodes are Ready."""
    name = name or f"llmgw-{secrets.token_hex(3)}"
    if (registry_dir() / f"{name}.json").exists():
        with contextlib.suppress(ClusterError, FileNotFoundError):
            existing = Cluster.load(name)
            if any(existing.alive().values()):
                raise ClusterError(f"a cluster named {name!r} is already up at {existing.data_dir}")
    bins = {b: binaries.ensure(b) for b in BINARIES}
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    cluster = Cluster(
        name=name, data_dir=data_dir, api_port=free_port(), etcd_port=free_port(), token=secrets.token_hex(24)
    )
    try:
        _up(cluster, bins, nodes, timeout)
    except BaseException:
        down(cluster)
        raise
    return cluster


def _up(cluster: Cluster, bins: dict[str, Path], nodes: int, timeout: float) -> None:
    d = cluster.data_dir
    cluster.save()
    subprocess.run(["openssl", "genrsa", "-out", str(d / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub")],
        check=True,
        capture_output=True,
    )
    (d / "tokens.csv").write_text(f'{cluster.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    peer = free_port()
    etcd_url = f"http://127.0.0.1:{cluster.etcd_port}"
    _start(
        cluster,
        "etcd",
        [
            str(bins["etcd"]),
            "--name=default",
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            # Test data is disposable; fsync dominates etcd latency on shared disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ],
    )
    _wait_for("etcd /health", lambda: _http_ok(f"{etcd_url}/health"), 30, cluster, "etcd")

    _start(
        cluster,
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={cluster.api_port}",
            f"--cert-dir={d / 'apiserver-certs'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--v=1",
        ],
    )
    _write_kubeconfig(cluster)
    _wait_for(
        "kube-apiserver /readyz",
        lambda: cluster.ca_file.exists() and _readyz(cluster),
        timeout,
        cluster,
        "kube-apiserver",
    )

    kcm_port, sched_port = free_port(), free_port()
    _start(
        cluster,
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--authentication-kubeconfig={cluster.kubeconfig}",
            f"--authorization-kubeconfig={cluster.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--controllers=*,-node-ipam-controller",
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={cluster.ca_file}",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    _start(
        cluster,
        "kube-scheduler",
        [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--authentication-kubeconfig={cluster.kubeconfig}",
            f"--authorization-kubeconfig={cluster.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    for component, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
        _wait_for(
            f"{component} /healthz",
            functools.partial(_https_ok, f"https://127.0.0.1:{port}/healthz"),
            timeout,
            cluster,
            component,
        )
    # A bare kwok binary has no defaults for its worker pools (kwokctl fills
    # them in); zero refuses to start.
    (d / "kwok.yaml").write_text(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n"
        "  podPlayStageParallelism: 8\n  nodePlayStageParallelism: 4\n"
        "  nodeLeaseParallelism: 4\n  podsOnNodeSyncParallelism: 4\n"
    )
    _start(
        cluster,
        "kwok",
        [
            str(bins["kwok"]),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--config={d / 'kwok.yaml'}",
            f"--config={binaries.kwok_stages()}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{free_port()}",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
            # Leases keep the node-lifecycle controller from tainting fake nodes.
            "--node-lease-duration-seconds=40",
        ],
    )
    if nodes == 0:
        return  # the caller brings nodes of its own (fake_node)
    cluster.kubectl("apply", "-f", "-", input=_fake_nodes_manifest(nodes))
    _wait_for(f"{nodes} Ready kwok nodes", lambda: _ready_nodes(cluster) >= nodes, timeout, cluster, "kwok")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _https_ok(url: str) -> bool:
    # Components serve self-signed certificates on loopback; only liveness matters here.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return _http_ok(url, ctx)


def _readyz(cluster: Cluster) -> bool:
    try:
        status, _ = cluster.get("/readyz", timeout=2)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
    return status == 200


def _ready_nodes(cluster: Cluster) -> int:
    proc = cluster.kubectl("get", "nodes", "-o", "json", check=False)
    if proc.returncode != 0:
        return 0
    count = 0
    for node in json.loads(proc.stdout)["items"]:
        for cond in node.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                count += 1
    return count


def down(cluster: Cluster, grace: float = 10) -> list[str]:
    """Stop the processes this cluster started (by pid) and remove its data."""
    stopped = []
    # Reverse start order: clients first, etcd last.
    for c in reversed(cluster.components):
        if _pid_is(c.pid, c.start_ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGTERM)
            stopped.append(c.name)
    deadline = time.monotonic() + grace
    for c in reversed(cluster.components):
        _wait_gone(c, deadline)
    shutil.rmtree(cluster.data_dir, ignore_errors=True)
    pointer = registry_dir() / f"{cluster.name}.json"
    with contextlib.suppress(FileNotFoundError):
        if json.loads(pointer.read_text()).get("data_dir") == str(cluster.data_dir):
            pointer.unlink()
    return stopped


def _wait_gone(c: Component, deadline: float) -> None:
    proc = _children.pop(c.pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    # Started by another process (`llmgw-dev cluster up`): we can only watch
    # the pid until it is gone; its parent or init reaps it.
    if not _gone_by(c, deadline):
        with contextlib.suppress(ProcessLookupError):
            os.kill(c.pid, signal.SIGKILL)
        # SIGKILL is delivered asynchronously: `down` returns once the process is really gone.
        _gone_by(c, time.monotonic() + 5)


def _gone_by(c: Component, deadline: float) -> bool:
    """Watch the pid until its process is gone (True) or the deadline passes (False)."""
    while _pid_is(c.pid, c.start_ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
