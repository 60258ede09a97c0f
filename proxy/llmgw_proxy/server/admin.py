"""Admin listener: liveness, readiness and Prometheus metrics.

Readiness means "config and keys loaded and not draining"; it never reflects
upstream health, so an unhealthy provider cannot pull the pod out of its Service.
"""

from __future__ import annotations

import prometheus_client
from aiohttp import web

from llmgw_proxy.runtime import state
from llmgw_proxy.telemetry import metrics

LIVE = web.AppKey("live", state.Live)
METRICS = web.AppKey("metrics", metrics.Metrics)


def build(live: state.Live, metrics_: metrics.Metrics) -> web.Application:
    app = web.Application()
    app[LIVE] = live
    app[METRICS] = metrics_
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    snapshot = live.snapshot
    generation = snapshot.generation if snapshot else 0
    if live.ready:
        return web.json_response({"status": "ready", "generation": generation})
    reason = "draining" if live.draining else (live.last_error or "config not loaded")
    return web.json_response({"status": "not ready", "reason": reason, "generation": generation}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})
