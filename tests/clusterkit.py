"""The handle on the session's Kubernetes cluster that the `cluster` fixture (tests/conftest.py)
gives every test folder; a module of its own so that tests can name its type."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from llmgw_dev import binaries
from llmgw_dev import cluster as local_cluster

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ClusterHandle:
    """What a test needs from a cluster, whichever kind it is."""

    kind: str
    kubeconfig: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return local_cluster.run_kubectl(self.kubeconfig, *args, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(binaries.ensure("helm")), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    @property
    def server(self) -> str:
        return self.kubectl(
            "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
        ).stdout


def printed_row(table: str) -> dict[str, str]:
    """The one row of a ``kubectl get`` table by column name, read at the header's offsets, so
    an empty cell (a printer column whose JSONPath finds nothing) keeps the others in place."""
    header, row = table.rstrip("\n").splitlines()
    names, starts = header.split(), list[int]()
    for name in names:
        starts.append(header.index(name, starts[-1] + 1 if starts else 0))
    ends = [*starts[1:], None]
    return {name: row[a:b].strip() for name, a, b in zip(names, starts, ends, strict=True)}


def eventually(check: Callable[[], T | None], timeout: float = 30, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; the deadline turns silence into a failure."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(0.1)  # polling interval of a deadline-bounded poll, not a wait for presence
