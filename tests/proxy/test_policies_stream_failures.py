"""A stream the upstream breaks mid-way is a breaker failure of its kind; a caller leaving is not."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Eventually, MakeDoc, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
)


@pytest.fixture
async def dropping_upstream() -> AsyncIterator[str]:
    """Answers 200 with one SSE event, then closes the connection mid-stream (no last chunk)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    server.close()


def breaker_doc(make_doc: MakeDoc, url: str, key_file: pathlib.Path, **breaker: Any) -> dict[str, Any]:
    doc = make_doc(url, key_file)
    doc["providers"]["fake"]["circuitBreaker"] = {"consecutiveFailures": 1, "openDuration": 30, **breaker}
    return doc


async def read_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        pass


@pytest.mark.parametrize(
    ("fail_on", "opens"),
    [
        pytest.param(["connection"], True, id="counted"),
        pytest.param(["5xx", "timeout"], False, id="not-its-kind"),
    ],
)
async def test_a_stream_dropped_mid_way_is_a_connection_failure(
    start_proxy: StartProxy,
    dropping_upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fail_on: list[str],
    opens: bool,
) -> None:
    proxy = await start_proxy(breaker_doc(make_doc, dropping_upstream, key_file, failOn=fail_on))
    with pytest.raises(openai.APIError):
        await read_stream(proxy.async_client())
    assert proxy.sample("llmgw_breaker_state", provider="fake") == (2 if opens else 0)


async def test_a_stream_stalled_past_the_total_timeout_is_a_timeout_failure(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = breaker_doc(make_doc, upstream, key_file, failOn=["timeout"])
    doc["providers"]["fake"]["timeouts"]["total"] = 0.5
    proxy = await start_proxy(doc)
    fake.plan(fake_provider.Fault(stall_mid_stream=30))
    with pytest.raises(openai.APIError):
        await read_stream(proxy.async_client())
    assert proxy.sample("llmgw_breaker_state", provider="fake") == 2
    assert (
        proxy.sample("llmgw_breaker_transitions_total", provider="fake", **{"from": "closed", "to": "open"})
        == 1
    )


async def test_a_caller_leaving_mid_stream_is_no_failure_of_the_provider(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    eventually: Eventually,
) -> None:
    proxy = await start_proxy(breaker_doc(make_doc, upstream, key_file))
    fake.plan(fake_provider.Fault(stall_mid_stream=30))
    client = proxy.async_client()
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    await anext(aiter(stream))
    await stream.close()
    await eventually(lambda: proxy.metrics.in_flight == 0)
    assert proxy.sample("llmgw_breaker_state", provider="fake") == 0
    # The stall was planned once: the breaker, still closed, lets the next request through.
    completion = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices
