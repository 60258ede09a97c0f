"""The cluster the suite runs on is a real one: it serves, schedules and collects garbage."""

from __future__ import annotations

import json

import pytest
from clusterkit import ClusterHandle

from llmgw_dev import binaries

pytestmark = pytest.mark.cluster

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: smoke}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers: [{name: app, image: registry.invalid/smoke:1}]
"""


def test_the_api_server_answers_readyz_ok(cluster: ClusterHandle) -> None:
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_kubectl_reaches_the_server_with_the_kubeconfig(cluster: ClusterHandle) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    server = version["serverVersion"]["gitVersion"]
    if cluster.kind == "local":
        assert server == binaries.versions()["kubernetes"]["version"]
    else:
        assert server.startswith("v1.")


def test_a_two_replica_deployment_becomes_available_and_its_garbage_is_collected(
    cluster: ClusterHandle,
) -> None:
    cluster.kubectl("create", "namespace", "smoke")
    try:
        cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT)
        cluster.kubectl(
            "-n",
            "smoke",
            "wait",
            "--for=condition=Available",
            "deployment/smoke",
            "--timeout=60s",
            timeout=90,
        )
        pods = json.loads(
            cluster.kubectl("-n", "smoke", "get", "pods", "-l", "app=smoke", "-o", "json").stdout
        )
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
        assert len(running) == 2
        assert all(p["spec"].get("nodeName") for p in running)
        rs = cluster.kubectl("-n", "smoke", "get", "rs", "-l", "app=smoke", "-o", "name").stdout.split()
        assert len(rs) == 1

        # Background cascade: the API deletes only the Deployment; the
        # controller-manager's garbage collector must remove the rest.
        cluster.kubectl("-n", "smoke", "delete", "deployment", "smoke", "--cascade=background")
        cluster.kubectl("-n", "smoke", "wait", "--for=delete", *rs, "--timeout=60s", timeout=90)
        cluster.kubectl(
            "-n", "smoke", "wait", "--for=delete", "pod", "-l", "app=smoke", "--timeout=60s", timeout=90
        )
        left = cluster.kubectl("-n", "smoke", "get", "rs,pods", "-o", "name").stdout.split()
        assert left == []
    finally:
        cluster.kubectl("delete", "namespace", "smoke", "--wait=false", check=False)
