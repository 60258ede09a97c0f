"""Token budgets in a real Redis: past one, OpenAI's insufficient_quota; the count outlives sidecars."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy
    from rediskit import RedisServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def test_a_spent_budget_answers_insufficient_quota_and_survives_a_sidecar_restart(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(sharedId="team-a/openai", budget={"tokensPerDay": 100})
    doc["sharedStore"] = {"url": redis_server.url, "timeout": 2}  # a busy test machine is not a slow Redis
    first = await start_proxy(doc)
    client = first.async_client()
    served = 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(100):  # each reserves 8 prompt + 10 completion tokens, then settles to usage
            await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10)
            served += 1
    assert refused.value.code == "insufficient_quota"
    assert isinstance(refused.value.body, dict) and refused.value.body["type"] == "insufficient_quota"
    assert "retry-after" not in refused.value.response.headers  # waiting a minute does not help
    assert served >= 5
    async with http.get(first.admin_url + "/status") as response:
        budget = (await response.json())["providers"]["fake"]["budget"]
    assert budget[0]["period"] == "day" and budget[0]["limit"] == 100
    assert 100 - 18 < budget[0]["used"] <= 100

    # A new sidecar (a restart, a new pod) reads the same count: still spent.
    second = await start_proxy(doc)
    with pytest.raises(openai.RateLimitError) as again:
        await second.async_client().chat.completions.create(model="m", messages=MESSAGES, max_tokens=10)
    assert again.value.code == "insufficient_quota"
