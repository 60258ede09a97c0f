"""Spans of Responses and Messages calls follow the GenAI conventions like chat's do."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import anthropic
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from llmgw_proxy.telemetry import tracing

if TYPE_CHECKING:
    from conftest import StartProxy
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from apis.conftest import Fakes, MakeAnthropic

ROUTES = [
    {"model": "gpt-x", "targets": [{"provider": "openai"}]},
    {"model": "claude-x", "targets": [{"provider": "claude"}]},
]
MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "say hello"}]


def traced_with(exporter: InMemorySpanExporter) -> tracing.Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.Tracing(provider)


def spans(exporter: InMemorySpanExporter) -> dict[trace.SpanKind, tuple[str, dict[str, Any]]]:
    return {s.kind: (s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()}


@pytest.mark.parametrize("stream", [pytest.param(False, id="plain"), pytest.param(True, id="stream")])
async def test_a_messages_call_is_an_anthropic_chat_with_its_id_and_stop_reason(
    start_proxy: StartProxy,
    fakes: Fakes,
    key_file: pathlib.Path,
    make_anthropic: MakeAnthropic,
    span_exporter: InMemorySpanExporter,
    stream: bool,
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES), tracing_=traced_with(span_exporter))
    client = make_anthropic(proxy.url)
    if stream:
        async with client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as events:
            final = await events.get_final_message()
        message_id, stop_reason = final.id, final.stop_reason
    else:
        message = await client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES)
        message_id, stop_reason = message.id, message.stop_reason
    by_kind = spans(span_exporter)
    server_name, server = by_kind[trace.SpanKind.SERVER]
    client_name, client_span = by_kind[trace.SpanKind.CLIENT]
    assert server_name == client_name == "chat claude-x"
    assert server["gen_ai.operation.name"] == client_span["gen_ai.operation.name"] == "chat"
    assert client_span["gen_ai.provider.name"] == "anthropic"
    assert client_span["gen_ai.response.id"] == message_id
    assert stop_reason is not None
    assert client_span["gen_ai.response.finish_reasons"] == (stop_reason,)


async def test_a_responses_call_is_an_openai_chat_with_its_id(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, span_exporter: InMemorySpanExporter
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES), tracing_=traced_with(span_exporter))
    response = await proxy.async_client().responses.create(model="gpt-x", input="say hello", store=False)
    by_kind = spans(span_exporter)
    client_name, client_span = by_kind[trace.SpanKind.CLIENT]
    assert client_name == "chat gpt-x"
    assert client_span["gen_ai.provider.name"] == "openai"
    assert client_span["gen_ai.response.id"] == response.id


@pytest.mark.parametrize(
    ("endpoint", "name"),
    [
        ("chat/completions", "chat"),
        ("responses", "chat"),
        ("messages", "chat"),
        ("embeddings", "embeddings"),
        ("files/file-abc123/content", "files"),
        ("audio/transcriptions", "audio"),
    ],
)
def test_a_relayed_path_names_its_operation_by_its_first_segment_never_by_ids(
    endpoint: str, name: str
) -> None:
    assert tracing.operation(endpoint) == name
