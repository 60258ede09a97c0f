"""The API application (127.0.0.1): the OpenAI endpoints, each served by ``pipeline``.

State lives in typed ``web.AppKey``s; the pooled upstream client (``http1.Pool``)
is opened and closed in ``cleanup_ctx`` unless a transport is injected (tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from llmgw_proxy import errors, pipeline, upstream
from llmgw_proxy.runtime import state
from llmgw_proxy.steps import call
from llmgw_proxy.telemetry import metrics, tracing
from llmgw_proxy.upstream import http1

SERVICES = web.AppKey("services", call.Services)
ENDPOINTS = ("chat/completions", "completions", "embeddings")
_API_PATHS = frozenset({f"/v1/{e}" for e in ENDPOINTS} | {"/v1/models"})


class _NoTransport:
    async def send(self, request: upstream.Request) -> upstream.Response:
        raise upstream.ConnectFailed("the upstream session is not open")


def build_api(
    live: state.Live,
    metrics_: metrics.Metrics,
    tracing_: tracing.Tracing,
    *,
    transport: upstream.Transport | None = None,
    steps: Sequence[call.Step] = pipeline.STEPS,
) -> web.Application:
    # The body limit is enforced by parse_body from the live config; aiohttp's own limit stays out of it.
    app = web.Application(client_max_size=2**62)
    services = call.Services(live, transport or _NoTransport(), metrics_, tracing_)
    app[SERVICES] = services
    if transport is None:
        app.cleanup_ctx.append(_upstream_session(services))
    for endpoint in ENDPOINTS:
        app.router.add_post(f"/v1/{endpoint}", pipeline.handler(services, endpoint, steps))
    app.router.add_get("/v1/models", _models)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


def _upstream_session(
    services: call.Services,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = http1.Pool()
        services.transport = pool
        yield
        await pool.close()

    return ctx


async def _models(request: web.Request) -> web.Response:
    snapshot = request.app[SERVICES].live.snapshot
    if snapshot is None:
        return errors.not_ready().response()
    data = [
        {"id": r.model, "object": "model", "created": 0, "owned_by": r.targets[0].provider}
        for r in snapshot.config.routes
        if r.model != "*"
    ]
    return web.json_response({"object": "list", "data": data})


async def _not_found(request: web.Request) -> web.Response:
    if request.path in _API_PATHS:
        return errors.ProxyError(
            405, f"Method {request.method} is not allowed on {request.path}", code="method_not_allowed"
        ).response()
    return errors.ProxyError(404, f"No such path: {request.path}", code="unknown_url").response()
