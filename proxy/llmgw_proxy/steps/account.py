"""The outermost step: every request is counted, logged and traced, whatever happens below.

A ``ProxyError`` raised by any later step becomes its OpenAI-shaped JSON
answer here, with the request id and, when a target was tried, the provider
and the number of attempts. Anything else is a bug: it is logged with its
traceback and the caller gets a plain 500, never the traceback.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from llmgw_proxy import errors
from llmgw_proxy.apis import shapes
from llmgw_proxy.runtime import drain
from llmgw_proxy.steps.call import Call, Next
from llmgw_proxy.telemetry import logs, tracing

log = logging.getLogger("llmgw.request")

CLIENT_CLOSED = 499
"""The client went away: nginx's code, so dashboards can tell it apart from an error."""


async def account(call: Call, next_step: Next) -> web.StreamResponse:
    services = call.services
    services.metrics.in_flight += 1
    if services.tracing.enabled:
        call.span = services.tracing.server_span(call.endpoint, "unknown", call.request.headers)
    try:
        try:
            response = await next_step(call)
        except errors.ProxyError as exc:
            errors.settled(exc)  # answered: its traceback's frames would keep the request alive
            response = shapes.response(call.endpoint, exc)
            response.headers["x-request-id"] = call.request_id
            if call.provider is not None:
                response.headers["x-llmgw-provider"] = call.provider.name
            if call.attempts:
                response.headers["x-llmgw-attempts"] = str(call.attempts)
        except asyncio.CancelledError:
            if not services.live.drain.took_back():
                call.status = CLIENT_CLOSED
                raise
            # A shutdown past its grace ended it (runtime.drain), not the caller.
            failure = errors.shutting_down()
            call.status = failure.status
            if call.request.get(drain.ANSWERING, False):
                raise  # a relayed body under way: cut short, as an upstream failure cuts it
            response = shapes.response(call.endpoint, failure)
            response.headers["x-request-id"] = call.request_id
        except ConnectionResetError:
            call.status = CLIENT_CLOSED
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
    prompt = prompt if isinstance(prompt, int) else None
    completion = completion if isinstance(completion, int) else None
    call.services.metrics.observe(
        route,
        provider,
        call.snapshot.config.model_label(call.model) if call.route else "",
        call.status,
        duration,
        call.upstream_duration,
        prompt,
        completion,
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
        span.update_name(f"{tracing.operation(call.endpoint)} {call.model}")
        span.set_attribute("gen_ai.request.model", call.model)
        span.set_attribute("http.response.status_code", call.status)
        if prompt is not None:
            span.set_attribute("gen_ai.usage.input_tokens", prompt)
        if completion is not None:
            span.set_attribute("gen_ai.usage.output_tokens", completion)
        # A server span fails on a 5xx (a 4xx is the caller's), or a stream cut after its start.
        if call.broken is not None or call.status >= 500:
            code = call.broken.code if call.broken is not None else None
            span.set_attribute("error.type", code or str(call.status))
            from opentelemetry.trace import StatusCode  # tracing is on: the API is loaded

            span.set_status(StatusCode.ERROR)
        span.end()
