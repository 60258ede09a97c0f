"""The operator's own Prometheus metrics, and the small HTTP server that serves them with /readyz.

Names follow controller-runtime where one fits (``controller_runtime_reconcile_*``,
``workqueue_*``), so dashboards and alerts written for Go operators carry over;
``controller`` and ``name`` are the lower-case kind (``llmgateway``,
``providerpolicy``). What controller-runtime has no name for is
``llmgw_operator_*``. Every label value comes from a fixed set or from object
names the operator already holds, never from a pod's report.

Gauges that describe the current state (queue depth, gateways by condition,
the data plane's pod counts) are read at scrape time from callbacks, so the
code that owns the state never pushes a value that could go stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
from aiohttp import web
from prometheus_client import core
from prometheus_client.registry import Collector

# controller-runtime's reconcile time buckets are for Go; these span a few ms to a minute.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Scrape = Callable[[], Iterable[tuple[tuple[str, ...], float]]]
"""A gauge's current samples: (label values, value) pairs."""


class Metrics:
    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry or prometheus_client.CollectorRegistry()
        r = self.registry
        self.reconciles = prometheus_client.Counter(
            "controller_runtime_reconcile_total",
            "Reconcile passes by controller and result (success, error).",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = prometheus_client.Counter(
            "controller_runtime_reconcile_errors_total",
            "Reconcile passes that raised (and are retried with backoff).",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = prometheus_client.Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Duration of one reconcile pass.",
            ["controller"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_adds = prometheus_client.Counter(
            "workqueue_adds_total", "Keys queued (a trigger for a key not yet waiting).", ["name"], registry=r
        )
        self.queue_wait = prometheus_client.Histogram(
            "workqueue_queue_duration_seconds",
            "Time a key waits in the queue before its pass starts.",
            ["name"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_retries = prometheus_client.Counter(
            "workqueue_retries_total", "Passes retried after a failure.", ["name"], registry=r
        )
        self.api_writes = prometheus_client.Counter(
            "llmgw_operator_api_writes_total",
            "Write requests to the Kubernetes API by verb (apply, patch, delete, create) and kind.",
            ["verb", "kind"],
            registry=r,
        )
        self.api_reads = prometheus_client.Counter(
            "llmgw_operator_api_reads_total",
            "Read requests to the Kubernetes API by verb (get, list) and kind (watches not counted).",
            ["verb", "kind"],
            registry=r,
        )
        self.polls = prometheus_client.Counter(
            "llmgw_operator_dataplane_polls_total",
            "GET /status requests to gateway pods by result (ok, unreporting).",
            ["result"],
            registry=r,
        )
        self.poll_round = prometheus_client.Histogram(
            "llmgw_operator_dataplane_round_seconds",
            "Duration of one poll round over every gateway's ready pods.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        for result in ("ok", "unreporting"):
            self.polls.labels(result)
        self._gauges: list[tuple[str, str, list[str], Scrape]] = []
        r.register(_Gauges(self._gauges))

    def gauge(self, name: str, documentation: str, labels: list[str], scrape: Scrape) -> None:
        """A gauge whose samples ``scrape`` returns at each scrape."""
        self._gauges.append((name, documentation, labels, scrape))

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class _Gauges(Collector):
    def __init__(self, gauges: list[tuple[str, str, list[str], Scrape]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[core.Metric]:
        for name, documentation, labels, scrape in self._gauges:
            family = core.GaugeMetricFamily(name, documentation, labels=labels)
            for values, value in scrape():
                family.add_metric(list(values), value)
            yield family


class Timer:
    """Seconds since it was made, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start


class Server:
    """``/metrics``, ``/readyz`` (``ready()``; 503 until it holds) and ``/healthz`` on one port."""

    def __init__(self, metrics: Metrics, ready: Callable[[], bool], host: str, port: int) -> None:
        self.metrics = metrics
        self.ready = ready
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready", "reason": "first listing not processed"}, status=503)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def count_by(states: Mapping[Any, Mapping[str, str]]) -> list[tuple[tuple[str, str], float]]:
    """(condition type, status) -> how many objects have it, from each object's {type: status}."""
    counts: dict[tuple[str, str], int] = {}
    for conditions in states.values():
        for type_, status in conditions.items():
            counts[(type_, status)] = counts.get((type_, status), 0) + 1
    return [(key, float(n)) for key, n in sorted(counts.items())]
