"""The API application (127.0.0.1): the OpenAI and Anthropic endpoints, each served by ``pipeline``.

Modelled endpoints (chat/completions, completions, embeddings, responses, and
Anthropic's messages) take the whole request path; any other ``/v1/`` path is
a relayed endpoint (``pipeline.RELAY_STEPS``), served only when a route
declares it. ``GET /v1/models`` answers in the caller's family: Anthropic's
list when the request carries ``anthropic-version`` (every Anthropic SDK sends
it), OpenAI's otherwise, each listing the routes of that family.

State lives in typed ``web.AppKey``s; the pooled upstream client (``http1.Pool``)
is opened and closed in ``cleanup_ctx`` unless a transport is injected (tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from llmgw_proxy import config, errors, pipeline, upstream
from llmgw_proxy.apis import shapes
from llmgw_proxy.runtime import drain, state
from llmgw_proxy.steps import call
from llmgw_proxy.telemetry import metrics, tracing
from llmgw_proxy.upstream import http1

SERVICES = web.AppKey("services", call.Services)
ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses", "messages")
_ANTHROPIC_EPOCH = "1970-01-01T00:00:00Z"


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
    relay_steps: Sequence[call.Step] = pipeline.RELAY_STEPS,
) -> web.Application:
    # The body limit is enforced by parse_body from the live config; aiohttp's own limit stays out of it.
    app = web.Application(client_max_size=2**62)
    services = call.Services(live, transport or _NoTransport(), metrics_, tracing_)
    app[SERVICES] = services
    app.on_response_prepare.append(drain.note_answering)
    if transport is None:
        app.cleanup_ctx.append(_upstream_session(services))
    for endpoint in ENDPOINTS:
        app.router.add_post(f"/v1/{endpoint}", pipeline.handler(services, endpoint, steps))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_route("*", "/v1/{tail:.+}", pipeline.handler(services, None, relay_steps))
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


def _listed(snapshot: state.Snapshot, family: config.ApiFamily) -> list[config.Route]:
    cfg = snapshot.config
    return [
        r
        for r in cfg.routes
        if r.model != "*"
        and cfg.family(r) is family
        and any(r.serves(e, family) for e in config.MODELLED_ENDPOINTS[family])
    ]


def _family(request: web.Request) -> config.ApiFamily:
    return config.ApiFamily.ANTHROPIC if "anthropic-version" in request.headers else config.ApiFamily.OPENAI


def _shape(family: config.ApiFamily) -> str:
    """The endpoint whose error shape a models call of ``family`` answers in."""
    return "messages" if family is config.ApiFamily.ANTHROPIC else "models"


def _entry(route: config.Route, family: config.ApiFamily) -> dict[str, Any]:
    if family is config.ApiFamily.ANTHROPIC:
        name = route.model
        return {"type": "model", "id": name, "display_name": name, "created_at": _ANTHROPIC_EPOCH}
    return {"id": route.model, "object": "model", "created": 0, "owned_by": route.targets[0].provider}


async def _models(request: web.Request) -> web.Response:
    family = _family(request)
    snapshot = request.app[SERVICES].live.snapshot
    if snapshot is None:
        return shapes.response(_shape(family), errors.not_ready())
    data = [_entry(r, family) for r in _listed(snapshot, family)]
    if family is config.ApiFamily.ANTHROPIC:
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response({"data": data, "has_more": False, "first_id": first, "last_id": last})
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    family = _family(request)
    name = request.match_info["model"]
    shape = _shape(family)
    snapshot = request.app[SERVICES].live.snapshot
    if snapshot is None:
        return shapes.response(shape, errors.not_ready())
    for route in _listed(snapshot, family):
        if route.model == name:
            return web.json_response(_entry(route, family))
    return shapes.response(shape, errors.unknown_model(name))


async def _not_found(request: web.Request) -> web.Response:
    return errors.ProxyError(404, f"No such path: {request.path}", code="unknown_url").response()
