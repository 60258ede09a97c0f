"""Prometheus metrics, in a registry owned by one server (tests run several at once).

Labels never carry keys or prompt text: route, provider and model come from
the config, status is the HTTP status the caller got.
"""

from __future__ import annotations

import prometheus_client as prom

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = prom.Counter(
            "llmgw_requests",
            "Requests answered, by outcome.",
            ["route", "provider", "model", "status"],
            registry=r,
        )
        self.request_duration = prom.Histogram(
            "llmgw_request_duration_seconds",
            "Time from request received to response finished (streams included).",
            ["route", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = prom.Histogram(
            "llmgw_upstream_duration_seconds",
            "Time from upstream request sent to its response headers.",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = prom.Counter(
            "llmgw_tokens",
            "Tokens reported by providers.",
            ["kind", "route", "provider", "model"],
            registry=r,
        )
        self.in_flight = prom.Gauge("llmgw_in_flight_requests", "Requests being handled.", registry=r)
        self.config_generation = prom.Gauge(
            "llmgw_config_generation", "Generation of the config being served (1 = first load).", registry=r
        )
        self.reload_failures = prom.Counter(
            "llmgw_config_reload_failures", "Config or key file reloads refused.", registry=r
        )
        # labels() takes a lock and hashes the tuple each time; the hot path reuses children.
        self._children: dict[tuple[str, ...], tuple[prom.Histogram, prom.Histogram]] = {}
        self._counters: dict[tuple[str, ...], prom.Counter] = {}

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
        key = (route, provider, model)
        children = self._children.get(key)
        if children is None:
            children = (
                self.request_duration.labels(route, provider, model),
                self.upstream_duration.labels(provider, model),
            )
            self._children[key] = children
        self._counter(self.requests, (route, provider, model, str(status))).inc()
        children[0].observe(duration)
        if upstream_duration is not None:
            children[1].observe(upstream_duration)
        if prompt_tokens:
            self._counter(self.tokens, ("prompt", route, provider, model)).inc(prompt_tokens)
        if completion_tokens:
            self._counter(self.tokens, ("completion", route, provider, model)).inc(completion_tokens)

    def _counter(self, family: prom.Counter, labels: tuple[str, ...]) -> prom.Counter:
        key = (family._documentation, *labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = family.labels(*labels)
        return child

    def exposition(self) -> bytes:
        return prom.generate_latest(self.registry)
