"""Spans and metrics of provider calls, checked against the OpenTelemetry GenAI conventions.

The conventions' attribute names come from ``opentelemetry-semantic-conventions``
(installed with the SDK), so a name the sidecar invents or misspells fails here.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes

from llmgw_dev import fake_provider
from llmgw_proxy.telemetry import tracing

if TYPE_CHECKING:
    from conftest import MakeDoc, Pair, Proxy, StartProxy
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "two words"}]
CONVENTION_NAMES = {
    value
    for name, value in vars(gen_ai_attributes).items()
    if name.startswith("GEN_AI_") and isinstance(value, str)
}
PARAMETERS: dict[str, Any] = {"temperature": 0.5, "top_p": 0.9, "max_tokens": 20, "seed": 7, "stop": "END"}


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    assert span.attributes is not None, f"span {span.name!r} has no attributes"
    return span.attributes


def spans_by_kind(exporter: InMemorySpanExporter) -> dict[trace.SpanKind, ReadableSpan]:
    return {s.kind: s for s in exporter.get_finished_spans()}


def traced_with(exporter: InMemorySpanExporter, **kwargs: Any) -> tracing.Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.Tracing(provider, **kwargs)


@pytest.fixture
async def traced(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    span_exporter: InMemorySpanExporter,
) -> Proxy:
    return await start_proxy(make_doc(upstream, key_file), tracing_=traced_with(span_exporter))


@pytest.mark.parametrize("stream", [pytest.param(False, id="plain"), pytest.param(True, id="stream")])
async def test_the_client_span_names_the_call_as_the_conventions_do(
    traced: Proxy, span_exporter: InMemorySpanExporter, upstream: str, stream: bool
) -> None:
    client = traced.async_client()
    if stream:
        chunks = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True, **PARAMETERS)
        ids = {chunk.id async for chunk in chunks}
    else:
        answer = await client.chat.completions.create(model="m", messages=MESSAGES, **PARAMETERS)
        ids = {answer.id}
    spans = spans_by_kind(span_exporter)
    span = attributes(spans[trace.SpanKind.CLIENT])
    assert span["gen_ai.provider.name"] == "openai"
    assert "gen_ai.system" not in span  # only with the opt-in
    assert span["gen_ai.operation.name"] == "chat"
    assert (span["gen_ai.request.model"], span["gen_ai.response.model"]) == ("m", "m")
    assert {span["gen_ai.response.id"]} == ids
    assert span["gen_ai.response.finish_reasons"] == ("stop",)
    assert span["gen_ai.request.temperature"] == 0.5
    assert span["gen_ai.request.top_p"] == 0.9
    assert span["gen_ai.request.max_tokens"] == 20
    assert span["gen_ai.request.seed"] == 7
    assert span["gen_ai.request.stop_sequences"] == ("END",)
    assert "gen_ai.request.presence_penalty" not in span  # not set by the caller: not reported
    port = int(upstream.split(":")[2].split("/")[0])
    assert (span["server.address"], span["server.port"]) == ("127.0.0.1", port)
    if stream:
        assert span["gen_ai.request.stream"] is True
        for kind in (trace.SpanKind.CLIENT, trace.SpanKind.SERVER):
            assert attributes(spans[kind])["gen_ai.response.time_to_first_chunk"] > 0
    for span_ in spans.values():
        assert span_.status.status_code is trace.StatusCode.UNSET
        unknown = {k for k in attributes(span_) if k.startswith("gen_ai.")} - CONVENTION_NAMES
        assert unknown == set(), "not a GenAI convention attribute"


async def test_server_address_is_the_host_alone_never_the_userinfo(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    span_exporter: InMemorySpanExporter,
) -> None:
    with_userinfo = upstream.replace("http://", "http://someone:hunter2@")
    proxy = await start_proxy(make_doc(with_userinfo, key_file), tracing_=traced_with(span_exporter))
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    for span in span_exporter.get_finished_spans():
        assert "hunter2" not in repr(dict(attributes(span)))
    assert attributes(spans_by_kind(span_exporter)[trace.SpanKind.CLIENT])["server.address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("fault", "client_error", "server_error"),
    [
        pytest.param(fake_provider.Fault(status=500), "500", "500", id="status"),
        pytest.param(fake_provider.Fault(reset=True), "ConnectFailed", "502", id="connection"),
    ],
)
async def test_a_failed_call_sets_error_type_and_an_error_status(
    traced: Proxy,
    span_exporter: InMemorySpanExporter,
    fake: fake_provider.FakeProvider,
    fault: fake_provider.Fault,
    client_error: str,
    server_error: str,
) -> None:
    fake.plan(fault)
    with pytest.raises(openai.APIStatusError):
        await traced.async_client().chat.completions.create(model="m", messages=MESSAGES)
    spans = spans_by_kind(span_exporter)
    # The client span says how the provider call failed; the server span, what the caller got.
    assert attributes(spans[trace.SpanKind.CLIENT])["error.type"] == client_error
    assert attributes(spans[trace.SpanKind.SERVER])["error.type"] == server_error
    for span in spans.values():
        assert span.status.status_code is trace.StatusCode.ERROR, span.kind


async def test_a_caller_error_fails_the_client_span_but_not_the_server_span(
    traced: Proxy, span_exporter: InMemorySpanExporter, fake: fake_provider.FakeProvider
) -> None:
    fake.plan(fake_provider.Fault(status=400))
    with pytest.raises(openai.BadRequestError):
        await traced.async_client().chat.completions.create(model="m", messages=MESSAGES)
    spans = spans_by_kind(span_exporter)
    assert attributes(spans[trace.SpanKind.CLIENT])["error.type"] == "400"
    assert spans[trace.SpanKind.CLIENT].status.status_code is trace.StatusCode.ERROR
    assert "error.type" not in attributes(spans[trace.SpanKind.SERVER])
    assert spans[trace.SpanKind.SERVER].status.status_code is trace.StatusCode.UNSET


async def test_a_stream_cut_after_its_first_event_fails_both_spans(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    span_exporter: InMemorySpanExporter,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["timeouts"] = {"streamIdle": 0.2, "total": 5}
    proxy = await start_proxy(doc, tracing_=traced_with(span_exporter))
    fake.plan(fake_provider.Fault(stall_mid_stream=3))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    for span in spans_by_kind(span_exporter).values():
        assert attributes(span)["error.type"] == "upstream_timeout", span.kind
        assert span.status.status_code is trace.StatusCode.ERROR, span.kind


async def test_gen_ai_system_only_when_opted_in(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    span_exporter: InMemorySpanExporter,
) -> None:
    doc = make_doc(upstream.removesuffix("/v1"), key_file)  # Azure's paths start at the root
    doc["providers"]["fake"]["kind"] = "azure-openai"
    proxy = await start_proxy(doc, tracing_=traced_with(span_exporter, legacy_system=True))
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    span = attributes(spans_by_kind(span_exporter)[trace.SpanKind.CLIENT])
    assert (span["gen_ai.provider.name"], span["gen_ai.system"]) == ("azure.ai.openai", "az.ai.openai")


@pytest.mark.parametrize(
    ("value", "legacy"),
    [("gen_ai/dup", True), ("http, gen_ai/dup", True), ("gen_ai_latest_experimental", False), ("", False)],
)
def test_the_opt_in_is_read_from_the_environment(value: str, legacy: bool) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SEMCONV_STABILITY_OPT_IN": value}
    tracer = tracing.from_environment(env)
    assert tracer.legacy_system is legacy
    assert tracer.metrics is None  # OTLP metrics are asked for apart
    tracer.shutdown()


def test_otlp_metrics_are_on_when_asked_for() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_METRICS_EXPORTER": "otlp"}
    tracer = tracing.from_environment(env)
    assert tracer.metrics is not None
    tracer.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    assert data is not None
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)]
    return found


async def test_client_metrics_record_tokens_and_duration_per_call(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    reader = InMemoryMetricReader()
    proxy = await start_proxy(
        make_doc(upstream, key_file), tracing_=tracing.Tracing(None, MeterProvider(metric_readers=[reader]))
    )
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        pass
    [duration] = points(reader, "gen_ai.client.operation.duration")
    assert duration.count == 2
    labels = dict(duration.attributes or {})
    assert labels["gen_ai.operation.name"] == "chat"
    assert labels["gen_ai.provider.name"] == "openai"
    assert labels["gen_ai.request.model"] == labels["gen_ai.response.model"] == "m"
    assert labels["server.address"] == "127.0.0.1"
    tokens = {
        dict(p.attributes or {})["gen_ai.token.type"]: p for p in points(reader, "gen_ai.client.token.usage")
    }
    assert (tokens["input"].sum, tokens["output"].sum) == (3, len(fake_provider.REPLY.split()))
    [first] = points(reader, "gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1


async def test_time_to_first_token_is_a_histogram_per_route_and_serving_provider(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(pair.doc(key_file))
    pair.primary.plan(fake_provider.Fault(reset_first_event=True))
    client = proxy.async_client()
    for _ in range(2):
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
    first = {
        p: proxy.sample("llmgw_time_to_first_token_seconds_count", route="*", provider=p) for p in pair.urls
    }
    assert first == {"primary": 1, "fallback": 1}
    assert proxy.sample("llmgw_time_per_output_chunk_seconds_count", route="*", provider="primary") == 1
    await client.chat.completions.create(model="m", messages=MESSAGES)  # not a stream: no first token
    assert proxy.sample("llmgw_time_to_first_token_seconds_count", route="*", provider="primary") == 1
