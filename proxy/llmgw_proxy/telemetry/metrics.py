"""Prometheus metrics, owned by one server (tests run several at once), written by ``exposition``.

The per-request series live in plain dicts read by a custom collector at
scrape time: prometheus_client's own metric objects take a lock and check
observability on every update, several microseconds a request, and the
sidecar's request path runs on one event loop thread anyway.

What other parts keep counts of is read from them at scrape time, never
copied on the request path: the snapshot being served and its providers'
limiters and breakers (``state.Live``, which also counts refused reloads and
breaker transitions), and its cache store's ``Stats``. ``Metrics`` is handed
the ``Live`` when it is made.

Labels never carry keys or prompt text: route, provider and model come from
the config, status is the HTTP status the caller got. A model name the config
does not write (a ``*`` route passes any) is labelled ``other``
(``config.ProxyConfig.model_label``), so callers cannot grow the series.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from llmgw_proxy.runtime import reload, state
from llmgw_proxy.shared import store as shared_store
from llmgw_proxy.telemetry import exposition
from llmgw_proxy.telemetry.exposition import Family

if TYPE_CHECKING:
    import prometheus_client

_BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


_BOUNDS = (*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf")  # Prometheus spells 1 as 1.0


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        result, total = [], 0
        for bound, count in zip(_BOUNDS, self.counts, strict=True):
            total += count
            result.append((bound, float(total)))
        return result


class Metrics:
    def __init__(self, live: state.Live) -> None:
        self.live = live
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.request_duration: dict[tuple[str, str, str], _Histogram] = {}
        self.upstream_duration: dict[tuple[str, str], _Histogram] = {}
        self.time_to_first_token: dict[tuple[str, str], _Histogram] = {}
        self.time_per_chunk: dict[tuple[str, str], _Histogram] = {}
        self.tokens: dict[tuple[str, str, str, str], int] = {}
        self.in_flight = 0
        # Policy counters, by label tuple (names in _COUNTERS).
        self.ratelimit_rejections: dict[tuple[str, ...], int] = {}
        self.retries: dict[tuple[str, ...], int] = {}
        self.fallbacks: dict[tuple[str, ...], int] = {}
        # Bypasses and refreshes; hits and misses are the store's own counts, added at scrape time.
        self.cache_lookups: dict[tuple[str, ...], int] = {}
        self.provider_paused: dict[tuple[str, ...], int] = {}
        self.retries_denied: dict[tuple[str, ...], int] = {}
        self.upstream_bounds: dict[tuple[str, ...], int] = {}
        self.pool_exhausted: dict[tuple[str, ...], int] = {}

    def observe(
        self,
        route: str,
        provider: str,
        model: str,
        status: int,
        duration: float,
        upstream_duration: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> None:
        key = (route, provider, model, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.request_duration.get(key[:3])
        if hist is None:
            hist = self.request_duration[key[:3]] = _Histogram()
        hist.observe(duration)
        if upstream_duration is not None:
            hist = self.upstream_duration.get((provider, model))
            if hist is None:
                hist = self.upstream_duration[provider, model] = _Histogram()
            hist.observe(upstream_duration)
        if prompt_tokens:
            tkey = ("prompt", route, provider, model)
            self.tokens[tkey] = self.tokens.get(tkey, 0) + prompt_tokens
        if completion_tokens:
            tkey = ("completion", route, provider, model)
            self.tokens[tkey] = self.tokens.get(tkey, 0) + completion_tokens

    def observe_stream(self, route: str, provider: str, first: float, per_chunk: float | None) -> None:
        """A stream's time to its first event (from the request's arrival) and mean gap between chunks."""
        key = (route, provider)
        hist = self.time_to_first_token.get(key)
        if hist is None:
            hist = self.time_to_first_token[key] = _Histogram()
        hist.observe(first)
        if per_chunk is not None:
            hist = self.time_per_chunk.get(key)
            if hist is None:
                hist = self.time_per_chunk[key] = _Histogram()
            hist.observe(per_chunk)

    @staticmethod
    def count(table: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
        table[key] = table.get(key, 0) + 1

    def families(self) -> Iterator[Family]:
        return _collect(self)

    def exposition(self) -> bytes:
        return exposition.render(self.families())

    @functools.cached_property
    def registry(self) -> prometheus_client.CollectorRegistry:
        """The same families in a prometheus_client registry (collected afresh at each read), for
        tests and tools; the sidecar never builds it."""
        return exposition.registry(self.families)


# Counters kept as plain dicts on Metrics (the hot path only adds to them):
# attribute, exported name, help, labels.
_COUNTERS = (
    (
        "requests",
        "llmgw_requests",
        "Requests answered, by outcome.",
        ("route", "provider", "model", "status"),
    ),
    ("tokens", "llmgw_tokens", "Tokens reported by providers.", ("kind", "route", "provider", "model")),
    (
        "ratelimit_rejections",
        "llmgw_ratelimit_rejections",
        "Requests a local rate limit refused for a target.",
        ("provider", "model", "kind"),
    ),
    ("retries", "llmgw_retries", "Upstream requests sent again to the same target.", ("provider",)),
    ("fallbacks", "llmgw_fallbacks", "Moves from one route target to the next.", ("route", "from", "to")),
    ("provider_paused", "llmgw_provider_paused", "Upstream 429s that paused a provider.", ("provider",)),
    (
        "retries_denied",
        "llmgw_retries_denied",
        "Retries not sent: the provider's retry budget was spent (budget) or the request's "
        "maxAttempts was reached (max_attempts).",
        ("provider", "reason"),
    ),
    (
        "upstream_bounds",
        "llmgw_upstream_bound_violations",
        "Upstream answers cut off for breaking an upstreamLimits bound.",
        ("provider", "bound"),
    ),
    (
        "pool_exhausted",
        "llmgw_upstream_pool_exhausted",
        "Requests refused because no pooled connection to the provider came free in time.",
        ("provider",),
    ),
)


def _collect(m: Metrics) -> Iterator[Family]:
    """Reads the plain-dict counters and histograms, and the policies' state, at scrape time."""
    for attr, name, doc, labels in _COUNTERS:
        family = exposition.counter(name, doc, labels=list(labels))
        for key, count in list(getattr(m, attr).items()):
            family.add(key, count)
        yield family
    duration = exposition.histogram(
        "llmgw_request_duration_seconds",
        "Time from request received to response finished (streams included).",
        labels=["route", "provider", "model"],
    )
    for key3, hist in list(m.request_duration.items()):
        duration.add_histogram(key3, hist.buckets(), hist.sum)
    yield duration
    upstream = exposition.histogram(
        "llmgw_upstream_duration_seconds",
        "Time from upstream request sent to its response headers.",
        labels=["provider", "model"],
    )
    for key2, hist in list(m.upstream_duration.items()):
        upstream.add_histogram(key2, hist.buckets(), hist.sum)
    yield upstream
    for attr, name, doc in (
        (
            "time_to_first_token",
            "llmgw_time_to_first_token_seconds",
            "Time from request received to a stream's first event sent (retries and fallbacks included).",
        ),
        (
            "time_per_chunk",
            "llmgw_time_per_output_chunk_seconds",
            "Mean time between the chunks of one complete stream after its first.",
        ),
    ):
        stream_family = exposition.histogram(name, doc, labels=["route", "provider"])
        for key2, hist in list(getattr(m, attr).items()):
            stream_family.add_histogram(key2, hist.buckets(), hist.sum)
        yield stream_family
    yield exposition.gauge("llmgw_in_flight_requests", "Requests being handled.", value=m.in_flight)
    remaining = exposition.gauge(
        "llmgw_ratelimit_remaining",
        "Capacity left in the tightest local bucket (model empty: the provider's own limit).",
        labels=["provider", "model", "kind"],
    )
    breakers = exposition.gauge(
        "llmgw_breaker_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        labels=["provider"],
    )
    snapshot = m.live.snapshot
    for name, provider in snapshot.providers.items() if snapshot else ():
        limiter = provider.limiter
        if limiter is not None:
            models = [""] if provider.provider.rate_limit is not None else []
            for model in [*models, *provider.provider.model_rate_limits]:
                h = limiter.headers(model)
                if h.remaining_requests is not None:
                    remaining.add([name, model, "requests"], h.remaining_requests)
                if h.remaining_tokens is not None:
                    remaining.add([name, model, "tokens"], h.remaining_tokens)
        if provider.breaker is not None:
            breakers.add([name], _BREAKER_STATE[provider.breaker.state.value])
    yield remaining
    yield breakers
    transitions = exposition.counter(
        "llmgw_breaker_transitions", "Circuit breaker state changes.", labels=["provider", "from", "to"]
    )
    for key3, count in list(m.live.breaker_transitions.items()):
        transitions.add(key3, count)
    yield transitions
    yield exposition.gauge(
        "llmgw_config_generation",
        "Generation of the config being served (1 = first load).",
        value=snapshot.generation if snapshot else 0,
    )
    failures = exposition.counter(
        "llmgw_config_reload_failures",
        "Config or key file reloads refused, by reason.",
        labels=["reason"],
    )
    for reason in reload.REASONS:  # every code, 0 included: a bounded set that rate() can read
        failures.add([reason], m.live.reload_failures.get(reason, 0))
    yield failures
    stats = m.live.cache.stats
    lookups = dict(m.cache_lookups)
    lookups[("hit",)] = lookups.get(("hit",), 0) + stats.hits
    lookups[("miss",)] = lookups.get(("miss",), 0) + stats.misses
    family = exposition.counter(
        "llmgw_cache_lookups", "Cache decisions for cacheable routes.", labels=["result"]
    )
    for key, count in sorted(lookups.items()):
        family.add(key, count)
    yield family
    family = exposition.counter(
        "llmgw_cache_evictions", "Cache entries dropped by the store.", labels=["reason"]
    )
    family.add(["expired"], stats.expirations)
    family.add(["evicted"], stats.evictions)
    yield family
    yield exposition.gauge("llmgw_cache_bytes", "Bytes held by the cache store.", value=stats.bytes)
    yield exposition.gauge("llmgw_cache_entries", "Entries held by the cache store.", value=stats.entries)
    yield from _shared_store(m.live.shared)


def _shared_store(shared: shared_store.Store | None) -> Iterator[Family]:
    """The shared store's families; without a ``sharedStore`` they are there, with no samples."""
    up = exposition.gauge(
        "llmgw_shared_store_up",
        "1 while the shared store (Redis) answers; 0 while global limits use the per-pod fallback.",
    )
    failures = exposition.counter(
        "llmgw_shared_store_failures",
        "Shared store commands that failed, by reason (timeout, connection, busy, error).",
        labels=["reason"],
    )
    fallbacks = exposition.counter(
        "llmgw_shared_store_fallbacks",
        "Admissions decided without the shared store: global limits by the per-pod split (what=limit), "
        "budgets not enforced (what=budget), cache answered from memory (what=cache).",
        labels=["provider", "what"],
    )
    dropped = exposition.counter(
        "llmgw_shared_store_dropped",
        "Settles and cache writes dropped: the store was down or maxInFlight were pending.",
        labels=[],
    )
    if shared is not None:
        up.add([], 1 if shared.up else 0)
        for reason in shared_store.REASONS:
            failures.add([reason], shared.failures.get(reason, 0))
        for key, count in list(shared.fallbacks.items()):
            fallbacks.add(key, count)
        dropped.add([], shared.settles_dropped)
    yield from (up, failures, fallbacks, dropped)
