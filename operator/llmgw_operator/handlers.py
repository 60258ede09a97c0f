"""kopf registrations: thin shells that turn watch events into reconcile triggers.

Only event handlers are used. kopf's change handlers would store
each object's last-handled configuration in an annotation (a Secret's data
among them) and write on every change; event handlers write nothing, so at
steady state the operator makes no writes at all. Every trigger means "look
at this object again"; the work queues coalesce them and the reconciler reads
the object fresh from the API, so a missed or duplicate event cannot leave
stale state behind. Which gateways a policy or Secret change reaches is kept
in ``references`` (not kopf indexes: see there why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, cast

import kopf

import llmgw_operator
from llmgw_operator import kube, poll, reconcile, references, sidecars, workqueue
from llmgw_operator.api import common, gateway, policy
from llmgw_operator.render import names, pod_rules

GATEWAYS = (common.GROUP, common.VERSION, gateway.PLURAL)
POLICIES = (common.GROUP, common.VERSION, policy.PLURAL)
# The sidecar of the same release; the chart always sets LLMGW_PROXY_IMAGE, to its appVersion by default.
DEFAULT_PROXY_IMAGE = f"ghcr.io/llmgw/llmgw-proxy:{llmgw_operator.__version__}"
# Native sidecars (restartPolicy: Always init containers) are on by default from 1.29.
NATIVE_SIDECAR_MINOR = 29

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Server-side selectors: the operator's watches (and kopf's caches) hold
    # only Secrets marked as provider keys plus its own children, never every
    # Secret or ConfigMap of the cluster. The handlers' label filters below are
    # client-side and would not spare that.
    settings.watching.label_selectors["v1", "secrets"] = names.PROVIDER_KEY_SELECTOR
    for resource in (
        ("v1", "configmaps"),
        ("apps", "deployments"),
        ("autoscaling", "horizontalpodautoscalers"),
    ):
        settings.watching.label_selectors[resource] = names.MANAGED_SELECTOR
    client = kube.Client.from_environment()
    minor = await client.server_minor()
    memo["reconciler"] = reconciler = reconcile.Reconciler(
        client,
        default_image=os.environ.get("LLMGW_PROXY_IMAGE", DEFAULT_PROXY_IMAGE),
        native_sidecar=minor >= NATIVE_SIDECAR_MINOR,
        pod_rules=memo.get("pod_rules") or pod_rules.Rules(),
    )

    memo["gateways_by_policy"] = references.References()
    memo["policies_by_secret"] = references.References()
    memo["gateways"] = workqueue.WorkQueue(_fresh_pass(client, "LLMGateway", reconciler.gateway))
    memo["policies"] = workqueue.WorkQueue(_fresh_pass(client, "ProviderPolicy", reconciler.policy))
    polling: poll.Settings = memo.get("polling") or poll.Settings()
    memo["fetcher"] = fetcher = sidecars.Fetcher(timeout=polling.timeout, concurrency=polling.concurrency)
    memo["poller"] = poller = poll.Poller(
        client,
        fetcher,
        reconciler.data_plane,
        period=polling.period,
        on_change=lambda key: _data_plane_changed(memo, key),
    )
    memo["polling_task"] = asyncio.create_task(poller.run(), name="data-plane poller")
    logger.info(
        "llmgw-operator started (version %s, API server 1.%d, native sidecars %s, pod rules %s)",
        llmgw_operator.__version__,
        minor,
        minor >= NATIVE_SIDECAR_MINOR,
        reconciler.pod_rules,
    )


def _data_plane_changed(memo: kopf.Memo, key: tuple[str, str]) -> None:
    """A gateway's pods reported something new: its status and its policies' status follow."""
    namespace, name = key
    memo["gateways"].trigger(key)
    by_policy: references.References = memo["gateways_by_policy"]
    for policy_name in by_policy.names_of(namespace, name):
        memo["policies"].trigger((namespace, policy_name))


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
    if "polling_task" in memo:
        memo["polling_task"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo["polling_task"]
        await memo["fetcher"].close()
    for queue in ("gateways", "policies"):
        if queue in memo:
            await memo[queue].stop()


# -- triggers ---------------------------------------------------------------------


@kopf.on.event(*GATEWAYS)
async def gateway_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    queue: workqueue.WorkQueue = memo["gateways"]
    by_policy: references.References = memo["gateways_by_policy"]
    poller: poll.Poller = memo["poller"]
    named = by_policy.names_of(namespace, name)
    if event["type"] == "DELETED":
        by_policy.drop(namespace, name)
        queue.forget((namespace, name))  # children go with it: owner references and the GC
        poller.forget((str(namespace), name))
    else:
        by_policy.set(namespace, name, references.policies_of(spec))
        named |= by_policy.names_of(namespace, name)
        queue.trigger((namespace, name))
        poller.track((str(namespace), name), poll.admin_port_of(spec))
    for policy_name in named:  # ProviderPolicy.status.gateways lists the gateways using it
        memo["policies"].trigger((namespace, policy_name))


@kopf.on.event(*POLICIES)
async def policy_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    by_secret: references.References = memo["policies_by_secret"]
    if event["type"] == "DELETED":
        by_secret.drop(namespace, name)
        memo["policies"].forget((namespace, name))
    else:
        by_secret.set(namespace, name, references.secret_of(spec))
        memo["policies"].trigger((namespace, name))
    _trigger_gateways_of(memo, namespace, name)


def _trigger_gateways_of(memo: kopf.Memo, namespace: str | None, policy_name: str) -> None:
    by_policy: references.References = memo["gateways_by_policy"]
    for gw in by_policy.referrers(namespace, policy_name):
        memo["gateways"].trigger((namespace, gw))


def _referenced(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> bool:
    by_secret: references.References = memo["policies_by_secret"]
    return (namespace, name) in by_secret


@kopf.on.event("v1", "secrets", when=_referenced)
async def secret_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    by_secret: references.References = memo["policies_by_secret"]
    for p in by_secret.referrers(namespace, name):
        memo["policies"].trigger((namespace, p))
        _trigger_gateways_of(memo, namespace, p)


# The Deployment's status makes Ready; a child edited or deleted by hand is put back.
@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
@kopf.on.event(
    "autoscaling", "v2", "horizontalpodautoscalers", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY}
)
@kopf.on.event("v1", "configmaps", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
@kopf.on.event("v1", "secrets", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def child_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(names.GATEWAY_LABEL)
    if owner:
        memo["gateways"].trigger((namespace, owner))


# A Deployment's status moves as its pods turn ready: poll them soon, not a period later.
@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": names.MANAGED_BY})
async def deployment_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(names.GATEWAY_LABEL)
    poller: poll.Poller = memo["poller"]
    if owner and (str(namespace), owner) in poller.targets:
        poller.soon((str(namespace), owner))
