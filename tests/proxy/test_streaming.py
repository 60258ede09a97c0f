"""Streams pass through chunk by chunk; a caller that leaves cancels the upstream call."""

from __future__ import annotations

import asyncio
import pathlib
from typing import TYPE_CHECKING

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Eventually, MakeDoc, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "count to three"}]


async def test_streams_the_whole_reply_to_the_async_client(proxy: Proxy) -> None:
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == fake_provider.REPLY


async def test_streams_the_whole_reply_to_the_sync_client(proxy: Proxy) -> None:
    client = proxy.client()

    def collect() -> str:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await asyncio.to_thread(collect) == fake_provider.REPLY


async def test_relays_the_first_chunk_while_the_upstream_is_still_stalled(
    proxy: Proxy, fake: fake_provider.FakeProvider
) -> None:
    fake.plan(fake_provider.Fault(stall_mid_stream=30))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    first = await asyncio.wait_for(anext(aiter(stream)), timeout=3)  # would hang if the proxy buffered
    assert first.choices[0].delta.content == "Hello"
    assert fake.finished_streams == 0
    await stream.close()


async def test_a_caller_that_disconnects_cancels_the_upstream_stream(
    proxy: Proxy, fake: fake_provider.FakeProvider, eventually: Eventually
) -> None:
    fake.plan(fake_provider.Fault(stall_mid_stream=30))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    await anext(aiter(stream))
    await stream.close()
    await eventually(lambda: fake.cancelled_streams == 1)
    await eventually(lambda: proxy.sample("llmgw_in_flight_requests") == 0)


async def test_counts_the_tokens_a_stream_reports_in_its_usage_chunk(proxy: Proxy) -> None:
    stream = await proxy.async_client().chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    labels = {"route": "*", "provider": "fake", "model": "other"}
    assert proxy.sample("llmgw_tokens_total", kind="completion", **labels) == 12
    assert proxy.sample("llmgw_tokens_total", kind="prompt", **labels) == 4


async def test_ends_a_stream_that_stalls_past_the_total_timeout_with_an_error_event(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    eventually: Eventually,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["timeouts"] = {"connect": 1, "firstByte": 1, "total": 0.5}
    proxy = await start_proxy(doc)
    fake.plan(fake_provider.Fault(stall_mid_stream=30))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="did not answer in time"):
        async for _ in stream:
            pass
    await eventually(
        lambda: (
            proxy.sample("llmgw_requests_total", route="*", provider="fake", model="other", status="504") == 1
        )
    )
