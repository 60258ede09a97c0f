"""Admin listener: liveness, readiness, Prometheus metrics and the status report.

Readiness means "config and keys loaded and not draining"; it never reflects
upstream health, so an unhealthy provider cannot pull the pod out of its Service.

A refused reload shows in the body either way: as the reason a sidecar is not
ready, or as ``lastReloadError`` next to a ready sidecar's older generation.
``reasonCode`` is a bounded, stable code (``reload.REASONS``, ``draining``,
``not_loaded``) for whoever reports it on; ``reason`` is the sentence for people.

``/status`` is the report the operator aggregates into the gateway's status
(``status.SidecarStatus``, see ``runtime.report``); it answers 200 whether or
not the sidecar is ready, since a sidecar that refuses its config is exactly
what the operator must hear about.
"""

from __future__ import annotations

import time

from aiohttp import web

from llmgw_proxy.runtime import report, state
from llmgw_proxy.telemetry import exposition, metrics

LIVE = web.AppKey("live", state.Live)
METRICS = web.AppKey("metrics", metrics.Metrics)


def build(live: state.Live, metrics_: metrics.Metrics) -> web.Application:
    app = web.Application()
    app[LIVE] = live
    app[METRICS] = metrics_
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
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
    return web.Response(body=body, headers={"Content-Type": exposition.CONTENT_TYPE})


async def _status(request: web.Request) -> web.Response:
    document = report.build(request.app[LIVE], time.time())
    return web.Response(
        body=document.model_dump_json(by_alias=True, exclude_none=True), content_type="application/json"
    )
