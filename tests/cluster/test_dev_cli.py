"""`llmgw-dev cluster up | status | down` as a user runs it, beside the session's cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clusterkit import ClusterHandle

from llmgw_dev import cluster as cluster_mod

pytestmark = pytest.mark.cluster


def llmgw_dev(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmgw_dev.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def test_a_second_cluster_runs_side_by_side_and_down_stops_exactly_its_processes(
    cluster: ClusterHandle, tmp_path: Path
) -> None:
    if cluster.kind != "local":
        pytest.skip("tests the local control plane tool; the session cluster is not local")
    env = dict(os.environ)
    name = f"side-{os.getpid()}"
    up = llmgw_dev("cluster", "up", "--name", name, "--nodes", "1", env=env)
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip())
    try:
        assert kubeconfig.is_file()
        status = llmgw_dev("cluster", "status", "--name", name, env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        state = json.loads(status.stdout)
        assert state["apiserverReady"] is True
        assert set(state["processes"]) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert state["server"] != cluster.server  # its own port
        data_dir = kubeconfig.parent
        started = [
            (c["pid"], c["start_ticks"])
            for c in json.loads((data_dir / "state.json").read_text())["components"]
        ]
    finally:
        down = llmgw_dev("cluster", "down", "--name", name, env=env)
    assert down.returncode == 0, down.stderr
    assert not data_dir.exists()
    # By pid and start time: a pid the kernel has since handed to a new process does not count.
    assert not [pid for pid, ticks in started if cluster_mod._pid_is(pid, ticks)]
    # The session's cluster is untouched.
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    again = llmgw_dev("cluster", "status", "--name", name, env=env)
    assert again.returncode != 0
    assert "no cluster named" in again.stderr


def test_make_cluster_up_starts_one_that_env_points_kubectl_at_and_make_cluster_down_stops_it(
    cluster: ClusterHandle,
) -> None:
    if cluster.kind != "local":
        pytest.skip("tests the local control plane tool; the session cluster is not local")
    root = Path(__file__).resolve().parents[2]
    name = f"make-{os.getpid()}"

    def make(target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", target, f"CLUSTER={name}"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    up = make("cluster-up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = llmgw_dev("cluster", "status", "--name", name, env=dict(os.environ))
        assert status.returncode == 0, status.stdout + status.stderr
        kubeconfig = json.loads(status.stdout)["kubeconfig"]
        # What the README tells a newcomer to run: kubectl from the exports, on this cluster.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"PATH": "/usr/bin:/bin"}
        shell = subprocess.run(
            [
                "bash",
                "-c",
                f'eval "$({sys.executable} -m llmgw_dev.cli env --name {name})"; '
                'echo "$KUBECONFIG"; kubectl get nodes -o name',
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert shell.returncode == 0, shell.stderr
        lines = shell.stdout.splitlines()
        assert lines[0] == kubeconfig
        assert lines[1:] and all(line.startswith("node/kwok-node-") for line in lines[1:])
    finally:
        down = make("cluster-down")
    assert down.returncode == 0, down.stdout + down.stderr
    again = llmgw_dev("cluster", "status", "--name", name, env=dict(os.environ))
    assert again.returncode != 0 and "no cluster named" in again.stderr
