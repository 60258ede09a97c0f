"""Relayed endpoints: what the sidecar passes on without modelling it.

OpenAI's other endpoints (``audio/*``, ``images/*``, ``moderations``,
``files``, ``batches``, whatever else a route declares in ``endpoints``) and
the stored Responses objects (``GET``/``DELETE /v1/responses/{id}``, its
``cancel`` and ``input_items``) go through here:

- ``resolve_relay`` picks the route and the one target: for a stored response,
  the provider that created it (``Live.pins``) else the first target of the
  first route serving ``responses``; for any other path, the first target of
  the first route (in config order) that declares it. A path no route declares
  is 404 ``endpoint_not_served``: nothing is relayed by accident;
- ``relay`` holds the target's breaker ticket and one request of its rate
  limit (no tokens: nothing here is token-accounted, nor cached), sends the
  request with the provider's key, and relays the answer chunk by chunk.
  The caller's body is streamed upstream as it arrives, never held whole, and
  refused with 413 past ``maxBodyBytes``. One try, no retry or fallback: a
  streamed body cannot be sent twice, and files and batches live at one provider.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from aiohttp import web

from llmgw_proxy import config, errors, upstream
from llmgw_proxy.policies import global_limits, limits
from llmgw_proxy.runtime import state
from llmgw_proxy.steps import admission, forward
from llmgw_proxy.steps.call import Call, Next

RESPONSES = "responses"
CLIENT_CLOSED = 499
PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
"""What a relayed path may be (after ``/v1/``, decoded): plain segments, no dot segment, nothing a
provider's server would resolve to a path outside ``/v1/`` or read as a query (``%2e%2e``, ``%3f``)."""


def stored_response(endpoint: str) -> str:
    """The id a ``responses/{id}[/...]`` path names, or ""."""
    parts = endpoint.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == RESPONSES else ""


async def resolve_relay(call: Call, next_step: Next) -> web.StreamResponse:
    if PATH.fullmatch(call.endpoint) is None:
        raise errors.bad_request(
            "The path after /v1/ must be plain segments of letters, digits, '_.-'", "invalid_path"
        )
    cfg = call.snapshot.config
    stored = stored_response(call.endpoint)
    served = RESPONSES if stored else call.endpoint
    if any(call.endpoint in modelled for modelled in config.MODELLED_ENDPOINTS.values()):
        message = f"Method {call.request.method} is not allowed on /v1/{call.endpoint}"
        raise errors.ProxyError(405, message, code="method_not_allowed")
    routes = [r for r in cfg.routes if r.serves(served, cfg.family(r))]
    if not routes or config.family_of_endpoint(served) is not config.ApiFamily.OPENAI:
        raise errors.endpoint_not_served(call.endpoint)
    route, target = routes[0], routes[0].targets[0]
    owner = call.services.live.pins.owner(stored) if stored else None
    if owner is not None:
        found = [(r, t) for r in routes for t in r.targets if t.provider == owner]
        if found:
            route, target = found[0]
    call.route, call.targets, call.model = route, (target,), target.model or ""
    response = await next_step(call)
    if stored and call.request.method == "DELETE" and call.status == 200:
        call.services.live.pins.forget(stored)  # deleted there: nothing is left to pin to
    return response


async def relay(call: Call, next_step: Next) -> web.StreamResponse:
    assert call.route is not None and call.targets
    target = call.targets[0]
    current = call.snapshot.providers[target.provider]
    request = call.request
    limit = call.snapshot.config.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise errors.body_too_large(limit)  # refused from the header, before a byte goes upstream
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        raise errors.ProxyError(
            415, "A relayed request body must not be compressed", code="unsupported_content_encoding"
        )
    with admission.Hold(call) as hold:
        refusal = await hold.admit(current, call.model)
        if isinstance(refusal, admission.BreakerOpen):
            raise errors.breakers_open(refusal.retry_after)
        if isinstance(refusal, limits.Refused) and refusal.reason == global_limits.BUDGET:
            raise errors.insufficient_quota()
        if isinstance(refusal, limits.Refused):
            raise errors.rate_limited(refusal.retry_after, refusal.headers.as_dict())
        if hold.wait > 0:
            await asyncio.sleep(hold.wait)
        call.target, call.provider, call.attempts = target, current, 1
        current.budget.request()
        hold.sent = True
        try:
            answer = await _exchange(call, current, limit)
        except errors.ProxyError as failure:
            hold.failed(failure)
            raise
        if call.broken is not None:
            hold.broke_off(call.broken)
        else:
            hold.answered(call.status)
        return answer


async def _exchange(call: Call, current: state.ProviderState, limit: int) -> web.StreamResponse:
    request = call.request
    url = f"{current.base_url}/{call.endpoint}"
    if request.query_string:
        url += "?" + request.query_string
    headers = forward.request_headers(
        request.headers, call.snapshot.keys.get(current.name), current.provider.kind, current.forward_headers
    )
    body = None
    if request.body_exists:
        body = upstream.Upload(_caller_body(request, limit), request.content_length)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        resp = await call.services.transport.send(
            upstream.Request(
                request.method, url, headers, body, current.timeouts, current.limits, current.egress
            )
        )
    except upstream.UpstreamError as exc:
        failure = forward.failure(call, exc)
        call.status = failure.status
        raise failure from None
    call.upstream_duration = loop.time() - sent
    call.status = resp.status
    out = web.StreamResponse(
        status=resp.status, headers=forward.response_headers(resp.headers, current.name, call.request_id)
    )
    out.headers["x-llmgw-attempts"] = "1"
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit():
        out.content_length = int(length)
    try:
        await out.prepare(request)
        try:
            async for chunk in resp.chunks():
                await out.write(chunk)
        except upstream.UpstreamError as exc:
            # The answer is the caller's already: it is cut off, so the caller sees it incomplete.
            failure = forward.failure(call, exc)
            call.status, call.broken = failure.status, failure
            if request.transport is not None:
                request.transport.abort()
            return out
        await out.write_eof()
    except ConnectionResetError:
        call.status = CLIENT_CLOSED
    finally:
        resp.close()
    return out


async def _caller_body(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            failure = errors.body_too_large(limit)
            failure.local = True  # the caller's body, not the provider's fault
            raise failure
        yield chunk
