"""A server span per request and a client span per upstream call, with GenAI attributes."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from llmgw_dev import fake_provider
from llmgw_proxy.telemetry import tracing

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "two words"}]


def attributes(span: ReadableSpan) -> Mapping[str, object]:
    assert span.attributes is not None, f"span {span.name!r} has no attributes"
    return span.attributes


@pytest.fixture
async def traced(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    span_exporter: InMemorySpanExporter,
) -> Proxy:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return await start_proxy(make_doc(upstream, key_file), tracing_=tracing.Tracing(provider))


@pytest.mark.parametrize("stream", [pytest.param(False, id="plain"), pytest.param(True, id="stream")])
async def test_records_server_and_client_spans_with_usage(
    traced: Proxy, span_exporter: InMemorySpanExporter, stream: bool
) -> None:
    client = traced.async_client()
    if stream:
        chunks = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        async for _ in chunks:
            pass
    else:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    spans = {s.kind: s for s in span_exporter.get_finished_spans()}
    server, client_span = spans[trace.SpanKind.SERVER], spans[trace.SpanKind.CLIENT]
    assert server.name == client_span.name == "chat m"
    assert client_span.parent is not None and client_span.parent.span_id == server.context.span_id
    assert attributes(client_span)["gen_ai.provider.name"] == "openai"
    for span in (server, client_span):
        assert attributes(span)["gen_ai.request.model"] == "m"
        assert attributes(span)["gen_ai.usage.input_tokens"] == 3
        assert attributes(span)["gen_ai.usage.output_tokens"] == len(fake_provider.REPLY.split())
        assert attributes(span)["http.response.status_code"] == 200


async def test_marks_a_failed_upstream_call_on_its_client_span(
    traced: Proxy, span_exporter: InMemorySpanExporter, fake: fake_provider.FakeProvider
) -> None:
    fake.plan(fake_provider.Fault(reset=True))
    with pytest.raises(Exception, match="Could not connect"):
        await traced.async_client().chat.completions.create(model="m", messages=MESSAGES)
    spans = {s.kind: s for s in span_exporter.get_finished_spans()}
    assert attributes(spans[trace.SpanKind.CLIENT])["error.type"] == "ConnectFailed"
    assert attributes(spans[trace.SpanKind.SERVER])["http.response.status_code"] == 502


def test_tracing_is_off_without_an_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.from_environment().enabled is False


def test_tracing_exports_over_otlp_when_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    tracer = tracing.from_environment()
    assert tracer.enabled is True
    tracer.shutdown()


async def test_continues_the_callers_trace_up_to_the_provider(
    traced: Proxy, span_exporter: InMemorySpanExporter, fake: fake_provider.FakeProvider
) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await traced.async_client().chat.completions.create(
        model="m", messages=MESSAGES, extra_headers={"traceparent": f"00-{trace_id}-{caller_span}-01"}
    )
    spans = {s.kind: s for s in span_exporter.get_finished_spans()}
    server, client_span = spans[trace.SpanKind.SERVER], spans[trace.SpanKind.CLIENT]
    assert server.parent is not None and server.parent.span_id == int(caller_span, 16)
    assert server.context.trace_id == client_span.context.trace_id == int(trace_id, 16)
    sent = {k.lower(): v for k, v in fake.requests[-1].headers.items()}
    assert sent["traceparent"] == f"00-{trace_id}-{client_span.context.span_id:016x}-01"
