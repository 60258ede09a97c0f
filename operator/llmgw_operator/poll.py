"""The data-plane poller: every period, each gateway's ready pods' ``/status``, aggregated.

For each gateway it knows (``track``), one round lists the pods of every
namespace that has such gateways (one paginated LIST per namespace, pods that
carry the gateway label, grouped by its value: not a LIST per gateway, which
made 5,000 gateways cost 5,000 requests per round, each of which makes the API
server go through every pod of the namespace), reads each gateway's ConfigMap
from the watches' copy for the rendered config's hash, asks every ready pod with an IP
for its report (``sidecars.Fetcher``: bounded concurrency, short timeout) and
aggregates the answers (``render.dataplane``). Only a changed observation goes
further: it is stored and ``on_change`` triggers the work queues of the gateway
and of the policies it uses, whose passes write the status, so the status has
one writer and a steady data plane causes no write at all.

Besides the period, ``soon`` asks for a round of one gateway shortly (its
Deployment changed: pods may have become ready); the gateways asked for within
``SOON_DELAY`` share one round, and so one LIST of their namespace.

The poller's client has a small connection pool of its own (``CONNECTIONS``),
so its LISTs never wait in the pool the reconcile passes' requests use, nor
make them wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from llmgw_operator import kube, sidecars
from llmgw_operator import metrics as metrics_
from llmgw_operator.api import gateway
from llmgw_operator.render import dataplane, injection, names
from llmgw_proxy import config

logger = logging.getLogger(__name__)

Key = dataplane.Key
SOON_DELAY = 1.0
"""Seconds a ``soon`` waits before polling, so one rollout's burst of events makes one round."""
SELECT_MAX = 50
"""Gateways one LIST of a ``soon`` round names (``gateway in (...)``); a round of more makes one
such LIST per ``SELECT_MAX``. A round of a whole namespace's pods, every second while thousands of
new gateways' Deployments turn available, had the API server write and the operator decode every
pod of it each time: 45 % of the operator's busy samples at 5,000 gateways."""
SELECT_LISTS = 20
"""LISTs a ``soon`` round makes per namespace at most (1,000 gateways); past that, it lists the
namespace's labelled pods as a full round does, which is then not much more to decode."""
CONNECTIONS = 2
"""Connections of the poller's own client: its LISTs, one namespace's pages after another."""
GATEWAY_PODS = names.GATEWAY_LABEL
"""The label selector of a round's LIST: every pod that carries the gateway label, whatever its value."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the data plane is polled (``--data-plane-*`` flags; docs/security.md states the bounds)."""

    period: float = 15.0
    timeout: float = 2.0
    concurrency: int = 64
    page_size: int = kube.LIST_PAGE
    rate: float = 100.0


_KEPT_ANNOTATIONS = (injection.INJECTED_ANNOTATION, names.RESTART_HASH_ANNOTATION)


def slim(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What ``injection.census`` and ``ready_pod_ips`` read of a pod; the rest (its spec, other
    annotations, managedFields: most of its bytes) is not held while a round runs."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    kept_meta: dict[str, Any] = {
        "name": meta.get("name"),
        "annotations": {k: annotations[k] for k in _KEPT_ANNOTATIONS if k in annotations},
    }
    if meta.get("deletionTimestamp"):
        kept_meta["deletionTimestamp"] = meta["deletionTimestamp"]
    ready = [c for c in st.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == "Ready"]
    kept_status = {"phase": st.get("phase"), "podIP": st.get("podIP"), "conditions": ready}
    return {"metadata": kept_meta, "status": kept_status}


def ready_pod_ips(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(name, IP) of each pod that is Ready, has an IP and is not being deleted."""
    out = []
    for pod in pods:
        meta, st = pod.get("metadata") or {}, pod.get("status") or {}
        ip = st.get("podIP")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
        )
        if ready and ip and not meta.get("deletionTimestamp"):
            out.append((str(meta.get("name")), str(ip)))
    return sorted(out)


class Poller:
    def __init__(
        self,
        client: kube.Client,
        fetcher: sidecars.Fetcher,
        store: dataplane.Store,
        *,
        period: float,
        on_change: Callable[[Key], None],
        page_size: int = kube.LIST_PAGE,
        rate: float = Settings.rate,
    ) -> None:
        self.client = client
        self.page_size = page_size
        # Status requests per second a full round may average: with more ready pods than
        # period x rate, rounds come further apart than the period (the fetcher's concurrency
        # bounds the burst, this the CPU and the pods' own load over time).
        self.rate = rate
        self.asked = 0  # status requests sent, all rounds
        self.fetcher = fetcher
        self.store = store
        self.period = period
        self.on_change = on_change
        self.targets: dict[Key, int] = {}  # gateway -> its admin port
        self._rendered: dict[Key, tuple[str, str | None]] = {}  # ConfigMap resourceVersion, hash
        self._soon: set[Key] = set()
        self._wake = asyncio.Event()
        self.rounds = 0
        self.metrics: metrics_.Metrics | None = None

    def track(self, key: Key, admin_port: int) -> None:
        if self.targets.get(key) != admin_port:
            self.targets[key] = admin_port
            self.soon(key)

    def forget(self, key: Key) -> None:
        self.targets.pop(key, None)
        self._rendered.pop(key, None)
        self._soon.discard(key)
        self.store.forget(key)

    def soon(self, key: Key) -> None:
        self._soon.add(key)
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            timeout = next_round - loop.time()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            if loop.time() >= next_round:
                self._soon.clear()
                self._wake.clear()
                timer = metrics_.Timer()
                asked = self.asked
                await self.poll(list(self.targets))
                self.rounds += 1
                if self.metrics is not None:
                    self.metrics.poll_round.observe(timer.elapsed())
                next_round = loop.time() + round_interval(self.period, self.asked - asked, self.rate)
            elif self._wake.is_set():
                await asyncio.sleep(SOON_DELAY)  # gather a rollout's burst of events into one round
                self._wake.clear()
                keys, self._soon = sorted(self._soon), set()
                await self.poll([k for k in keys if k in self.targets], selective=True)

    async def poll(self, keys: list[Key], *, selective: bool = False) -> None:
        """One round over ``keys``: a LIST per namespace, then its gateways, as many at once as
        the fetcher has requests in flight (``concurrency``), which also bounds the requests.
        ``selective``: a namespace's LIST asks only for those gateways' pods when there are few
        enough (``SELECT_MAX``)."""
        by_namespace: dict[str, list[str]] = {}
        for namespace, name in keys:
            by_namespace.setdefault(namespace, []).append(name)
        lists = [
            (ns, chunk, selector)
            for ns, gateways in by_namespace.items()
            for chunk, selector in (selections(gateways) if selective else [(gateways, None)])
        ]
        await asyncio.gather(
            *(self._poll_namespace(ns, [(ns, g) for g in chunk], selector) for ns, chunk, selector in lists)
        )

    async def _poll_namespace(self, namespace: str, keys: list[Key], selector: str | None = None) -> None:
        try:
            pods = await self.pods_by_gateway(namespace, selector)
        except Exception as e:  # the next round lists again; the poller must not end
            # Not only ApiError: a kube-apiserver killed mid-answer breaks the connection under
            # urllib3 (ProtocolError), and that ended the polling task for good.
            logger.warning("listing the gateways' pods in namespace %s failed: %s", namespace, e)
            return
        # As many gateways at once as the fetcher has requests in flight: a task per gateway (5,000
        # at once in one namespace) held each one's pods and coroutines while it waited its turn.
        pending = iter(keys)

        async def worker() -> None:
            for key in pending:
                try:
                    await self.poll_gateway(key, pods.get(key[1], []))
                except Exception as e:
                    logger.warning("polling the pods of gateway %s/%s failed: %s", *key, e)

        await asyncio.gather(*(worker() for _ in range(min(len(keys), self.fetcher.concurrency))))

    async def pods_by_gateway(
        self, namespace: str, selector: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """The namespace's pods that carry the gateway label (or match ``selector``), by its value,
        each cut to what a round reads (``slim``): a page is let go before the next is read."""
        out: dict[str, list[dict[str, Any]]] = {}
        async for page in self.client.list_pages("Pod", namespace, selector or GATEWAY_PODS, self.page_size):
            for pod in page:
                owner = ((pod.get("metadata") or {}).get("labels") or {}).get(names.GATEWAY_LABEL)
                if isinstance(owner, str):
                    out.setdefault(owner, []).append(slim(pod))
        return out

    async def poll_gateway(self, key: Key, pods: list[dict[str, Any]]) -> None:
        """One gateway's round, given its pods (those labelled with its name)."""
        _, name = key
        port = self.targets.get(key)
        if port is None:
            return
        counted = injection.census(pods, name)
        if key in self.targets and self.store.injected.get(key, ()) != counted:
            # Injected pods came or went: the reconcile pass re-splits shared limits and counts them.
            self.store.injected[key] = counted
            self.on_change(key)
        rendered = await self._rendered_hash(key)
        ready = ready_pod_ips(pods)
        self.asked += len(ready)
        answers = await asyncio.gather(*(self.fetcher.status(ip, port) for _, ip in ready))
        reports = [dataplane.PodReport(pod, answer) for (pod, _), answer in zip(ready, answers, strict=True)]
        observation = dataplane.aggregate(rendered, reports)
        if key not in self.targets or self.store.observations.get(key) == observation:
            return
        self.store.observations[key] = observation
        self.on_change(key)

    async def _rendered_hash(self, key: Key) -> str | None:
        """The hash of the config in the gateway's ConfigMap (what its pods should run)."""
        namespace, name = key
        # A peek: the operator's ConfigMap is watched, so one not in the copy is not there yet, and
        # a gateway still being set up must not cost a read per round.
        found = await self.client.peek("ConfigMap", namespace, names.config_map(name))
        if found is None:
            return None
        meta = found.get("metadata") or {}
        version = str(meta.get("resourceVersion", ""))
        cached = self._rendered.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        # The operator writes the digest beside the config it renders; a ConfigMap from before it
        # did (or whose annotation someone removed) is parsed. A hand edit of the data is put back
        # by the gateway's next pass, which its watch event triggers.
        noted = (meta.get("annotations") or {}).get(names.CONFIG_DIGEST_ANNOTATION)
        text = (found.get("data") or {}).get(names.CONFIG_KEY)
        rendered = noted if isinstance(noted, str) else _hash_of(text)
        self._rendered[key] = (version, rendered)
        return rendered


def round_interval(period: float, asked: int, rate: float) -> float:
    """Seconds from the end of a full round to the start of the next: the period, or longer when
    the round asked more pods than ``rate`` allows in it."""
    return max(period, asked / rate)


def selector_for(gateways: list[str]) -> str | None:
    """A label selector for just these gateways' pods; None (the whole namespace's) when there
    are too many, or a name no label value can hold (which no pod carries then anyway)."""
    if not gateways or len(gateways) > SELECT_MAX or any(len(g) > gateway.MAX_NAME_LENGTH for g in gateways):
        return None
    return f"{names.GATEWAY_LABEL} in ({','.join(sorted(set(gateways)))})"


def selections(gateways: list[str]) -> list[tuple[list[str], str | None]]:
    """The LISTs of a ``soon`` round over one namespace's ``gateways``: each chunk of at most
    ``SELECT_MAX`` with its selector, or, past ``SELECT_LISTS`` chunks or for a name no selector
    can hold, all of them with None (the namespace's labelled pods)."""
    chunks = [gateways[i : i + SELECT_MAX] for i in range(0, len(gateways), SELECT_MAX)]
    selectors = [selector_for(chunk) for chunk in chunks]
    if len(chunks) > SELECT_LISTS or None in selectors:
        return [(gateways, None)]
    return list(zip(chunks, selectors, strict=True))


def _hash_of(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        return config.digest(config.parse(yaml.safe_load(text)))
    except (yaml.YAMLError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def admin_port_of(spec: Mapping[str, Any]) -> int:
    """The admin port a gateway spec gives its sidecars (the model's default when unset)."""
    proxy = spec.get("proxy") if isinstance(spec.get("proxy"), Mapping) else {}
    port = proxy.get("adminPort") if isinstance(proxy, Mapping) else None
    return port if isinstance(port, int) else gateway.Proxy().admin_port


def pod_samples(store: dataplane.Store) -> list[tuple[tuple[str, ...], float]]:
    """``llmgw_operator_dataplane_pods{namespace,gateway,state}`` from the latest observations."""
    out: list[tuple[tuple[str, ...], float]] = []
    for (namespace, name), obs in sorted(store.observations.items()):
        for state, n in (
            ("up_to_date", obs.up_to_date),
            ("outdated", obs.outdated),
            ("unreporting", obs.unreporting),
        ):
            out.append(((namespace, name, state), float(n)))
    return out


def provider_samples(store: dataplane.Store) -> list[tuple[tuple[str, ...], float]]:
    """``llmgw_operator_dataplane_provider_pods{namespace,gateway,provider,state}``."""
    out: list[tuple[tuple[str, ...], float]] = []
    for (namespace, name), obs in sorted(store.observations.items()):
        for p in obs.providers:
            for state, n in (
                ("reporting", p.reporting),
                ("breaker_open", p.open),
                ("half_open", p.half_open),
                ("paused", p.paused),
            ):
                out.append(((namespace, name, p.name, state), float(n)))
    return out


def register_gauges(
    m: metrics_.Metrics, store: dataplane.Store, gateway_states: Mapping[Key, Mapping[str, str]]
) -> None:
    """The operator's state gauges, read at scrape time: gateways by condition, data-plane pod counts."""
    m.gauge(
        "llmgw_operator_gateways",
        "LLMGateways by condition type and status, as last computed.",
        ["condition", "status"],
        lambda: metrics_.count_by(gateway_states),
    )
    m.gauge(
        "llmgw_operator_dataplane_pods",
        "Ready pods of each gateway at the last poll: up_to_date, outdated (another config), unreporting.",
        ["namespace", "gateway", "state"],
        lambda: pod_samples(store),
    )
    m.gauge(
        "llmgw_operator_dataplane_provider_pods",
        "Reporting pods of each gateway per provider and state: reporting, breaker_open, half_open, paused.",
        ["namespace", "gateway", "provider", "state"],
        lambda: provider_samples(store),
    )
