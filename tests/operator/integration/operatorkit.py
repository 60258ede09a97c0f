"""Driving the operator the way a user does: a real process, kubectl, and waits with deadlines."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from typing import Any

import yaml
from clusterkit import ClusterHandle
from clusterkit import eventually as eventually  # re-exported: the folder's tests import it from here

ROOT = pathlib.Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "samples"
CRDS = ROOT / "crds"
PROXY_IMAGE = "registry.example/llmgw-proxy:it-1"
SAMPLE_KEY = "sk-sample-not-a-real-key"
# Namespaces the operator under test watches (a glob, so kopf discovers new
# ones); other folders' tests share the cluster and must not be reconciled.
NAMESPACE_PREFIX = "opit-"


def samples() -> dict[str, dict[str, Any]]:
    """The sample manifests by name, as dicts a test may change before applying."""
    out = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        out[document["metadata"]["name"]] = document
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """`llmgw-operator --standalone --verbose` as a child process, its log in a file; with
    ``peering``, `--peering=NAME` instead of `--standalone` (a replica among others)."""

    def __init__(
        self,
        kubeconfig: pathlib.Path,
        log: pathlib.Path,
        namespaces: str,
        extra_args: tuple[str, ...] = (),
        peering: str | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.namespaces = namespaces
        self.extra_args = extra_args
        self.peering = peering
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()  # not 8080: other operators may run on this machine

    def start(self) -> None:
        env = os.environ | {"KUBECONFIG": str(self.kubeconfig), "LLMGW_PROXY_IMAGE": PROXY_IMAGE}
        argv = [
            sys.executable,
            "-m",
            "llmgw_operator.cli",
            f"--peering={self.peering}" if self.peering else "--standalone",
            "--verbose",
            "-n",
            self.namespaces,
            f"--metrics-port={self.metrics_port}",
            *self.extra_args,
        ]
        offset = self.offset()  # a restart appends to the same log: look only past the old run
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        # Started: kopf logs its startup handler's line once the API answered.
        self.wait_for_log(r"llmgw-operator started", offset, timeout=30)

    def stop(self, timeout: float = 20) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the operator ignored SIGTERM for {timeout}s\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a lost node ends it: no cleanup runs, nothing is said to peers."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def offset(self) -> int:
        """Where the log ends now: later searches look only at what comes after."""
        return len(self.text())

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, offset: int, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the operator exited ({self.proc.returncode})\n{self.tail()}")
            return regex.search(self.text(), offset)

        return eventually(found, timeout, f"operator log /{pattern}/")

    def metrics_text(self) -> str:
        """The operator's /metrics exposition."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return str(resp.read().decode())

    def writes_since(self, offset: int, namespace: str) -> list[str]:
        """Write requests the operator made in ``namespace`` (``kube.Client`` logs each at --verbose)."""
        pattern = re.compile(rf'"(?:PATCH|POST|PUT|DELETE) /[^ ]*/namespaces/{namespace}/[^"]*"')
        return pattern.findall(self.text(), offset)

    def reads_since(self, offset: int, namespace: str) -> list[str]:
        """Read requests (GET) the operator made in ``namespace``, logged as ``writes_since``'s are."""
        pattern = re.compile(rf'"GET /[^ ]*/namespaces/{namespace}/[^"]*"')
        return pattern.findall(self.text(), offset)


class Namespace:
    """kubectl bound to one namespace of the shared cluster."""

    def __init__(self, cluster: ClusterHandle, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        return str(self.cluster.kubectl("-n", self.name, *args, input=input, timeout=timeout).stdout)

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))

    def get(self, ref: str, *extra: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", ref, "-o", "json", *extra))
        return result

    def exists(self, ref: str) -> bool:
        proc = self.cluster.kubectl(
            "-n", self.name, "get", ref, "--ignore-not-found", "-o", "name", check=False
        )
        return bool(proc.stdout.strip())

    def patch(self, ref: str, patch: dict[str, Any]) -> None:
        self.kubectl("patch", ref, "--type", "merge", "-p", json.dumps(patch))

    def describe(self) -> str:
        """What a failed test's report shows of this namespace: its objects and their conditions."""
        parts = []
        for args in (
            ("get", "llmgw,providerpolicy,deploy,rs,pods", "-o", "wide"),
            (
                "get",
                "llmgw",
                "-o",
                'jsonpath={range .items[*]}{.metadata.name} gen={.metadata.generation} {.status}{"\\n"}{end}',
            ),
            ("get", "events", "--sort-by=.lastTimestamp"),
        ):
            proc = self.cluster.kubectl("-n", self.name, *args, check=False, timeout=20)
            parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)

    def wait(self, ref: str, condition: str, timeout: int = 60) -> None:
        """`kubectl wait`, which watches instead of polling; ``condition`` as for --for."""
        self.kubectl("wait", ref, f"--for={condition}", f"--timeout={timeout}s", timeout=timeout + 10)

    def condition(self, ref: str, type_: str) -> dict[str, Any] | None:
        conditions = self.get(ref).get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)

    def events(self, kind: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "events", "--field-selector", selector, "-o", "json")
        )["items"]
        return items

    def resource_versions(self, *refs: str) -> dict[str, str]:
        return {ref: str(self.get(ref)["metadata"]["resourceVersion"]) for ref in refs}

    def proxy_config(self, gateway: str) -> dict[str, Any]:
        data = self.get(f"configmap/{gateway}-proxy-config")["data"]["proxy.yaml"]
        document: dict[str, Any] = yaml.safe_load(data)
        return document
