"""The last step: one exchange with the chosen provider, relayed to the caller.

The body goes upstream as the caller sent it (re-encoded only when the target
renames the model). Of the caller's headers only an allow-list goes upstream
(``config.FORWARDED_HEADERS`` and the provider's ``forwardHeaders``), never one
the caller's ``Connection`` header names: the caller's credentials, its
organization or project, proxy and hop-by-hop headers stay behind, and the
provider's key is added. A streamed answer is written on as
each chunk arrives; a failure after the headers went out ends the stream with
an in-band OpenAI error event, which the ``openai`` client raises as APIError.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import trace

from llmgw_proxy import config, errors, upstream
from llmgw_proxy.runtime import keys
from llmgw_proxy.steps.call import Call, Next
from llmgw_proxy.upstream import sse

_DROP_RESPONSE = config.HOP_BY_HOP | frozenset(
    {
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
        "openai-organization",
        "openai-project",
        "x-request-id",
    }
)
_PLAIN_CONNECTION = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})
_USAGE = b'"usage"'
log = logging.getLogger("llmgw.upstream")
USER_AGENT = "llmgw-proxy"
_DECODER = json.JSONDecoder()


def url_for(provider: config.Provider, base_url: str, endpoint: str, model: str) -> str:
    if provider.kind is config.ProviderKind.AZURE_OPENAI:
        # resolve_route refuses a caller's name that is no plain segment; quoting also keeps a
        # configured target name from changing the path or the query.
        url = f"{base_url}/openai/deployments/{quote(model, safe='')}/{endpoint}"
        if provider.api_version:
            return f"{url}?{urlencode({'api-version': provider.api_version})}"
        return url
    return f"{base_url}/{endpoint}"


def _hop_by_hop(connection: str | None) -> frozenset[str]:
    """The header names a Connection value declares hop-by-hop (none for a plain keep-alive)."""
    if connection is None or connection in _PLAIN_CONNECTION:
        return frozenset()
    return frozenset(name.strip().lower() for name in connection.split(","))


def request_headers(
    incoming: CIMultiDictProxy[str],
    key: keys.Key | None,
    kind: config.ProviderKind,
    allowed: tuple[str, ...] = config.FORWARDED_HEADERS,
) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    # Headers the caller's Connection names are hop-by-hop: they end here, even allow-listed.
    named = _hop_by_hop(incoming.get("Connection"))
    for name in allowed:
        if name in incoming and name not in named:  # most allowed names are absent: one lookup
            for value in incoming.getall(name):
                headers.add(name, value)
    headers.update(keys.auth_headers(kind, key))
    if "User-Agent" not in headers:
        headers["User-Agent"] = USER_AGENT  # rather than aiohttp's, which names its version
    return headers


def response_headers(incoming: Mapping[str, str], provider: str, request_id: str) -> CIMultiDict[str]:
    named = _hop_by_hop(incoming.get("Connection"))  # both transports look names up in any case
    drop = _DROP_RESPONSE | named if named else _DROP_RESPONSE
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        # x-llmgw-* is the sidecar's to say (cache, attempts, provider): an upstream cannot fake it.
        if lower not in drop and not lower.startswith("x-llmgw-"):
            headers.add(name, value)
    headers["x-llmgw-provider"] = provider
    headers["x-request-id"] = request_id
    return headers


def _failure(call: Call, exc: upstream.UpstreamError) -> errors.ProxyError:
    provider = call.provider.name if call.provider is not None else ""
    if isinstance(exc, upstream.TimedOut):
        return errors.upstream_timeout(provider, exc.phase)
    metrics_ = call.services.metrics
    if isinstance(exc, upstream.TooLarge):
        metrics_.count(metrics_.upstream_bounds, (provider, exc.bound))
        log.warning(
            "the upstream answer broke a bound; the request failed and its connection was closed",
            extra={
                "request_id": call.request_id,
                "provider": provider,
                "bound": exc.bound,
                "limit": exc.limit,
            },
        )
        return errors.upstream_too_large(provider, exc.bound, exc.limit)
    if isinstance(exc, upstream.PoolBusy):
        metrics_.count(metrics_.pool_exhausted, (provider,))
        log.warning(
            "no pooled upstream connection came free in time",
            extra={"request_id": call.request_id, "provider": provider, "pool_size": exc.size},
        )
        return errors.upstream_pool_busy(provider, exc.size)
    if isinstance(exc, upstream.TlsFailed | upstream.ProxyFailed):
        # Configuration, not a provider outage: say so where the platform team looks first.
        log.warning(
            "the upstream connection failed: %s",
            exc,
            extra={"request_id": call.request_id, "provider": provider},
        )
        if isinstance(exc, upstream.TlsFailed):
            return errors.upstream_tls_failed(provider, exc.reason)
        return errors.egress_proxy_failed(provider, exc.reason)
    return errors.upstream_unreachable(provider)


async def forward(call: Call, next_step: Next) -> web.StreamResponse:
    assert call.provider is not None and call.target is not None
    state = call.provider
    provider = state.provider
    upstream_model = call.target.model or call.model
    body = call.raw
    # A step that settles on usage (the rate limiter) needs a stream's usage chunk even when the
    # caller did not ask for one; it is asked for here and taken out again on the way back.
    ask_usage = call.stream and call.wants_usage and not sse.asks_for_usage(call.body)
    if upstream_model != call.model or ask_usage:
        changed = {**call.body, "model": upstream_model}
        if ask_usage:
            options = call.body.get("stream_options")
            changed["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        body = json.dumps(changed).encode()
    url = url_for(provider, state.base_url, call.endpoint, upstream_model)
    headers = request_headers(
        call.request.headers, call.snapshot.keys.get(state.name), provider.kind, state.forward_headers
    )

    tracing = call.services.tracing
    span = None
    if tracing.enabled:
        span = tracing.client_span(
            call.span, call.endpoint, provider.kind.value, upstream_model, state.base_url
        )
        tracing.propagate(span, headers)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        resp = await call.services.transport.send(
            upstream.Request("POST", url, headers, body, state.timeouts, state.limits, state.egress)
        )
        call.upstream_duration = loop.time() - sent
        call.status = resp.status
        out_headers = response_headers(resp.headers, state.name, call.request_id)
        out_headers["x-llmgw-attempts"] = str(call.attempts)
        out_headers.update(call.response_headers)
        if (
            call.stream
            and resp.status == 200
            and resp.headers.get("Content-Type", "").startswith("text/event-stream")
        ):
            return await _relay_stream(call, resp, out_headers, ask_usage)
        try:
            data = await resp.read()
        except upstream.UpstreamError as exc:
            raise _failure(call, exc) from None
        if resp.status == 200:
            if _USAGE in data:
                call.usage = _usage_of(data)
            for hook in call.answer_hooks:
                hook(False, data)
        return web.Response(status=resp.status, body=data, headers=out_headers)
    except upstream.UpstreamError as exc:
        failure = _failure(call, exc)
        call.status = failure.status
        if span is not None:
            span.set_attribute("error.type", type(exc).__name__)
        raise failure from None
    finally:
        if span is not None:
            if call.usage:
                _set_usage(span, call.usage)
            if call.status:
                span.set_attribute("http.response.status_code", call.status)
            span.end()


async def _relay_stream(
    call: Call, resp: upstream.Response, headers: CIMultiDict[str], strip_usage: bool
) -> web.StreamResponse:
    out = web.StreamResponse(status=resp.status, headers=headers)
    # The plain reader when the stream goes through untouched; the filter when the sidecar
    # added a usage chunk, or needs the text (no usage chunk may come) or the bytes (a hook).
    keep = bool(call.answer_hooks)
    filtered = strip_usage or call.wants_usage or keep
    reader: sse.UsageReader | sse.StreamFilter
    if filtered:
        assert call.provider is not None
        bounds = call.provider.limits
        reader = sse.StreamFilter(
            strip_usage, call.wants_usage, keep, bounds.max_event_bytes, bounds.max_response_bytes
        )
    else:
        reader = sse.UsageReader()
    complete = False
    at_boundary = True  # what went out so far ends with a whole event
    try:
        await out.prepare(call.request)
        try:
            async for chunk in resp.chunks():
                if filtered:
                    assert isinstance(reader, sse.StreamFilter)
                    chunk = reader.filter(chunk)
                    if not chunk:
                        continue
                else:
                    assert isinstance(reader, sse.UsageReader)
                    reader.feed(chunk)
                await out.write(chunk)
                at_boundary = chunk.endswith(sse.EVENT_ENDS)
            if filtered:
                assert isinstance(reader, sse.StreamFilter)
                rest = reader.finish()
                if rest:
                    await out.write(rest)
            complete = True
        except upstream.UpstreamError as exc:
            failure = _failure(call, exc)
            call.status, call.broken = failure.status, failure
            # Cut mid-event, the error must still be an event of its own for the client to see it.
            cut = b"" if at_boundary else b"\n\n"
            await out.write(cut + sse.error_event(failure.message, failure.type, failure.code or ""))
        await out.write_eof()
    except ConnectionResetError:
        call.status = 499  # the caller left mid-stream; closing resp below cancels the upstream read
    finally:
        resp.close()
        call.usage = reader.usage
        if isinstance(reader, sse.StreamFilter):
            call.stream_text = reader.text()
    if complete and call.status == 200 and isinstance(reader, sse.StreamFilter) and reader.kept is not None:
        data = b"".join(reader.kept)
        for hook in call.answer_hooks:
            hook(True, data)
    return out


def _usage_of(data: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of a JSON answer, decoded alone: the rest may be a long completion.

    An unescaped ``"usage"`` can only be a key or a whole string value, and providers put
    the top-level one last; anything unexpected falls back to decoding the whole answer.
    """
    at = data.rfind(_USAGE)
    colon = data.find(b":", at + len(_USAGE), at + len(_USAGE) + 8)
    if colon > 0:
        try:
            usage, _ = _DECODER.raw_decode(data[colon + 1 :].decode().lstrip())
        except (ValueError, RecursionError):  # nesting past the parser's depth: no usage to read
            usage = None
        if isinstance(usage, dict):
            return usage
    try:
        usage = json.loads(data).get("usage")
    except (ValueError, AttributeError, RecursionError):
        return None
    return usage if isinstance(usage, dict) else None


def _set_usage(span: trace.Span, usage: dict[str, Any]) -> None:
    for src, dst in (
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
    ):
        value = usage.get(src)
        if isinstance(value, int):
            span.set_attribute(dst, value)
