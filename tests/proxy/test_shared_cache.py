"""The exact cache in a real Redis: a hit in one sidecar serves all; memory serves while Redis is away."""

from __future__ import annotations

import asyncio
import pathlib
from typing import TYPE_CHECKING, Any

import aiohttp

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Eventually, MakeDoc, Proxy, StartProxy
    from rediskit import RedisServer

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


async def ask(http: aiohttp.ClientSession, proxy: Proxy) -> tuple[str, Any]:
    async with http.post(proxy.url + "/v1/chat/completions", json=BODY) as response:
        assert response.status == 200
        return response.headers["x-llmgw-cache"], await response.json()


async def written(proxy: Proxy) -> None:
    shared = proxy.live.shared
    assert shared is not None
    while shared._background:
        await asyncio.gather(*list(shared._background), return_exceptions=True)


async def test_a_hit_in_one_sidecar_serves_the_others_and_memory_serves_while_redis_is_down(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
    eventually: Eventually,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(sharedId="team-a/openai", cache={"enabled": True, "shared": True})
    doc["sharedStore"] = {
        "url": redis_server.url,
        "timeout": 2,
        "reconnectBackoff": 0.05,
        "maxReconnectBackoff": 0.2,
    }
    a, b = await start_proxy(doc), await start_proxy(doc)
    assert (await ask(http, a))[0] == "MISS"
    await written(a)
    status, answer = await ask(http, b)
    assert status == "HIT" and answer["choices"][0]["message"]["content"] == fake.reply
    assert len(fake.requests) == 1
    assert b.live.cache.stats.entries == 0  # the entry is in Redis, not in the sidecar's memory

    redis_server.kill()
    statuses = [(await ask(http, b))[0] for _ in range(3)]
    assert statuses[0] == "MISS"  # the GET failed: a miss, answered by the provider
    assert statuses[1:] == ["HIT", "HIT"]  # then the memory store serves
    assert b.sample("llmgw_shared_store_fallbacks_total", provider="fake", what="cache") >= 2

    redis_server.start()  # empty again
    shared = b.live.shared
    assert shared is not None
    await eventually(lambda: shared.up, within=10)
    assert (await ask(http, b))[0] == "MISS"  # the shared store again, which lost its entries
