"""The request path is a list: a policy joins by inserting a step, without touching the others."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider
from llmgw_proxy import errors, pipeline
from llmgw_proxy.steps import attempts, cache, route
from llmgw_proxy.steps.call import Call, Next

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def test_a_step_inserted_after_routing_sees_the_route_and_can_refuse(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    seen: list[tuple[str, str | None]] = []

    async def limit(call: Call, next_step: Next) -> web.StreamResponse:
        seen.append((call.model, call.route.model if call.route else None))
        if call.model == "blocked":
            raise errors.ProxyError(429, "local limit", type="rate_limit_error", headers={"Retry-After": "3"})
        return await next_step(call)

    steps = list(pipeline.STEPS)
    steps.insert(steps.index(route.resolve_route) + 1, limit)
    proxy = await start_proxy(make_doc(upstream, key_file), steps=tuple(steps))
    client = proxy.async_client()
    await client.chat.completions.create(model="allowed", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="blocked", messages=MESSAGES)
    assert caught.value.response.headers["Retry-After"] == "3"
    assert seen == [("allowed", "*"), ("blocked", "*")]
    assert len(fake.requests) == 1
    assert proxy.sample("llmgw_requests_total", route="*", provider="", model="other", status="429") == 1


async def test_a_step_wrapping_the_upstream_call_sees_each_attempt(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    statuses: list[int] = []

    async def observe(call: Call, next_step: Next) -> web.StreamResponse:
        response = await next_step(call)
        statuses.append(response.status)
        assert call.provider is not None and call.provider.name == "fake"
        return response

    steps = list(pipeline.STEPS)
    steps.insert(steps.index(attempts.attempt_targets) + 1, observe)
    proxy = await start_proxy(make_doc(upstream, key_file), steps=tuple(steps))
    await proxy.async_client().embeddings.create(model="e", input="x")
    assert statuses == [200]


def test_the_default_path_reads_as_the_documented_list() -> None:
    names = [getattr(step, "__name__", "") for step in pipeline.STEPS]
    assert names == ["account", "parse_body", "resolve_route", "pin", "cache", "attempt_targets", "forward"]
    assert pipeline.__doc__ is not None
    for name in names:
        assert name in pipeline.__doc__


def cached(doc: dict[str, Any]) -> dict[str, Any]:
    doc["providers"]["fake"]["cache"] = {"enabled": True, "ttl": 60}
    return doc


@pytest.mark.parametrize("streamed", [pytest.param(False, id="json"), pytest.param(True, id="sse")])
async def test_a_path_without_the_cache_step_caches_nothing(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    streamed: bool,
) -> None:
    doc = cached(make_doc(upstream, key_file))
    steps = tuple(step for step in pipeline.STEPS if step is not cache.cache)
    proxy = await start_proxy(doc, steps=steps)
    client = proxy.async_client()
    for _ in range(2):
        if streamed:
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, temperature=0, stream=True
            )
            async for _chunk in stream:
                pass
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES, temperature=0
            )
            assert "x-llmgw-cache" not in raw.headers
    assert len(fake.requests) == 2
    assert proxy.live.cache.stats.entries == 0
    assert proxy.sample("llmgw_cache_lookups_total", result="miss") == 0


async def test_the_same_path_with_the_cache_step_answers_the_repeat_from_memory(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = cached(make_doc(upstream, key_file))
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    seen = []
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, temperature=0
        )
        seen.append(raw.headers["x-llmgw-cache"])
    assert seen == ["MISS", "HIT"]
    assert len(fake.requests) == 1
    assert proxy.live.cache.stats.entries == 1
