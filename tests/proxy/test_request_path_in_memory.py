"""The whole request path with ``memory.Transport`` behind it: no socket to the provider.

The provider is a function that sees each ``upstream.Request`` exactly as the
sidecar prepared it, so these tests read what the path sends, not what a
server recorded of it. tests/proxy/upstream holds the contract that lets this
transport stand in for ``http1.Pool``.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_proxy import upstream
from llmgw_proxy.upstream import memory

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy

BASE_URL = "http://provider.test/v1"  # never resolved: memory.Transport opens no socket
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def completion(model: str, content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    return json.dumps(
        {
            "id": "c-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


async def test_the_provider_gets_its_key_not_the_callers_and_the_model_its_target_names(
    start_proxy: StartProxy, key_file: pathlib.Path, make_doc: MakeDoc, secret: str
) -> None:
    seen: list[upstream.Request] = []

    async def provider(request: upstream.Request) -> memory.Answer:
        seen.append(request)
        assert not isinstance(request.body, upstream.Upload)
        model = json.loads(request.body or b"{}")["model"]
        return memory.Answer(200, {"Content-Type": "application/json"}, completion(model, "hello"))

    routes = [{"model": "fast", "targets": [{"provider": "fake", "model": "gpt-4o-mini"}]}]
    proxy = await start_proxy(
        make_doc(BASE_URL, key_file, routes=routes), transport=memory.Transport(provider)
    )
    answer = await proxy.async_client().chat.completions.create(model="fast", messages=MESSAGES)

    [request] = seen
    assert (request.method, request.url) == ("POST", f"{BASE_URL}/chat/completions")
    assert request.headers["Authorization"] == f"Bearer {secret}"
    assert "caller-key-not-forwarded" not in str(dict(request.headers))
    assert not isinstance(request.body, upstream.Upload)
    assert json.loads(request.body or b"{}") == {"model": "gpt-4o-mini", "messages": MESSAGES}
    # The provider's config, with total cut to what is left of the request's 5 s deadline.
    assert (request.timeouts.connect, request.timeouts.first_byte) == (2, 2)
    assert 0 < request.timeouts.total < 5
    assert (answer.model, answer.choices[0].message.content) == ("gpt-4o-mini", "hello")


async def test_a_streamed_answer_is_relayed_chunk_by_chunk_in_order(
    start_proxy: StartProxy, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    words = ["one", " two", " three"]

    async def events() -> AsyncIterator[bytes]:
        for word in words:
            chunk = {
                "id": "c-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def provider(request: upstream.Request) -> memory.Answer:
        return memory.Answer(200, {"Content-Type": "text/event-stream"}, events())

    proxy = await start_proxy(make_doc(BASE_URL, key_file), transport=memory.Transport(provider))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert received == words


async def test_a_provider_silent_past_the_first_byte_deadline_is_a_504_naming_the_phase(
    start_proxy: StartProxy, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    async def provider(request: upstream.Request) -> memory.Answer:
        await asyncio.Event().wait()  # never answers; the deadline cancels this
        raise AssertionError("unreachable")

    doc = make_doc(BASE_URL, key_file)
    doc["providers"]["fake"]["timeouts"]["firstByte"] = 0.05
    proxy = await start_proxy(doc, transport=memory.Transport(provider))
    with pytest.raises(openai.APIStatusError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert "first_byte timeout" in caught.value.message
