"""The create-only apply (``kube.CREATE_ONLY``) against the real API server.

A pass with no copy of a child applies it with a resourceVersion no object
holds: the API server creates it when the name is free and refuses it when
anything holds the name. These tests pin that behaviour of the API server the
project is built against, since a new gateway's pass no longer reads its
children before applying them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from clusterkit import ClusterHandle

from llmgw_operator import kube

pytestmark = pytest.mark.cluster


def config_map(namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "gw-proxy-config", "namespace": namespace},
        "data": data,
    }


def read(cluster: ClusterHandle, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl(
        "-n", namespace, "get", "configmap/gw-proxy-config", "-o", "json", "--show-managed-fields"
    ).stdout
    found: dict[str, Any] = json.loads(out)
    return found


async def test_a_free_name_is_created_and_owned_as_an_apply(
    cluster: ClusterHandle, bare_namespace: str, api: kube.Client
) -> None:
    assert await api.apply(config_map(bare_namespace, {"a": "1", "b": "2"}), None) is True

    made = read(cluster, bare_namespace)
    assert made["data"] == {"a": "1", "b": "2"}
    assert [(m["manager"], m["operation"]) for m in made["metadata"]["managedFields"]] == [
        ("llmgw-operator", "Apply")
    ]
    # Owned as an apply (not as a create's update), a field the next apply leaves out is removed.
    assert await api.apply(config_map(bare_namespace, {"a": "1"}), made) is True
    assert read(cluster, bare_namespace)["data"] == {"a": "1"}


async def test_a_taken_name_is_refused_and_the_object_left_as_it_was(
    cluster: ClusterHandle, bare_namespace: str, api: kube.Client
) -> None:
    cluster.kubectl("-n", bare_namespace, "create", "configmap", "gw-proxy-config", "--from-literal=theirs=1")
    before = read(cluster, bare_namespace)

    with pytest.raises(kube.Exists) as refused:
        await api.apply(config_map(bare_namespace, {"a": "1"}), None)

    assert refused.value.status == 409
    assert "ConfigMap gw-proxy-config exists" in str(refused.value)
    after = read(cluster, bare_namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == {"theirs": "1"}
    assert "llmgw-operator" not in {m["manager"] for m in after["metadata"]["managedFields"]}


async def test_an_apply_of_a_known_object_still_takes_it_as_it_is(
    cluster: ClusterHandle, bare_namespace: str, api: kube.Client
) -> None:
    # The precondition is only for a child the caller has no copy of: given the live object, the
    # apply changes it whatever its resourceVersion.
    assert await api.apply(config_map(bare_namespace, {"a": "1"}), None) is True
    live = read(cluster, bare_namespace)
    cluster.kubectl("-n", bare_namespace, "label", "configmap/gw-proxy-config", "touched=yes")

    assert await api.apply(config_map(bare_namespace, {"a": "2"}), live) is True
    assert read(cluster, bare_namespace)["data"] == {"a": "2"}
