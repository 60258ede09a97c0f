"""Admin listener: liveness, readiness and Prometheus metrics.

Readiness means "config and keys loaded and not draining"; it never reflects
upstream health, so an unhealthy provider cannot pull the pod out of its Service.

A refused reload shows in the body either way: as the reason a sidecar is not
ready, or as ``lastReloadError`` next to a ready sidecar's older generation.
``reasonCode`` is a bounded, stable code (``reload.REASONS``, ``draining``,
``not_loaded``) for whoever reports it on; ``reason`` is the sentence for people.
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
    error = {"reason": live.last_error, "reasonCode": live.last_error_reason}
    if live.ready:
        body: dict[str, object] = {"status": "ready", "generation": generation}
        if live.last_error is not None:
            body["lastReloadError"] = error
        return web.json_response(body)
    if live.draining:
        error = {"reason": "draining", "reasonCode": "draining"}
    elif live.last_error is None:
        error = {"reason": "config not loaded", "reasonCode": "not_loaded"}
    return web.json_response({"status": "not ready", **error, "generation": generation}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})
