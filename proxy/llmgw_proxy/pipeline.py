"""The request path, as a list of steps.

Every API request becomes a ``Call`` that flows through ``STEPS`` in order.
A step is ``async def step(call, next_step) -> web.StreamResponse`` (or a
plain function returning ``next_step(call)`` when it never waits): it may
read or change the call, answer by itself (return a response or raise
``errors.ProxyError``), or hand over to ``next_step``::

    account          metrics, the log line, the server span; turns ProxyError into JSON
    parse_body       content type, size limit, JSON, ``model``, ``stream``
    resolve_route    ``model`` -> route (404 when none)
    cache            answer repeat deterministic requests from memory (caching.py); a hit
                     spends no rate limit quota
    attempt_targets  route.targets in order (attempts.py); for each target:
      breaker        skip a target whose breaker is open (503 when all are)
      rate limit     reserve a request and tokens, wait up to maxWait or skip the target
                     (429 + Retry-After when every target was refused)
      retry          retry the target with backoff, honouring Retry-After, then fall back
    forward          one upstream exchange; relays the body or the SSE stream

Per-provider policy state (limiter, breaker) lives in
``state.ProviderState.extras`` (see guards.py); the cache store is one per server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web

from llmgw_proxy import attempts, caching, config, errors, forward, logs, metrics, state, tracing, upstream
from llmgw_proxy.policies import cache_store, limits

log = logging.getLogger("llmgw.request")


@dataclasses.dataclass(slots=True)
class Services:
    """What steps need besides the call: long-lived, one per server."""

    live: state.Live
    transport: upstream.Transport
    metrics: metrics.Metrics
    tracing: tracing.Tracing
    cache: cache_store.MemoryStore | None = None  # created on the first cacheable request


@dataclasses.dataclass(slots=True)
class Call:
    request: web.Request
    endpoint: str  # "chat/completions", "completions" or "embeddings"
    services: Services
    snapshot: state.Snapshot
    request_id: str
    started: float
    raw: bytes = b""
    body: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = ""
    stream: bool = False
    finite: bool = False  # the body holds no NaN or infinity (known when orjson decoded it)
    route: config.Route | None = None
    target: config.Target | None = None
    provider: state.ProviderState | None = None
    attempts: int = 0
    status: int = 0
    upstream_duration: float | None = None
    usage: dict[str, Any] | None = None
    span: Any = None
    reservation: limits.Reservation | None = None
    strip_usage: bool = False  # the sidecar asked the upstream for stream usage; the caller did not
    stream_text: str = ""  # a stream's completion text, kept only to estimate usage it did not report
    cache_key: str | None = None
    cache_ttl: float = 0.0
    cache_status: str = ""


Next = Callable[[Call], Awaitable[web.StreamResponse]]


class Step(Protocol):
    def __call__(self, call: Call, next_step: Next) -> Awaitable[web.StreamResponse]: ...


async def account(call: Call, next_step: Next) -> web.StreamResponse:
    services = call.services
    services.metrics.in_flight += 1
    if services.tracing.enabled:
        call.span = services.tracing.server_span(call.endpoint, "unknown", call.request.headers)
    try:
        try:
            response = await next_step(call)
        except errors.ProxyError as exc:
            response = exc.response()
            response.headers["x-request-id"] = call.request_id
            if call.provider is not None:
                response.headers["x-llmgw-provider"] = call.provider.name
            if call.attempts:
                response.headers["x-llmgw-attempts"] = str(call.attempts)
        except (asyncio.CancelledError, ConnectionResetError):
            call.status = 499  # the client went away; nginx's code, so dashboards can tell it apart
            raise
        except Exception:
            log.exception("unexpected failure", extra={"request_id": call.request_id})
            response = errors.internal().response()
        if not call.status or (response.status >= 400 and call.status < 400):
            call.status = response.status
        return response
    finally:
        services.metrics.in_flight -= 1
        _record(call)


def _record(call: Call) -> None:
    duration = asyncio.get_running_loop().time() - call.started
    route = call.route.model if call.route else ""
    provider = call.provider.name if call.provider else ""
    usage = call.usage or {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    call.services.metrics.observe(
        route,
        provider,
        call.model if call.route else "",
        call.status,
        duration,
        call.upstream_duration,
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )
    logs.request(
        {
            "request_id": call.request_id,
            "endpoint": call.endpoint,
            "route": route,
            "provider": provider,
            "model": call.model,
            "stream": call.stream,
            "status": call.status,
            "attempts": call.attempts,
            "duration_ms": round(duration * 1000, 3),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        }
    )
    if call.span is not None:
        span = call.span
        span.update_name(f"{tracing.OPERATION.get(call.endpoint, call.endpoint)} {call.model}")
        span.set_attribute("gen_ai.request.model", call.model)
        span.set_attribute("http.response.status_code", call.status)
        if isinstance(prompt, int):
            span.set_attribute("gen_ai.usage.input_tokens", prompt)
        if isinstance(completion, int):
            span.set_attribute("gen_ai.usage.output_tokens", completion)
        span.end()


async def parse_body(call: Call, next_step: Next) -> web.StreamResponse:
    request = call.request
    if request.content_type != "application/json":
        raise errors.unsupported_media_type(request.headers.get("Content-Type", ""))
    limit = call.snapshot.config.max_body_bytes
    call.raw = await _read_limited(request, limit)
    # orjson is about five times faster on a typical body. It refuses a few documents the
    # json module takes (NaN, lone surrogate escapes, integers past 64 bits): those, and
    # real errors, get the json module's verdict, so what is accepted and its message stay.
    try:
        body = orjson.loads(call.raw)
        call.finite = True  # what orjson decodes holds no NaN or infinity
    except orjson.JSONDecodeError:
        body = _json_loads(call.raw)
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("The request must name a model ('model' is missing)", "missing_model")
    call.body, call.model, call.stream = body, model, body.get("stream") is True
    return await next_step(call)


def _json_loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.invalid_json(str(exc)) from None


async def _read_limited(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None:
        if declared > limit:
            raise errors.body_too_large(limit)  # refused from the header, before a byte is read
        return await request.content.readexactly(declared) if declared else b""
    parts, size = [], 0
    async for part in request.content.iter_any():
        size += len(part)
        if size > limit:
            raise errors.body_too_large(limit)
        parts.append(part)
    return b"".join(parts)


def resolve_route(call: Call, next_step: Next) -> Awaitable[web.StreamResponse]:
    # A plain function that hands on the next step's awaitable: one coroutine frame
    # fewer for every suspension of the request below it.
    route = call.snapshot.config.route_for(call.model)
    if route is None:
        raise errors.unknown_model(call.model)
    call.route = route
    return next_step(call)


STEPS: tuple[Step, ...] = (
    account,
    parse_body,
    resolve_route,
    caching.cache,
    attempts.attempt_targets,
    forward.forward,
)
attempt_targets = attempts.attempt_targets


def compose(steps: Sequence[Step]) -> Next:
    async def end(call: Call) -> web.StreamResponse:
        raise AssertionError("the last step must answer")  # pragma: no cover

    chain: Next = end
    for step in reversed(steps):
        # partial, not a wrapper coroutine: one frame per step on the hot path.
        chain = functools.partial(step, next_step=chain)
    return chain


def handler(
    services: Services, endpoint: str, steps: Sequence[Step] = STEPS
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    chain = compose(steps)

    async def handle(request: web.Request) -> web.StreamResponse:
        snapshot = services.live.snapshot
        if snapshot is None:
            return errors.not_ready().response()
        request_id = request.headers.get("x-request-id", "")[:128] or os.urandom(12).hex()
        call = Call(request, endpoint, services, snapshot, request_id, asyncio.get_running_loop().time())
        return await chain(call)

    return handle
