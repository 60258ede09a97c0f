"""Real sidecars behind kwok pods: what kubelet and the container runtime would do, on loopback.

kwok gives a pod the next address of its node's ``spec.podCIDR``. A fake node
whose podCIDR is inside 127.0.0.0/8 (``POD_CIDR``) therefore hands out pod IPs
a process here can bind to: for each gateway pod scheduled there, ``Kubelet``
starts a real ``llmgw-proxy`` on the pod's IP and the gateway's admin port,
with the config the operator rendered into the ConfigMap, as a kubelet mount
would. The operator reaches it the way it reaches any pod: pod IP and admin
port. Other tests' pods never land on that node: it is tainted.

A folder of its own tests/ so that every test folder can import it (the operator's
integration tests and the runbook's). A test file that runs alongside another one on the
same cluster can take a node and podCIDR of its own, so their pod IPs never meet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import pathlib
import subprocess
import sys
import threading
import urllib.request
from typing import IO, Any, Protocol

from clusterkit import ClusterHandle, eventually

from llmgw_dev import cluster as local_cluster

NODE = "kwok-dataplane"
POD_CIDR = "127.0.100.0/24"
TAINT_KEY = "llmgateway.io/dataplane-test"


class Getter(Protocol):
    """kubectl bound to a namespace, as each test folder has one (operatorkit.Namespace, ...)."""

    def get(self, ref: str, *extra: str) -> dict[str, Any]: ...


def ensure_node(cluster: ClusterHandle, node: str = NODE, pod_cidr: str = POD_CIDR) -> None:
    """A fake node with a loopback podCIDR (podCIDR is immutable: created once per cluster)."""
    taint = {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}
    manifest = local_cluster.fake_node(node, pod_cidr=pod_cidr, taints=[taint])
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{node}", "--timeout=60s")


def pod_template(node: str = NODE) -> dict[str, Any]:
    """An application pod template pinned to a loopback node."""
    return {
        "metadata": {"labels": {"app": "chat"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "infinity"]}],
        },
    }


class FakeProviderProcess:
    """``python -m llmgw_dev.fake_provider`` on an ephemeral loopback port, driven over /_control."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmgw_dev.fake_provider", "--port", "0"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = json.loads(self.proc.stdout.readline())
        self.url = f"http://{line['address']}"

    def plan(self, *faults: dict[str, Any]) -> None:
        self._control("POST", {"faults": list(faults)})

    def clear(self) -> None:
        self._control("DELETE", None)

    def _control(self, method: str, body: dict[str, Any] | None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_control", data=data, method=method)  # noqa: S310 (http://)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (http:// built above)
            resp.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclasses.dataclass
class Sidecar:
    pod: str
    ip: str
    proc: subprocess.Popen[bytes]
    config: pathlib.Path
    lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def api(self) -> str:
        def found() -> str | None:
            for line in list(self.lines):
                if line.get("msg") == "listening":
                    return str(line["api"])
            assert self.proc.poll() is None, f"sidecar of {self.pod} exited: {self.lines[-5:]}"
            return None

        return "http://" + eventually(found, 20, f"the sidecar of {self.pod} listening")

    def chat(self, model: str = "gpt-4o-mini") -> int:
        """One chat completion through this sidecar; its HTTP status."""
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
        url = self.api() + "/v1/chat/completions"
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 (http://)
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:  # noqa: S310 (http:// built above)
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return int(e.code)


class Kubelet:
    """Starts a real sidecar for each ready gateway pod on the loopback node, as kubelet would."""

    def __init__(
        self, ns: Getter, root: pathlib.Path, gateway: str, admin_port: int, pod_cidr: str = POD_CIDR
    ) -> None:
        self.ns = ns
        self.pod_cidr = pod_cidr
        self.root = root
        self.gateway = gateway
        self.admin_port = admin_port
        self.sidecars: dict[str, Sidecar] = {}
        self._readers: list[threading.Thread] = []

    def pods(self) -> list[tuple[str, str]]:
        """(name, IP) of the gateway's pods that kwok gave a loopback IP, by name."""
        items = self.ns.get("pods", "-l", f"llmgateway.io/gateway={self.gateway}")["items"]
        out = []
        for pod in items:
            ip = (pod.get("status") or {}).get("podIP")
            if ip and ipaddress.ip_address(ip) in ipaddress.ip_network(self.pod_cidr):
                out.append((pod["metadata"]["name"], ip))
        return sorted(out)

    def rendered(self) -> str:
        text: str = self.ns.get(f"configmap/{self.gateway}-proxy-config")["data"]["proxy.yaml"]
        return text

    def wait_pods(self, count: int) -> list[tuple[str, str]]:
        def enough() -> list[tuple[str, str]] | None:
            found = self.pods()
            return found if len(found) >= count else None

        return eventually(enough, 90, f"{count} pods with IPs")

    def start(self, pod: str, ip: str) -> Sidecar:
        """A sidecar for ``pod`` on ``ip`` and the admin port, reading the rendered config."""
        folder = self.root / pod
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "proxy.yaml"
        self.publish_text(config, self.rendered())
        argv = [
            sys.executable, "-m", "llmgw_proxy.cli", "--config", str(config),
            "--host", "127.0.0.1", "--port", "0",  # the API listener is the pod's loopback: any port here
            "--admin-host", ip, "--reload-interval", "0.1",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        sidecar = Sidecar(pod, ip, proc, config)
        reader = threading.Thread(target=_read_lines, args=(proc.stderr, sidecar.lines), daemon=True)
        reader.start()
        self._readers.append(reader)
        self.sidecars[pod] = sidecar
        sidecar.api()
        return sidecar

    def publish(self, pod: str, text: str | None = None) -> None:
        """Hand ``pod``'s sidecar a new config file: the rendered one, or ``text``."""
        self.publish_text(self.sidecars[pod].config, self.rendered() if text is None else text)

    @staticmethod
    def publish_text(path: pathlib.Path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # a new inode, as kubelet's ..data swap gives

    def stop(self) -> None:
        for sidecar in self.sidecars.values():
            if sidecar.proc.poll() is None:
                sidecar.proc.terminate()
        for sidecar in self.sidecars.values():
            try:
                sidecar.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sidecar.proc.kill()
                sidecar.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)  # the pipe ends with the process; the reader closes it


def _read_lines(stream: IO[bytes] | None, lines: list[dict[str, Any]]) -> None:
    if stream is None:
        return
    with stream:
        for raw in stream:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
