"""Prometheus metrics, in a registry owned by one server (tests run several at once).

The per-request series live in plain dicts read by a custom collector at
scrape time: prometheus_client's own metric objects take a lock and check
observability on every update, several microseconds a request, and the
sidecar's request path runs on one event loop thread anyway.

Labels never carry keys or prompt text: route, provider and model come from
the config, status is the HTTP status the caller got.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import prometheus_client as prom
from prometheus_client import core

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
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.request_duration: dict[tuple[str, str, str], _Histogram] = {}
        self.upstream_duration: dict[tuple[str, str], _Histogram] = {}
        self.tokens: dict[tuple[str, str, str, str], int] = {}
        self.in_flight = 0
        self.config_generation = prom.Gauge(
            "llmgw_config_generation",
            "Generation of the config being served (1 = first load).",
            registry=self.registry,
        )
        self.reload_failures = prom.Counter(
            "llmgw_config_reload_failures", "Config or key file reloads refused.", registry=self.registry
        )
        self.registry.register(_Collector(self))

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

    def exposition(self) -> bytes:
        return prom.generate_latest(self.registry)


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> list[core.Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[core.Metric]:
        m = self._m
        requests = core.CounterMetricFamily(
            "llmgw_requests",
            "Requests answered, by outcome.",
            labels=["route", "provider", "model", "status"],
        )
        for key, count in list(m.requests.items()):
            requests.add_metric(key, count)
        yield requests
        duration = core.HistogramMetricFamily(
            "llmgw_request_duration_seconds",
            "Time from request received to response finished (streams included).",
            labels=["route", "provider", "model"],
        )
        for key3, hist in list(m.request_duration.items()):
            duration.add_metric(key3, hist.buckets(), hist.sum)
        yield duration
        upstream = core.HistogramMetricFamily(
            "llmgw_upstream_duration_seconds",
            "Time from upstream request sent to its response headers.",
            labels=["provider", "model"],
        )
        for key2, hist in list(m.upstream_duration.items()):
            upstream.add_metric(key2, hist.buckets(), hist.sum)
        yield upstream
        tokens = core.CounterMetricFamily(
            "llmgw_tokens", "Tokens reported by providers.", labels=["kind", "route", "provider", "model"]
        )
        for key, count in list(m.tokens.items()):
            tokens.add_metric(key, count)
        yield tokens
        yield core.GaugeMetricFamily("llmgw_in_flight_requests", "Requests being handled.", value=m.in_flight)
