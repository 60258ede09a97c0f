"""The handle on the session's Kubernetes cluster that the `cluster` fixture (tests/conftest.py)
gives every test folder; a module of its own so that tests can name its type."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from llmgw_dev import binaries
from llmgw_dev import cluster as local_cluster


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
