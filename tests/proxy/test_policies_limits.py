"""Local rate limits per target: skip to the fallback, wait within maxWait, else a 429 clients understand."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import MakeDoc, Pair, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
BODY = {"model": "m", "messages": MESSAGES, "max_tokens": 16}
USED = 2 + len(fake_provider.REPLY.split())  # the fake's usage for BODY: words in, words out
RESERVED = 3 + 4 + 1 + 16  # tokens.reservation for BODY: priming, one message, "hi", max_tokens


def limited(**limit: Any) -> dict[str, Any]:
    return {"rateLimit": limit}


async def test_answers_429_with_retry_after_and_ratelimit_headers_once_every_target_is_refused(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    limit = limited(requestsPerMinute=60, requestBurst=1, tokensPerMinute=100_000)
    proxy = await start_proxy(pair.doc(key_file, primary=limit, fallback=limit))
    served = []
    for _ in range(2):
        async with http.post(proxy.url + "/v1/chat/completions", json=BODY) as resp:
            assert resp.status == 200
            served.append(resp.headers["x-llmgw-provider"])
    assert served == ["primary", "fallback"]
    async with http.post(proxy.url + "/v1/chat/completions", json=BODY) as resp:
        assert resp.status == 429
        body = await resp.json()
        headers = resp.headers
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert headers["Retry-After"] == "1"
    assert 900 <= int(headers["retry-after-ms"]) <= 1000
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("ms")
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert {"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} <= set(headers)
    for provider, refusals in (("primary", 2), ("fallback", 1)):
        labels = {"provider": provider, "model": "other", "kind": "requests"}
        assert proxy.sample("llmgw_ratelimit_rejections_total", **labels) == refusals
    assert len(pair.primary.requests) == len(pair.fallback.requests) == 1


async def test_a_request_waits_for_capacity_within_max_wait_instead_of_being_refused(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    limit = limited(requestsPerMinute=600, requestBurst=1, maxWait=1)
    proxy = await start_proxy(pair.doc(key_file, primary=limit))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        async with http.post(proxy.url + "/v1/chat/completions", json=BODY) as resp:
            assert resp.status == 200
            assert resp.headers["x-llmgw-provider"] == "primary"
    assert loop.time() - started >= 0.19  # two waits of 0.1 s: one request per 100 ms
    assert len(pair.fallback.requests) == 0


async def test_the_openai_client_retry_honours_retry_after_and_then_succeeds(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = make_doc(upstream, key_file)
    # One request a second: the second call finds the bucket empty even when a loaded machine
    # takes most of a second between the two (at one per 200 ms it had refilled, and no 429 came).
    doc["providers"]["fake"]["rateLimit"] = {"requestsPerMinute": 60, "requestBurst": 1}
    proxy = await start_proxy(doc)
    client = proxy.async_client(max_retries=2)
    loop = asyncio.get_running_loop()
    await client.chat.completions.create(model="m", messages=MESSAGES)
    started = loop.time()
    raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert loop.time() - started >= 0.5  # it waited for the bucket (one request a second)
    assert (
        proxy.sample("llmgw_ratelimit_rejections_total", provider="fake", model="other", kind="requests") >= 1
    )
    assert len(fake.requests) == 2

    stingy = proxy.async_client(max_retries=0)
    with pytest.raises(openai.RateLimitError):
        await stingy.chat.completions.create(model="m", messages=MESSAGES)


async def test_concurrent_streams_cannot_overshoot_a_token_limit_by_more_than_one_reservation(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    burst = 200
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["rateLimit"] = {"tokensPerMinute": 60, "tokenBurst": burst}
    proxy = await start_proxy(doc)
    loop = asyncio.get_running_loop()

    async def stream() -> bool:
        async with http.post(proxy.url + "/v1/chat/completions", json={**BODY, "stream": True}) as resp:
            await resp.read()
            return resp.status == 200

    started = loop.time()
    first = await asyncio.gather(*(stream() for _ in range(20)))
    second = await asyncio.gather(*(stream() for _ in range(20)))  # after the first wave settled
    refill = (loop.time() - started) * 60 / 60
    admitted = sum(first) + sum(second)
    assert 0 < sum(first) < 20, "the first wave fills the bucket"
    assert sum(second) > 0, "settling gave back what the first wave reserved but did not use"
    assert admitted * USED <= burst + refill + RESERVED


async def test_a_stream_is_settled_on_the_usage_the_sidecar_asked_for_and_the_caller_never_sees_it(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["rateLimit"] = {"tokensPerMinute": 60, "tokenBurst": 1000}
    proxy = await start_proxy(doc)
    async with http.post(proxy.url + "/v1/chat/completions", json={**BODY, "stream": True}) as resp:
        text = (await resp.read()).decode()
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks), "no usage-only chunk reaches a caller that did not ask"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == fake_provider.REPLY
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    remaining = proxy.sample("llmgw_ratelimit_remaining", provider="fake", model="", kind="tokens")
    assert 1000 - USED <= remaining <= 1000 - USED + 2  # settled on the real 15, not the 24 reserved


async def test_a_caller_that_asked_for_stream_usage_still_gets_it(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["rateLimit"] = {"tokensPerMinute": 60, "tokenBurst": 1000}
    proxy = await start_proxy(doc)
    chunks = [
        c
        async for c in await proxy.async_client().chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    ]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == USED


@pytest.mark.slow
async def test_a_sustained_load_of_3x_the_configured_rate_for_60_s_is_admitted_within_2_percent_of_the_limit(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    rpm, burst, rate, seconds, workers = 1200, 20, 60.0, 60.0, 12
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["rateLimit"] = {"requestsPerMinute": rpm, "requestBurst": burst}
    proxy = await start_proxy(doc)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    total = int(rate * seconds)
    counts = {200: 0, 429: 0}

    async def worker(offset: int) -> None:
        for index in range(offset, total, workers):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for an outcome
            async with http.post(proxy.url + "/v1/chat/completions", json=BODY) as resp:
                await resp.read()
                counts[resp.status] = counts.get(resp.status, 0) + 1

    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(workers))), seconds + 30)
    assert sum(counts.values()) == total
    expected = rpm + burst
    assert abs(counts[200] - expected) <= 0.02 * expected, counts
