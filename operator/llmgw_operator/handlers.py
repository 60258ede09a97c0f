"""kopf registrations: thin shells that turn watch events into reconcile triggers.

Only event handlers and indexes are used. kopf's change handlers would store
each object's last-handled configuration in an annotation (a Secret's data
among them) and write on every change; event handlers write nothing, so at
steady state the operator makes no writes at all. Every trigger means "look
at this object again"; the work queues coalesce them and the reconciler reads
the object fresh from the API, so a missed or duplicate event cannot leave
stale state behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, cast

import kopf

from llmgw_operator import kube, reconcile, workqueue
from llmgw_operator.api import common, gateway, policy
from llmgw_operator.render import names

GATEWAYS = (common.GROUP, common.VERSION, gateway.PLURAL)
POLICIES = (common.GROUP, common.VERSION, policy.PLURAL)
DEFAULT_PROXY_IMAGE = "ghcr.io/llmgw/llmgw-proxy:0.1.0"
# Native sidecars (restartPolicy: Always init containers) are on by default from 1.29.
NATIVE_SIDECAR_MINOR = 29

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    client = kube.Client.from_environment()
    minor = await client.server_minor()
    memo["reconciler"] = reconciler = reconcile.Reconciler(
        client,
        default_image=os.environ.get("LLMGW_PROXY_IMAGE", DEFAULT_PROXY_IMAGE),
        native_sidecar=minor >= NATIVE_SIDECAR_MINOR,
    )

    memo["gateways"] = workqueue.WorkQueue(_fresh_pass(client, "LLMGateway", reconciler.gateway))
    memo["policies"] = workqueue.WorkQueue(_fresh_pass(client, "ProviderPolicy", reconciler.policy))
    logger.info(
        "llmgw-operator started (API server 1.%d, native sidecars %s)", minor, minor >= NATIVE_SIDECAR_MINOR
    )


def _fresh_pass(
    client: kube.Client, kind: str, reconcile_body: Callable[[dict[str, Any]], Awaitable[None]]
) -> workqueue.Work:
    """A queue pass: read the object fresh (it may be gone by now), then reconcile it."""

    async def one_pass(key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        body = await client.get(kind, namespace, name)
        if body is not None:
            await reconcile_body(body)

    return one_pass


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for queue in ("gateways", "policies"):
        if queue in memo:
            await memo[queue].stop()


# -- indexes: who references whom, without scanning ------------------------------


@kopf.index(*GATEWAYS)
def gateways_by_policy(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str]:
    targets = {t.get("policy") for r in spec.get("routes") or [] for t in r.get("targets") or []}
    return {(namespace, p): name for p in targets if isinstance(p, str)}


@kopf.index(*POLICIES)
def policies_by_secret(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str | None, str], str]:
    ref = spec.get("apiKeySecretRef") or {}
    return {(namespace, ref["name"]): name} if isinstance(ref.get("name"), str) else {}


# -- triggers ---------------------------------------------------------------------


@kopf.on.event(*GATEWAYS)
async def gateway_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    queue: workqueue.WorkQueue = memo["gateways"]
    if event["type"] == "DELETED":
        queue.forget((namespace, name))  # children go with it: owner references and the GC
    else:
        queue.trigger((namespace, name))


# Indexes reach handlers as keyword arguments named after the index function.
Index = kopf.Index[tuple[str | None, str], str]


@kopf.on.event(*POLICIES)
async def policy_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    if event["type"] == "DELETED":
        memo["policies"].forget((namespace, name))
    else:
        memo["policies"].trigger((namespace, name))
    by_policy: Index = kwargs["gateways_by_policy"]
    for gw in by_policy.get((namespace, name), []):
        memo["gateways"].trigger((namespace, gw))


def _referenced(namespace: str | None, name: str, **kwargs: Any) -> bool:
    by_secret: Index = kwargs["policies_by_secret"]
    return (namespace, name) in by_secret


@kopf.on.event("v1", "secrets", when=_referenced)
async def secret_changed(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    by_secret: Index = kwargs["policies_by_secret"]
    by_policy: Index = kwargs["gateways_by_policy"]
    for p in by_secret.get((namespace, name), []):
        memo["policies"].trigger((namespace, p))
        for gw in by_policy.get((namespace, p), []):
            memo["gateways"].trigger((namespace, gw))


# The Deployment's status makes Ready; a child edited or deleted by hand is put back.
@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
@kopf.on.event("v1", "configmaps", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
@kopf.on.event("v1", "secrets", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def child_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(names.GATEWAY_LABEL)
    if owner:
        memo["gateways"].trigger((namespace, owner))
