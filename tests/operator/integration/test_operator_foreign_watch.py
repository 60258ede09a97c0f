"""The metadata-only watch of objects not labelled as the operator's, against the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import pytest
from clusterkit import ClusterHandle

from llmgw_operator import foreign, foreign_watch, kube
from llmgw_operator.render import names

pytestmark = pytest.mark.cluster

WAIT = 30.0  # a watch event arrives in milliseconds; this only bounds a broken test


class Followed(foreign.ForeignNames):
    """The real index, which also says when the watch has changed it."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def listed(self, kind: str, names: Iterable[foreign.Name]) -> None:
        super().listed(kind, names)
        self.changed.set()

    def added(self, kind: str, name: foreign.Name) -> None:
        super().added(kind, name)
        self.changed.set()

    def removed(self, kind: str, name: foreign.Name) -> None:
        super().removed(kind, name)
        self.changed.set()


async def until(held: Followed, check: Callable[[], bool], what: str) -> None:
    """Wait for the watch to change ``held`` until ``check`` holds, up to ``WAIT``."""
    try:
        async with asyncio.timeout(WAIT):
            while not check():
                held.changed.clear()
                await held.changed.wait()
    except TimeoutError:
        raise AssertionError(f"not {what} within {WAIT:.0f} s") from None


def config_map(cluster: ClusterHandle, namespace: str, name: str, *labels: str) -> None:
    cluster.kubectl("-n", namespace, "create", "configmap", name)
    if labels:
        cluster.kubectl("-n", namespace, "label", "configmap", name, *labels)


async def test_others_names_are_listed_then_followed_and_the_operators_are_not(
    cluster: ClusterHandle, bare_namespace: str, api: kube.Client
) -> None:
    config_map(cluster, bare_namespace, "before-proxy-config")
    held = Followed()
    task = asyncio.create_task(foreign_watch.follow(api, held, "ConfigMap", None))
    try:
        await until(
            held, lambda: held.holds("ConfigMap", bare_namespace, "before-proxy-config") is True, "listed"
        )

        config_map(cluster, bare_namespace, "after-proxy-config")
        config_map(
            cluster, bare_namespace, "ours-proxy-config", f"app.kubernetes.io/managed-by={names.MANAGED_BY}"
        )
        await until(
            held, lambda: held.holds("ConfigMap", bare_namespace, "after-proxy-config") is True, "added"
        )
        assert held.holds("ConfigMap", bare_namespace, "ours-proxy-config") is False

        cluster.kubectl("-n", bare_namespace, "delete", "configmap", "before-proxy-config")
        await until(
            held, lambda: held.holds("ConfigMap", bare_namespace, "before-proxy-config") is False, "removed"
        )
        # Labelled as the operator's, an object leaves the selection: its name is no longer others'.
        cluster.kubectl(
            "-n",
            bare_namespace,
            "label",
            "configmap",
            "after-proxy-config",
            f"app.kubernetes.io/managed-by={names.MANAGED_BY}",
        )
        await until(
            held, lambda: held.holds("ConfigMap", bare_namespace, "after-proxy-config") is False, "relabelled"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_namespaces_out_of_scope_are_not_kept(
    cluster: ClusterHandle, bare_namespace: str, api: kube.Client
) -> None:
    config_map(cluster, bare_namespace, "out-proxy-config")
    held = Followed()
    task = asyncio.create_task(
        foreign_watch.follow(api, held, "ConfigMap", None, in_scope=lambda ns: ns != bare_namespace)
    )
    try:
        await until(held, lambda: held.answers("ConfigMap"), "listed")
        config_map(cluster, bare_namespace, "later-proxy-config")
        config_map(cluster, "default", f"{bare_namespace}-proxy-config")  # in scope: a marker of arrival
        await until(
            held,
            lambda: held.holds("ConfigMap", "default", f"{bare_namespace}-proxy-config") is True,
            "marker",
        )
        assert held.holds("ConfigMap", bare_namespace, "out-proxy-config") is False
        assert held.holds("ConfigMap", bare_namespace, "later-proxy-config") is False
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cluster.kubectl("-n", "default", "delete", "configmap", f"{bare_namespace}-proxy-config", check=False)


async def test_a_namespaced_watch_lists_and_follows_its_namespace_only(
    cluster: ClusterHandle, bare_namespace: str, api: kube.Client
) -> None:
    held = Followed()
    task = asyncio.create_task(foreign_watch.follow(api, held, "Deployment", bare_namespace))
    try:
        await until(held, lambda: held.answers("Deployment"), "listed")
        cluster.kubectl("-n", bare_namespace, "create", "deployment", "web", "--image=registry.example/web:1")
        await until(held, lambda: held.holds("Deployment", bare_namespace, "web") is True, "added")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
