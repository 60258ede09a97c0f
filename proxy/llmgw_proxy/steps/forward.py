"""The last step: one exchange with the chosen provider, relayed to the caller.

The body goes upstream as the caller sent it (re-encoded only when the target
renames the model). Of the caller's headers only an allow-list goes upstream
(``config.FORWARDED_HEADERS`` and the provider's ``forwardHeaders``), never one
the caller's ``Connection`` header names: the caller's credentials, its
organization or project, proxy and hop-by-hop headers stay behind, and the
provider's key is added. A streamed answer is written on as
each chunk arrives; a failure after the headers went out ends the stream with
an in-band OpenAI error event, which the ``openai`` client raises as APIError.

A stream goes out to the caller only once its first event with data has
arrived (``timeouts.firstEvent`` after its headers): until then a stall, a
failure or an error event in its place fails the try, which the attempt loop
retries or moves to the next target as if the provider had failed outright.
After it, a silence of ``timeouts.streamIdle`` ends the stream. Every try is
bounded by what is left of the request's deadline (``Call.deadline``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from llmgw_proxy import config, errors, upstream
from llmgw_proxy.apis import events, shapes
from llmgw_proxy.apis import usage as usage_
from llmgw_proxy.runtime import keys
from llmgw_proxy.steps.call import Call, Next
from llmgw_proxy.telemetry import genai
from llmgw_proxy.upstream import sse, stream_watch

if TYPE_CHECKING:
    from opentelemetry import trace

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
    if provider.kind is config.ProviderKind.AZURE_OPENAI and endpoint.startswith("responses"):
        # Azure serves the Responses API per resource, not per deployment.
        query = f"?{urlencode({'api-version': provider.api_version})}" if provider.api_version else ""
        return f"{base_url}/openai/{endpoint}{query}"
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
    errors.settled(exc)  # answered from here on; its traceback would hold the connection's frames
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


failure = _failure  # relay's name for it: one mapping of transport failures to caller errors


async def forward(call: Call, next_step: Next) -> web.StreamResponse:
    assert call.provider is not None and call.target is not None
    state = call.provider
    provider = state.provider
    upstream_model = call.target.model or call.model
    body = call.raw
    # A step that settles on usage (the rate limiter) needs a stream's usage chunk even when the
    # caller did not ask for one; it is asked for here and taken out again on the way back.
    ask_usage = (
        call.stream
        and call.wants_usage
        and call.endpoint not in events.TYPED  # their streams always carry usage
        and not sse.asks_for_usage(call.body)
    )
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
    if provider.kind is config.ProviderKind.ANTHROPIC and "anthropic-version" not in headers:
        headers["anthropic-version"] = provider.api_version or config.ANTHROPIC_VERSION

    tracing = call.services.tracing
    span = None
    attributes: dict[str, Any] | None = None
    if tracing.enabled or tracing.metrics is not None:
        attributes = tracing.call_attributes(
            call.endpoint, provider.kind.value, upstream_model, state.base_url
        )
        call.facts = genai.ResponseFacts()
        if tracing.enabled:
            span = tracing.client_span(call.span, attributes, call.body)
            tracing.propagate(span, headers)
    error_type: str | None = None
    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        resp = await call.services.transport.send(
            upstream.Request(
                "POST",
                url,
                headers,
                body,
                _within(state.timeouts, call.deadline - sent),
                state.limits,
                state.egress,
            )
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
                call.usage = usage_.normalized(_usage_of(data))
            call.response_id = events.response_id(call.endpoint, data)
            if call.facts is not None:
                call.facts.read_json(data)
            for hook in call.answer_hooks:
                hook(False, data)
        return web.Response(status=resp.status, body=data, headers=out_headers)
    except upstream.UpstreamError as exc:
        failure = _failure(call, exc)
        call.status = failure.status
        error_type = type(exc).__name__
        raise failure from None
    except errors.ProxyError as failure:  # the stream failed before the caller saw any of it
        call.status = failure.status
        error_type = failure.code or "upstream_error"
        raise
    finally:
        if call.first_event_at is not None:
            _observe_stream(call, span)
        if attributes is not None:
            if error_type is None and call.broken is not None:
                error_type = call.broken.code or "upstream_error"
            elif error_type is None and call.status >= 400:
                error_type = str(call.status)
            _observe_call(call, span, attributes, loop.time() - sent, error_type)


def _observe_stream(call: Call, span: trace.Span | None) -> None:
    """Time to first token (the first event relayed, from the request's arrival) and per chunk."""
    assert call.first_event_at is not None and call.provider is not None
    first = call.first_event_at - call.started
    per_chunk = None
    if call.last_chunk_at is not None and call.chunks > 1:
        per_chunk = (call.last_chunk_at - call.first_event_at) / (call.chunks - 1)
    route = call.route.model if call.route is not None else ""
    call.services.metrics.observe_stream(route, call.provider.name, first, per_chunk)
    if span is not None:
        span.set_attribute("gen_ai.response.time_to_first_chunk", first)
    if call.span is not None:
        call.span.set_attribute("gen_ai.response.time_to_first_chunk", first)


def _observe_call(
    call: Call, span: trace.Span | None, attributes: dict[str, Any], duration: float, error_type: str | None
) -> None:
    """End the provider call's span; record it in the GenAI client metrics."""
    facts = call.facts.attributes() if call.facts is not None else {}
    usage = call.usage or {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    prompt = prompt if isinstance(prompt, int) else None
    completion = completion if isinstance(completion, int) else None
    if span is not None:
        span.set_attributes(facts)
        if prompt is not None:
            span.set_attribute("gen_ai.usage.input_tokens", prompt)
        if completion is not None:
            span.set_attribute("gen_ai.usage.output_tokens", completion)
        if call.status:
            span.set_attribute("http.response.status_code", call.status)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            from opentelemetry.trace import StatusCode  # tracing is on: the API is loaded

            span.set_status(StatusCode.ERROR)
        span.end()
    recorder = call.services.tracing.metrics
    if recorder is not None:
        labels = dict(attributes)
        if "gen_ai.response.model" in facts:
            labels["gen_ai.response.model"] = facts["gen_ai.response.model"]
        if error_type is not None:
            labels["error.type"] = error_type
        first = call.first_event_at - call.started if call.first_event_at is not None else None
        recorder.record(labels, duration, prompt, completion, first)


def _within(timeouts: upstream.Timeouts, left: float) -> upstream.Timeouts:
    """The provider's timeouts, with ``total`` cut to what is left of the request's deadline."""
    if left >= timeouts.total:
        return timeouts
    return dataclasses.replace(timeouts, total=max(left, 0.001))


class _ShuttingDown(Exception):
    """A shutdown's grace ran out while this stream was open (runtime.drain)."""


def _error_instead_of_content(call: Call, error: dict[str, Any]) -> errors.ProxyError:
    provider = call.provider.name if call.provider is not None else ""
    code = error.get("code") or error.get("type")
    message = error.get("message")
    detail = f": {message[:500]}" if isinstance(message, str) else ""
    return errors.ProxyError(
        502,
        f"Provider {provider!r} sent an error event instead of its first event{detail}",
        type="server_error",
        code=code if isinstance(code, str) and code else "upstream_error",
    )


async def _relay_stream(
    call: Call, resp: upstream.Response, headers: CIMultiDict[str], strip_usage: bool
) -> web.StreamResponse:
    assert call.provider is not None
    bounds = call.provider.limits
    timeouts = call.provider.provider.timeouts
    # Nothing reaches the caller before the first event: until then the try can still fail over.
    chunks = resp.chunks()
    try:
        first = await stream_watch.first_event(chunks, timeouts.first_event, bounds.max_event_bytes)
    except upstream.UpstreamError:
        resp.close()
        raise
    error = first.error()
    if error is not None:
        resp.close()
        raise _error_instead_of_content(call, error)
    loop = asyncio.get_running_loop()
    call.first_event_at = loop.time()
    facts = call.facts
    if facts is not None and first.data is not None:
        facts.read_json(first.data)
    out = web.StreamResponse(status=resp.status, headers=headers)
    # The plain reader when the stream goes through untouched; the filter when the sidecar
    # added a usage chunk, or needs the text (no usage chunk may come) or the bytes (a hook).
    keep = bool(call.answer_hooks)
    filtered = strip_usage or call.wants_usage or keep
    reader: sse.UsageReader | sse.StreamFilter
    if call.endpoint in events.TYPED:
        filtered = True
        reader = events.EventReader(keep, call.wants_usage, bounds.max_event_bytes, bounds.max_response_bytes)
    elif filtered:
        reader = sse.StreamFilter(
            strip_usage, call.wants_usage, keep, bounds.max_event_bytes, bounds.max_response_bytes
        )
    else:
        reader = sse.UsageReader()
    complete = False
    at_boundary = True  # what went out so far ends with a whole event
    watch: stream_watch.IdleWatch | None = None
    try:
        await out.prepare(call.request)
        watch = stream_watch.IdleWatch(timeouts.stream_idle)
        try:
            try:
                chunk = bytes(first.held)
                while True:
                    if filtered:
                        assert isinstance(reader, sse.StreamFilter)
                        chunk = reader.filter(chunk)
                    else:
                        assert isinstance(reader, sse.UsageReader)
                        reader.feed(chunk)
                    if chunk:
                        # Before the write: a shutdown's cancel may land in its wait for the caller,
                        # when the chunk is already in the transport's buffer.
                        at_boundary = chunk.endswith(sse.EVENT_ENDS)
                        await out.write(chunk)
                        call.chunks += 1
                        if facts is not None:
                            facts.read_chunk(chunk)
                    watch.waiting()
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    watch.busy()
            except asyncio.CancelledError:
                if watch.timed_out():
                    raise upstream.TimedOut("stream_idle") from None
                if call.services.live.drain.took_back():
                    raise _ShuttingDown from None
                raise
            watch.close()
            call.last_chunk_at = loop.time()
            if filtered:
                assert isinstance(reader, sse.StreamFilter)
                rest = reader.finish()
                if rest:
                    await out.write(rest)
            complete = True
        except (upstream.UpstreamError, _ShuttingDown) as exc:
            failure = errors.shutting_down() if isinstance(exc, _ShuttingDown) else _failure(call, exc)
            call.status, call.broken = failure.status, failure
            # Cut mid-event, the error must still be an event of its own for the client to see it.
            cut = b"" if at_boundary else b"\n\n"
            sequence = reader.last_sequence if isinstance(reader, events.EventReader) else None
            await out.write(cut + shapes.stream_event(call.endpoint, failure, sequence))
        await out.write_eof()
    except ConnectionResetError:
        call.status = 499  # the caller left mid-stream; closing resp below cancels the upstream read
    finally:
        if watch is not None:
            watch.close()
        resp.close()
        call.usage = reader.usage
        if isinstance(reader, events.EventReader):
            call.response_id = reader.response_id
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
