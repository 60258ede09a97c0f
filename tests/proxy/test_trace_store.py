"""Spans reach a real trace store: a sidecar with OTEL_EXPORTER_OTLP_ENDPOINT set exports over
OTLP/HTTP to Jaeger (the pinned binary), and Jaeger's query API shows one trace per request: the
server span, under the caller's traceparent, and one client span per upstream attempt (a retry
and a fallback make more than one), each carrying the GenAI attributes."""

from __future__ import annotations

import asyncio
import pathlib
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import tracekit
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.trace import TracerProvider

from llmgw_dev import fake_provider
from llmgw_proxy.telemetry import tracing

if TYPE_CHECKING:
    from conftest import Pair, Proxy, StartProxy

# The attribute names the sidecar sets, in one place: the GenAI semantic conventions move
# (gen_ai.system became gen_ai.provider.name), and this is the one dict to change with them.
ATTRIBUTES = {
    "operation": "gen_ai.operation.name",
    "provider": "gen_ai.provider.name",
    "request_model": "gen_ai.request.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "status": "http.response.status_code",
    "server_address": "server.address",
    "server_port": "server.port",
}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "two words"}]
# The fake provider counts the words of every message field: "user", "two", "words".
PROMPT_TOKENS = 3
REPLY_TOKENS = len(fake_provider.REPLY.split())


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def parent_of(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references") or [] if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


@pytest.fixture
async def traced_tracing(
    jaeger: tracekit.Jaeger, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[tracing.Tracing, str]]:
    """The sidecar's own tracing set-up, from its environment, pointed at the trace store."""
    service = f"llmgw-proxy-{secrets.token_hex(4)}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    exporting = tracing.from_environment()
    assert exporting.enabled
    yield exporting, service
    await asyncio.to_thread(exporting.shutdown)


@pytest.fixture
async def sidecar(
    start_proxy: StartProxy,
    pair: Pair,
    key_file: pathlib.Path,
    traced_tracing: tuple[tracing.Tracing, str],
) -> Proxy:
    doc = pair.doc(key_file, primary={"retry": {"attempts": 2}})
    return await start_proxy(doc, tracing_=traced_tracing[0])


# name: (faults planned on the primary, providers of the client spans in order, their statuses)
CASES = {
    "one-attempt": ((), ["primary"], [200]),
    "retried": ((fake_provider.Fault(status=500),), ["primary", "primary"], [500, 200]),
    "fell-back": (
        (fake_provider.Fault(status=500, times=2),),
        ["primary", "primary", "fallback"],
        [500, 500, 200],
    ),
}


async def test_each_request_is_one_trace_with_a_client_span_per_attempt(
    sidecar: Proxy,
    pair: Pair,
    jaeger: tracekit.Jaeger,
    traced_tracing: tuple[tracing.Tracing, str],
) -> None:
    exporting, service = traced_tracing
    client = sidecar.async_client()
    callers: dict[str, tuple[str, str]] = {}  # case -> (trace id, the caller's span id)
    for name, (faults, _, _) in CASES.items():
        pair.primary.plan(*faults)
        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        callers[name] = (trace_id, caller_span)
        await client.chat.completions.create(
            model=f"model-{name}",
            messages=MESSAGES,
            extra_headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
    assert isinstance(exporting.provider, TracerProvider)
    assert await asyncio.to_thread(exporting.provider.force_flush, 10_000)

    for name, (_, providers, statuses) in CASES.items():
        trace_id, caller_span = callers[name]
        expected_spans = 1 + len(providers)

        def complete(trace_id: str = trace_id, expected_spans: int = expected_spans) -> dict[str, Any]:
            found = jaeger.trace(trace_id)
            return found if found and len(found["spans"]) >= expected_spans else {}

        trace = await asyncio.to_thread(jaeger.wait, complete, 30, f"trace {trace_id} ({name}) in Jaeger")
        spans = trace["spans"]
        assert len(spans) == expected_spans, name
        assert {trace["processes"][s["processID"]]["serviceName"] for s in spans} == {service}
        (server,) = [s for s in spans if tags(s).get("span.kind") == "server"]
        clients = sorted(
            (s for s in spans if tags(s).get("span.kind") == "client"), key=lambda s: s["startTime"]
        )
        assert len(clients) == len(providers), name
        model = f"model-{name}"

        assert parent_of(server) == caller_span, "the caller's traceparent is the server span's parent"
        assert server["operationName"] == f"chat {model}"
        server_tags = tags(server)
        assert server_tags[ATTRIBUTES["operation"]] == "chat"
        assert server_tags[ATTRIBUTES["request_model"]] == model
        assert server_tags[ATTRIBUTES["status"]] == 200
        assert server_tags[ATTRIBUTES["input_tokens"]] == PROMPT_TOKENS
        assert server_tags[ATTRIBUTES["output_tokens"]] == REPLY_TOKENS

        for span, provider, status in zip(clients, providers, statuses, strict=True):
            assert parent_of(span) == server["spanID"], name
            assert span["operationName"] == f"chat {model}"
            t = tags(span)
            assert t[ATTRIBUTES["operation"]] == "chat"
            assert t[ATTRIBUTES["provider"]] == "openai"
            assert t[ATTRIBUTES["request_model"]] == model
            url = urlsplit(pair.urls[provider])
            assert t[ATTRIBUTES["server_address"]] == url.hostname, (name, provider)
            assert t[ATTRIBUTES["server_port"]] == url.port, (name, provider)
            assert t[ATTRIBUTES["status"]] == status, (name, provider)
        assert tags(clients[-1])[ATTRIBUTES["output_tokens"]] == REPLY_TOKENS

    # One trace per request, and nothing else from this sidecar.
    ids = await asyncio.to_thread(jaeger.trace_ids, service)
    assert ids == {trace_id for trace_id, _ in callers.values()}
