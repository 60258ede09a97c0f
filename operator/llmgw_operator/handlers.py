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
import fnmatch
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

import aiohttp
import jsonpatch
import kopf

import llmgw_operator
from llmgw_operator import (
    admission,
    cache,
    foreign,
    foreign_watch,
    kopf_lean,
    kube,
    login,
    metrics,
    poll,
    reconcile,
    references,
    sidecars,
    webhook,
    workqueue,
)
from llmgw_operator.api import common, gateway, policy
from llmgw_operator.render import names, pod_rules

GATEWAYS = (common.GROUP, common.VERSION, gateway.PLURAL)
POLICY_INTERVAL = 1.0
"""Seconds between the starts of one policy's passes. Each new gateway that uses a policy triggers
it (its status lists its gateways) and each pass walks all of them: 5,000 new gateways made 6,150
passes over up to 5,000 gateways each. The status then trails by at most this."""
POLICIES = (common.GROUP, common.VERSION, policy.PLURAL)
# The sidecar of the same release; the chart always sets LLMGW_PROXY_IMAGE, to its appVersion by default.
DEFAULT_PROXY_IMAGE = f"ghcr.io/llmgw/llmgw-proxy:{llmgw_operator.__version__}"
# Native sidecars (restartPolicy: Always init containers) are on by default from 1.29.
NATIVE_SIDECAR_MINOR = 29

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


kopf.on.login()(login.kopf_login)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    kopf_lean.apply(settings, verbose=bool(memo.get("verbose")))
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Bounds of a failure's reach (cli.py has the defaults): how long a standby waits for a replica
    # killed without a word, and how long a silently stalled watch goes unnoticed.
    settings.peering.lifetime = int(memo.get("peering_lifetime") or settings.peering.lifetime)
    settings.watching.inactivity_timeout = float(
        memo.get("watch_inactivity") or settings.watching.inactivity_timeout
    )
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
    # The webhook and its certificates read live: a standby replica runs no watches to cache from.
    memo["client"] = client = kube.Client()
    client.metrics = m = metrics.Metrics()
    memo["cached"] = cached = cache.CachedClient()
    memo["store"] = store = cached.store
    cached.metrics = m
    cache.register_gauges(m, store)
    minor = await client.server_minor()
    memo["reconciler"] = reconciler = reconcile.Reconciler(
        cached,
        default_image=os.environ.get("LLMGW_PROXY_IMAGE", DEFAULT_PROXY_IMAGE),
        native_sidecar=minor >= NATIVE_SIDECAR_MINOR,
        pod_rules=memo.get("pod_rules") or pod_rules.Rules(),
    )

    memo["gateways_by_policy"] = by_policy = references.References()
    memo["policies_by_secret"] = references.References()
    memo["gateways"] = workqueue.WorkQueue(
        _fresh_pass(cached, "LLMGateway", reconciler.gateway, seen=lambda body: _gateway_seen(memo, body)),
        name="llmgateway",
        metrics=m,
    )
    memo["policies"] = workqueue.WorkQueue(
        _fresh_pass(cached, "ProviderPolicy", reconciler.policy),
        name="providerpolicy",
        metrics=m,
        min_interval=POLICY_INTERVAL,
    )
    polling: poll.Settings = memo.get("polling") or poll.Settings()
    memo["fetcher"] = fetcher = sidecars.Fetcher(timeout=polling.timeout, concurrency=polling.concurrency)
    # The poller's LISTs have connections of their own: in the passes' pool, 5,000 gateways' LISTs
    # queued ahead of every pass's requests. It peeks at ConfigMaps in the same watches' copy.
    memo["poll_client"] = poll_client = cache.CachedClient(connections=poll.CONNECTIONS)
    poll_client.store, poll_client.metrics = store, m
    memo["poller"] = poller = poll.Poller(
        poll_client,
        fetcher,
        reconciler.data_plane,
        period=polling.period,
        on_change=lambda key: _data_plane_changed(memo, key),
        page_size=polling.page_size,
        rate=polling.rate,
    )
    fetcher.metrics = poller.metrics = m
    memo["polling_task"] = asyncio.create_task(poller.run(), name="data-plane poller")
    poll.register_gauges(m, reconciler.data_plane, reconciler.gateway_states)
    ready = asyncio.Event()
    # Once every gateway listed at start had a pass, the references know each policy's users.
    reconciler.policy_users = lambda ns, p: by_policy.referrers(ns, p) if ready.is_set() else None
    hook: webhook.Settings = memo.get("webhook") or webhook.Settings()
    listener = _start_webhook(settings, memo, client, reconciler, hook) if hook.port else None

    def is_ready() -> bool:
        # A replica takes admission requests (the chart's Service) only once it serves them.
        return ready.is_set() and (listener is None or listener.serving)

    port = memo.get("metrics_port")
    if port:
        memo["metrics_server"] = server = metrics.Server(m, is_ready, "0.0.0.0", port)
        await server.start()
    memo["foreign_client"] = foreign_client = kube.Client(connections=foreign_watch.CONNECTIONS)
    foreign_client.metrics = m
    cached.foreign = held = foreign.ForeignNames()
    memo["foreign_tasks"] = _watch_foreign(foreign_client, held, memo.get("namespaces") or ())
    memo["priming_task"] = asyncio.create_task(
        _prime(client, memo, memo.get("namespaces") or (), ready), name="first listing"
    )
    logger.info(
        "llmgw-operator started (version %s, API server 1.%d, native sidecars %s, pod rules %s)",
        llmgw_operator.__version__,
        minor,
        minor >= NATIVE_SIDECAR_MINOR,
        reconciler.pod_rules,
    )


def _start_webhook(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    client: kube.Client,
    reconciler: reconcile.Reconciler,
    hook: webhook.Settings,
) -> webhook.Server:
    """The webhook listener and its certificate keeper, on this replica whatever its peering role:
    kopf's admission server runs beside the watches, not under the peering freeze."""
    memo["injector"] = admission.Injector(
        client, reconciler.default_image, reconciler.native_sidecar, fail_closed=hook.fail_closed
    )
    listener = webhook.Server(hook.addr, hook.port)
    settings.admission.server = listener
    settings.admission.managed = None  # the configuration is the chart's; only its caBundle is kept
    keeper = webhook.Keeper(
        client,
        listener,
        hook.namespace,
        hook.secret,
        hook.hosts,
        configuration=hook.configuration,
        managed=hook.managed,
        lifetimes=hook.lifetimes,
        period=hook.period,
    )
    memo["webhook_keeper_task"] = asyncio.create_task(keeper.run(), name="webhook certificates")
    return listener


async def inject_sidecar(
    body: kopf.Body,
    patch: kopf.Patch,
    namespace: str | None,
    warnings: list[str],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A new pod labelled llmgateway.io/gateway: add its gateway's sidecar, or refuse it."""
    injector: admission.Injector = memo["injector"]
    try:
        decision = await injector.decide(body, str(namespace or ""))
    except admission.Refused as e:
        raise kopf.AdmissionError(str(e), code=403) from None
    except kube.ApiError as e:
        raise kopf.AdmissionError(f"llmgw: cannot read the gateway: {e}", code=503) from None
    warnings.extend(decision.warnings)
    if decision.patch:
        ops = decision.patch
        patch.fns.append(lambda pod: jsonpatch.apply_patch(pod, ops, in_place=True))


def register_webhook() -> None:
    """Only with --webhook-port: kopf refuses to start with admission handlers and no server."""
    kopf.on.mutate("v1", "pods", id="inject", operations=["CREATE"], persistent=True)(inject_sidecar)


def _data_plane_changed(memo: kopf.Memo, key: tuple[str, str]) -> None:
    """A gateway's pods reported something new: its status and its policies' status follow."""
    namespace, name = key
    memo["gateways"].trigger(key)
    by_policy: references.References = memo["gateways_by_policy"]
    for policy_name in by_policy.names_of(namespace, name):
        memo["policies"].trigger((namespace, policy_name))


def _fresh_pass(
    client: kube.Client,
    kind: str,
    reconcile_body: Callable[[dict[str, Any]], Awaitable[None]],
    seen: Callable[[dict[str, Any]], None] | None = None,
) -> workqueue.Work:
    """A queue pass: read the object (from the watches' copy, else the API; it may be gone by now),
    then reconcile it."""

    async def one_pass(key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        body = await client.get(kind, namespace, name)
        if body is not None:
            if seen is not None:
                seen(body)
            await reconcile_body(body)
        logger.debug("%s %s/%s: pass done", kind, namespace, name)

    return one_pass


def _gateway_seen(memo: kopf.Memo, body: dict[str, Any]) -> None:
    """A pass read a gateway: the references follow it, so that once the first listing has had its
    passes they know every policy's users, even of gateways whose watch event is still to come."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    store: cache.Store = memo["store"]
    if store.deleted(("LLMGateway", namespace, name), meta.get("resourceVersion")):
        return  # read before its deletion, which the handler has already taken out
    by_policy: references.References = memo["gateways_by_policy"]
    old, new = by_policy.names_of(namespace, name), frozenset(references.policies_of(body.get("spec") or {}))
    if old != new:
        by_policy.set(namespace, name, new)
        for policy_name in old | new:
            memo["policies"].trigger((namespace, policy_name))


async def _prime(
    client: kube.Client, memo: kopf.Memo, patterns: tuple[str, ...], ready: asyncio.Event
) -> None:
    """The children's copy a pass can trust, then readiness.

    First the operator's children are listed into the watches' copy. From then
    on a child the copy lacks was not there when listed and has not been made
    since (the operator's own writes go into the copy): unless someone else's
    object holds its name (``foreign.py``), a pass applies it create-only
    without reading it first (``cache.CachedClient.child``). Until then passes
    read their children.

    Then readiness: list each watched kind once, and wait until every object
    listed had a pass. The gateways' passes read their children and the
    policies' passes their Secrets, so once both kinds are through, everything
    the watches would have delivered has been looked at.
    """
    cached: cache.CachedClient = memo["cached"]
    listing = functools.partial(_cache_children, client, cached.store, patterns)
    await _until_listed("the operator's children", listing)
    cached.children_listed = True
    for kind, queue_name in (("ProviderPolicy", "policies"), ("LLMGateway", "gateways")):
        queue: workqueue.WorkQueue = memo[queue_name]
        keys = await _until_listed(kind, functools.partial(_watched, client, kind, patterns))
        since = dict(queue.attempts)
        for key in keys:
            queue.trigger(key)
        await queue.attempted(keys, since)
    logger.info("first listing processed: ready")
    ready.set()


def _watch_foreign(
    client: kube.Client, held: foreign.ForeignNames, patterns: tuple[str, ...]
) -> list[asyncio.Task[None]]:
    """A metadata-only watch per child kind of the objects the operator's own watches leave out: in
    every namespace, or in each one named, or in every one filtered by the patterns when they have
    globs (which needs the cluster-wide list RBAC gives only to an operator watching every
    namespace; refused, passes read child names from the API as before)."""
    plain = bool(patterns) and all(not any(c in p for c in "*?[!") for p in patterns)
    namespaces: tuple[str | None, ...] = patterns if plain else (None,)

    def in_scope(namespace: str) -> bool:
        return not patterns or _matches(namespace, patterns)

    return [
        asyncio.create_task(
            foreign_watch.follow(client, held, kind, namespace, in_scope),
            name=f"watch of others' {kind} in {namespace or 'every namespace'}",
        )
        for kind in foreign.KINDS
        for namespace in namespaces
    ]


async def _until_listed(what: str, listing: Callable[[], Awaitable[_T]]) -> _T:
    """``listing()``, tried again with backoff while the API refuses it or cannot be reached."""
    delay = 1.0
    while True:
        try:
            return await listing()
        except (kube.ApiError, aiohttp.ClientError, TimeoutError) as e:
            logger.warning("listing %s failed (%s); retrying in %.0fs", what, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


# What the child watches select (start: the label selectors), so that a copy listed here is one
# their events keep up to date.
CHILD_SELECTORS = {
    "ConfigMap": names.MANAGED_SELECTOR,
    "Secret": f"{names.MANAGED_SELECTOR},{names.PROVIDER_KEY_SELECTOR}",
    "Deployment": names.MANAGED_SELECTOR,
    "HorizontalPodAutoscaler": names.MANAGED_SELECTOR,
}


async def _cache_children(client: kube.Client, store: cache.Store, patterns: tuple[str, ...]) -> None:
    """Every child of the operator's in the namespaces it watches, put in the watches' copy (which
    keeps the newer of a listed object and a watch event's, and a deletion seen over both)."""
    namespaces: list[str | None] = (
        [None] if not patterns else [n for n in await client.namespaces() if _matches(n, patterns)]
    )
    for kind, selector in CHILD_SELECTORS.items():
        prefix, _ = kube.RESOURCES[kind]
        api_version = prefix.removeprefix("/apis/").removeprefix("/api/")
        for namespace in namespaces:
            async for page in client.list_pages(kind, namespace, selector):
                for item in page:  # a LIST's items carry no kind, which the copy is keyed by
                    store.put({"apiVersion": api_version, "kind": kind, **item})


async def _watched(client: kube.Client, kind: str, patterns: tuple[str, ...]) -> list[tuple[str, str]]:
    """(namespace, name) of every object of ``kind`` in the namespaces the operator watches."""
    if not patterns:
        items = await client.list_all(kind)
    else:
        items = []
        for namespace in await client.namespaces():
            if _matches(namespace, patterns):
                items.extend(await client.list_objects(kind, namespace))
    return sorted((str(i["metadata"]["namespace"]), str(i["metadata"]["name"])) for i in items)


def _matches(namespace: str, patterns: tuple[str, ...]) -> bool:
    """kopf's namespace patterns: globs, and ``!glob`` to exclude."""
    excluded = any(fnmatch.fnmatchcase(namespace, p[1:]) for p in patterns if p.startswith("!"))
    included = any(fnmatch.fnmatchcase(namespace, p) for p in patterns if not p.startswith("!"))
    return included and not excluded


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in ("priming_task",):
        if task in memo:
            memo[task].cancel()
    for task in memo.get("foreign_tasks") or ():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "webhook_keeper_task" in memo:
        await webhook.stop(memo["webhook_keeper_task"])
    if "metrics_server" in memo:
        await memo["metrics_server"].stop()
    if "polling_task" in memo:
        memo["polling_task"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo["polling_task"]
        await memo["fetcher"].close()
    for queue in ("gateways", "policies"):
        if queue in memo:
            await memo[queue].stop()
    for client in ("client", "cached", "poll_client", "foreign_client"):
        if client in memo:
            await memo[client].close()


# -- triggers ---------------------------------------------------------------------


@kopf.on.event(*GATEWAYS)
async def gateway_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    memo["store"].observe(event["type"], event["object"])  # before the pass it triggers reads it
    queue: workqueue.WorkQueue = memo["gateways"]
    by_policy: references.References = memo["gateways_by_policy"]
    poller: poll.Poller = memo["poller"]
    named = by_policy.names_of(namespace, name)
    if event["type"] == "DELETED":
        by_policy.drop(namespace, name)
        queue.forget((namespace, name))  # children go with it: owner references and the GC
        poller.forget((str(namespace), name))
        memo["reconciler"].gateway_states.pop((namespace, name), None)
    else:
        by_policy.set(namespace, name, references.policies_of(spec))
        # Only the policies it started or stopped naming: any other change of the gateway (its
        # status, most often) changes nothing in a policy's status; the data plane's changes
        # reach the policies through the poller (_data_plane_changed).
        named ^= by_policy.names_of(namespace, name)
        queue.trigger((namespace, name))
        poller.track((str(namespace), name), poll.admin_port_of(spec))
    for policy_name in named:  # ProviderPolicy.status.gateways lists the gateways using it
        memo["policies"].trigger((namespace, policy_name))


@kopf.on.event(*POLICIES)
async def policy_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    memo["store"].observe(event["type"], event["object"])
    by_secret: references.References = memo["policies_by_secret"]
    # Gateways render the policy's spec only, whose changes move metadata.generation. Its status
    # changes with every gateway that starts or stops using it, and passing every one of its
    # gateways on each (thousands, each rendering its config) kept the operator from converging
    # at scale. The generation is the one the watch delivered, not the copy's, which a status
    # write's response may have moved past a spec edit whose event is still on the way.
    generations: dict[tuple[str | None, str], object] = memo.setdefault("policy_generations", {})
    seen = generations.get((namespace, name))
    if event["type"] == "DELETED":
        by_secret.drop(namespace, name)
        memo["policies"].forget((namespace, name))
        generations.pop((namespace, name), None)
    else:
        by_secret.set(namespace, name, references.secret_of(spec))
        memo["policies"].trigger((namespace, name))
        generations[(namespace, name)] = (event["object"].get("metadata") or {}).get("generation")
    if seen is None or event["type"] == "DELETED" or seen != generations.get((namespace, name)):
        _trigger_gateways_of(memo, namespace, name)


def _trigger_gateways_of(memo: kopf.Memo, namespace: str | None, policy_name: str) -> None:
    by_policy: references.References = memo["gateways_by_policy"]
    for gw in by_policy.referrers(namespace, policy_name):
        memo["gateways"].trigger((namespace, gw))


# Every Secret the watch delivers (marked as a provider key, or rendered by the operator) is kept,
# so that a policy that names one later finds it; only referenced ones trigger passes.
@kopf.on.event("v1", "secrets")
async def secret_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    memo["store"].observe(event["type"], event["object"])
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
async def child_changed(
    event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    memo["store"].observe(event["type"], event["object"])
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
