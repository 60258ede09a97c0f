"""What the sidecar serves: the loaded snapshot, each provider's policy state, and what happened to them.

``ProviderState`` holds what must outlive a config reload: the provider's rate
limiter, circuit breaker and retry budget. A reload keeps the very same object for a
provider whose settings did not change, and a changed provider keeps each of
the two whose own settings did not. ``Snapshot`` is immutable and swapped
whole, so a request sees one consistent config from start to end.

``Live`` also holds the sidecar's one cache store, which outlives reloads too;
a reload hands it the new bounds, which apply from the next answer stored.

The state counts its own events (reloads refused, breaker transitions); the
metrics read those counts at scrape time, so this layer knows nothing of
Prometheus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from llmgw_proxy import config, upstream
from llmgw_proxy.policies import breaker, cache_store, clock, global_limits, limits, pins, retry_budget
from llmgw_proxy.runtime import drain, keys
from llmgw_proxy.shared import limiter as shared_limiter
from llmgw_proxy.shared import store as shared_store

log = logging.getLogger("llmgw.breaker")

Transitions = dict[tuple[str, str, str], int]
"""Breaker transitions counted by (provider, from state, to state)."""


def transport_limits(b: config.UpstreamLimits) -> upstream.Limits:
    return upstream.Limits(
        max_response_bytes=b.max_response_bytes,
        max_header_bytes=b.max_header_bytes,
        max_headers=b.max_headers,
        max_event_bytes=b.max_event_bytes,
        pool_size=b.pool_size,
        pool_wait=b.pool_wait,
    )


def transport_egress(e: config.Egress) -> upstream.Egress:
    proxy = e.proxy
    return upstream.Egress(
        proxy=(proxy.https_proxy, proxy.http_proxy, proxy.no_proxy) if proxy is not None else None,
        proxy_credentials_file=proxy.credentials_file if proxy is not None else None,
        ca_file=e.ca_file,
        client_cert_file=e.client_cert_file,
        client_key_file=e.client_key_file,
        stagger=e.connect_stagger,
    )


class ProviderState:
    """One provider's settings and policy objects.

    ``budget`` is the provider's retry budget, which every provider has.

    ``limiter`` holds the provider's local limits (``scope: local``); it is None
    for a provider without them until an upstream 429 must pause it
    (``pausable_limiter``). ``global_limiter`` holds its global limits and
    budget, in the shared store; None without them. ``breaker`` is None for a
    provider without ``circuitBreaker``.
    """

    def __init__(
        self,
        name: str,
        provider: config.Provider,
        clock_: clock.Clock,
        transitions: Transitions,
        store: shared_store.Store | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.base_url = provider.base_url.rstrip("/")
        self.models = frozenset(provider.models) if provider.models is not None else None
        # Caller headers sent upstream: the defaults, then the policy's own.
        self.forward_headers = config.FORWARDED_HEADERS + provider.forward_headers
        if provider.kind is config.ProviderKind.ANTHROPIC:
            self.forward_headers += config.ANTHROPIC_HEADERS
        t = provider.timeouts
        self.timeouts = upstream.Timeouts(connect=t.connect, first_byte=t.first_byte, total=t.total)
        self.limits = transport_limits(provider.upstream_limits)
        self.egress = transport_egress(provider.egress)
        self._clock = clock_
        self._local = global_limits.local_limit(provider.rate_limit)
        self._local_models = {
            m: lim for m, r in provider.model_rate_limits.items() if (lim := global_limits.local_limit(r))
        }
        self.limiter: limits.ProviderLimiter | None = None
        if self._local is not None or self._local_models:
            self.limiter = self._new_limiter()
        self.global_limiter: shared_limiter.GlobalLimiter | None = None
        if store is not None and provider.shared_id is not None:
            global_ = shared_limiter.GlobalLimiter(name, provider, store, clock_)
            if not global_.plan("").empty or any(
                not global_.plan(m).empty for m in provider.model_rate_limits
            ):
                self.global_limiter = global_
        self.budget = retry_budget.RetryBudget(provider.retry, clock_)
        self.breaker: breaker.Breaker | None = None
        if provider.circuit_breaker is not None:
            listener = _on_transition(name, transitions)
            self.breaker = breaker.Breaker(provider.circuit_breaker, clock_, [listener])

    def allows(self, model: str) -> bool:
        """The provider's ``models`` allow-list (the policy's) lets ``model`` be sent to it."""
        return self.models is None or model in self.models

    def pausable_limiter(self) -> limits.ProviderLimiter:
        """The limiter, made now if the provider has no limits: an upstream 429 pauses it anyway."""
        if self.limiter is None:
            self.limiter = self._new_limiter()
        return self.limiter

    def take_over(self, previous: ProviderState) -> None:
        """Keep ``previous``'s limiter and breaker where their own settings did not change.

        An upstream 429's pause is not kept: the provider's settings changed, which is
        the operator acting on it (a new key, a raised cap), so it gets the next request.
        """
        old, new = previous.provider, self.provider
        if (old.rate_limit, old.model_rate_limits) == (new.rate_limit, new.model_rate_limits):
            self.limiter = previous.limiter
            if self.limiter is not None:
                self.limiter.resume()
        elif self.limiter is not None and previous.limiter is not None:
            # A re-split (replicas changed) or an edited limit: keep each bucket's fill.
            self.limiter.take_fill(previous.limiter)
        mine, theirs = self.global_limiter, previous.global_limiter
        if mine is not None and theirs is not None:
            if mine.store is theirs.store:
                mine.budget_used = theirs.budget_used
            mine.fallback.take_fill(theirs.fallback)
        if old.circuit_breaker == new.circuit_breaker:
            self.breaker = previous.breaker
        if _budget_of(old.retry) == _budget_of(new.retry):
            self.budget = previous.budget

    def _new_limiter(self) -> limits.ProviderLimiter:
        return limits.ProviderLimiter(self._local, self._local_models, self._clock)

    def __repr__(self) -> str:
        return f"ProviderState({self.name!r})"


def _budget_of(retry: config.Retry) -> tuple[float, float, float]:
    return retry.budget_ratio, retry.budget_min_per_second, retry.budget_window


def _on_transition(name: str, transitions: Transitions) -> breaker.Listener:
    def listener(old: breaker.State, new: breaker.State, reason: str) -> None:
        key = (name, old.value, new.value)
        transitions[key] = transitions.get(key, 0) + 1
        level = logging.WARNING if new is breaker.State.OPEN else logging.INFO
        log.log(
            level, "breaker", extra={"provider": name, "from": old.value, "to": new.value, "reason": reason}
        )

    return listener


@dataclasses.dataclass(frozen=True)
class Snapshot:
    generation: int
    config: config.ProxyConfig
    providers: dict[str, ProviderState]
    keys: dict[str, keys.Key | None]
    config_hash: str  # config.digest of ``config``, computed once per reload for status reports


class Live:
    """The one mutable cell: the snapshot being served. Reload swaps it; requests read it once.

    ``clock`` is the policies' clock (the event loop's ``time``), fixed for the
    life of the sidecar.
    """

    def __init__(self, clock_: clock.Clock) -> None:
        self.clock = clock_
        self.snapshot: Snapshot | None = None
        self.draining = False
        self.drain = drain.Drain()  # the requests in flight, for a shutdown to end past its grace
        self.last_error: str | None = None  # why the last reload was refused; None once one serves
        self.last_error_reason: str | None = None  # its bounded code (reload.REASONS)
        self.reload_failures: dict[str, int] = {}  # by reason code
        self.breaker_transitions: Transitions = {}
        self.cache = cache_store.MemoryStore(config.CacheStore(), clock_)
        # Outlives reloads like the cache: a conversation goes on across a config change.
        self.pins = pins.Pins(config.ProxyConfig.model_fields["max_pinned_responses"].default)
        self.shared: shared_store.Store | None = None  # the shared store, when the config names one

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and not self.draining

    def serve(self, cfg: config.ProxyConfig, loaded_keys: dict[str, keys.Key | None]) -> Snapshot:
        """Build the next snapshot from ``cfg``, carrying over provider state, and serve it."""
        previous = self.snapshot
        generation = previous.generation + 1 if previous else 1
        self._connect(cfg.shared_store)
        providers = self._carry_over(previous, cfg)
        self.snapshot = Snapshot(generation, cfg, providers, loaded_keys, config.digest(cfg))
        self.cache.bounds = cfg.cache
        self.pins.resize(cfg.max_pinned_responses)
        self.last_error = self.last_error_reason = None
        return self.snapshot

    def _connect(self, wanted: config.SharedStore | None) -> None:
        """Keep the shared store while its settings are unchanged; else replace (or drop) it."""
        current = self.shared
        if (current.cfg if current is not None else None) == wanted:
            return
        self.shared = shared_store.Store(wanted, self.clock) if wanted is not None else None
        if current is not None:
            # Its in-flight commands finish or time out first; its settles are dropped.
            current.closing = asyncio.get_running_loop().create_task(current.close())

    def refuse(self, reason: str, message: str) -> None:
        """A reload was refused for ``reason`` (a bounded code): the snapshot being served stays."""
        self.last_error, self.last_error_reason = message, reason
        self.reload_failures[reason] = self.reload_failures.get(reason, 0) + 1

    def _carry_over(self, previous: Snapshot | None, cfg: config.ProxyConfig) -> dict[str, ProviderState]:
        """States for ``cfg``'s providers, reusing the previous object when a provider is unchanged.

        A changed provider gets a new state, which still takes over each policy
        object whose own settings did not change (an edited timeout keeps an open
        breaker; an edited rate limit keeps each bucket's fill as a share of its burst).
        """
        old = previous.providers if previous else {}
        result = {}
        for name, provider in cfg.providers.items():
            kept = old.get(name)
            kept_store = (
                kept.global_limiter.store if kept is not None and kept.global_limiter else self.shared
            )
            if kept is not None and kept.provider == provider and kept_store is self.shared:
                result[name] = kept
                continue
            fresh = ProviderState(name, provider, self.clock, self.breaker_transitions, self.shared)
            if kept is not None:
                fresh.take_over(kept)
            result[name] = fresh
        return result
