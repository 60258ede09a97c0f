"""The sidecar's answer cache: HIT, MISS, BYPASS; canonical keys; SSE replay; no quota spent."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from llmgw_dev import fake_provider
from llmgw_proxy.steps import cache
from llmgw_proxy.upstream import sse

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy

ASK: CompletionCreateParamsBase = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}


def cached(upstream: str, key_file: pathlib.Path, make_doc: MakeDoc, **policy: Any) -> dict[str, Any]:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["cache"] = {"enabled": True, "ttl": 60, **policy}
    return dict(doc)


async def post(
    http: aiohttp.ClientSession, proxy: Proxy, body: bytes | Mapping[str, Any], **headers: str
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    async with http.post(proxy.url + "/v1/chat/completions", data=data, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


@pytest.fixture
async def proxy(start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc) -> Proxy:
    return await start_proxy(cached(upstream, key_file, make_doc))


async def test_a_repeated_temperature_0_request_is_a_miss_then_a_hit(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> None:
    status, headers, first = await post(http, proxy, ASK)
    assert (status, headers["x-llmgw-cache"]) == (200, "MISS")
    status, headers, second = await post(http, proxy, ASK)
    assert (status, headers["x-llmgw-cache"]) == (200, "HIT")
    assert headers["x-llmgw-provider"] == "fake"
    assert json.loads(second) == json.loads(first)
    assert len(fake.requests) == 1
    assert proxy.sample("llmgw_cache_lookups_total", result="hit") == 1
    assert proxy.sample("llmgw_cache_lookups_total", result="miss") == 1
    assert proxy.sample("llmgw_cache_entries") == 1
    assert proxy.sample("llmgw_cache_bytes") > len(first)


async def test_key_order_and_whitespace_of_the_body_do_not_change_the_key(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> None:
    await post(http, proxy, json.dumps(ASK).encode())
    reordered = json.dumps(dict(reversed(list(ASK.items()))), indent=4).encode()
    _, headers, _ = await post(http, proxy, reordered)
    assert headers["x-llmgw-cache"] == "HIT"
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("cache_control", "status"),
    [
        pytest.param("no-store", "BYPASS", id="no-store-bypasses"),
        pytest.param("no-cache", "MISS", id="no-cache-refreshes"),
    ],
)
async def test_request_cache_control_skips_the_lookup(
    proxy: Proxy,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
    cache_control: str,
    status: str,
) -> None:
    await post(http, proxy, ASK)
    _, headers, _ = await post(http, proxy, ASK, **{"Cache-Control": cache_control})
    assert headers["x-llmgw-cache"] == status
    assert len(fake.requests) == 2


async def test_a_request_the_mode_does_not_cover_is_bypassed(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> None:
    warm = {**ASK, "temperature": 0.7}
    for _ in range(2):
        _, headers, _ = await post(http, proxy, warm)
        assert headers["x-llmgw-cache"] == "BYPASS"
    assert len(fake.requests) == 2
    assert proxy.sample("llmgw_cache_lookups_total", result="bypass") == 2


async def test_an_error_answer_is_not_stored(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> None:
    fake.plan(fake_provider.Fault(status=500))
    status, headers, _ = await post(http, proxy, ASK)
    assert (status, headers["x-llmgw-cache"]) == (500, "MISS")
    status, headers, _ = await post(http, proxy, ASK)
    assert (status, headers["x-llmgw-cache"]) == (200, "MISS")
    assert proxy.sample("llmgw_cache_entries") == 1


async def test_a_streaming_client_gets_a_cached_answer_as_sse(
    proxy: Proxy, fake: fake_provider.FakeProvider
) -> None:
    client = proxy.async_client()
    await client.chat.completions.create(**ASK)
    raw = await client.chat.completions.with_raw_response.create(**ASK, stream=True)
    chunks = [c async for c in raw.parse()]
    assert raw.headers["x-llmgw-cache"] == "HIT"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake_provider.REPLY
    assert len(fake.requests) == 1


async def test_a_streamed_answer_is_stored_and_replayed_to_both_kinds_of_client(
    proxy: Proxy, fake: fake_provider.FakeProvider
) -> None:
    client = proxy.async_client()
    first = [c async for c in await client.chat.completions.create(**ASK, stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in first if c.choices) == fake_provider.REPLY
    again = await client.chat.completions.with_raw_response.create(**ASK, stream=True)
    replayed = [c async for c in again.parse()]
    assert again.headers["x-llmgw-cache"] == "HIT"
    assert [c.model_dump() for c in replayed] == [c.model_dump() for c in first]
    plain = await client.chat.completions.with_raw_response.create(**ASK)
    assert plain.headers["x-llmgw-cache"] == "HIT"
    assert plain.parse().choices[0].message.content == fake_provider.REPLY
    assert len(fake.requests) == 1


async def test_a_cache_hit_spends_no_rate_limit_quota(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    doc = cached(upstream, key_file, make_doc)
    doc["providers"]["fake"]["rateLimit"] = {"requestsPerMinute": 60, "requestBurst": 1}
    proxy = await start_proxy(doc)
    for expected in ("MISS", "HIT", "HIT", "HIT"):
        status, headers, _ = await post(http, proxy, ASK)
        assert (status, headers["x-llmgw-cache"]) == (200, expected)
    status, _, _ = await post(http, proxy, {**ASK, "temperature": 1})
    assert status == 429  # the one request slot went to the first miss, none to the hits


def test_a_stored_text_completion_stream_assembles_into_a_text_completion() -> None:
    chunks = [
        {"id": "c1", "object": "text_completion", "model": "m", "choices": [{"index": 0, "text": "Hel"}]},
        {"id": "c1", "object": "text_completion", "model": "m", "choices": [{"index": 1, "text": "Bye"}]},
        {
            "id": "c1",
            "object": "text_completion",
            "model": "m",
            "choices": [{"index": 0, "text": "lo", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        },
    ]
    stream = b"".join(sse.encode(json.dumps(c).encode()) for c in chunks) + sse.encode(sse.DONE)
    answer = json.loads(cache.assemble(stream, chat=False))
    assert answer["object"] == "text_completion"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in answer["choices"]] == [
        (0, "Hello", "stop"),
        (1, "Bye", None),
    ]
    assert answer["usage"]["total_tokens"] == 5
    assert "message" not in answer["choices"][0]


async def test_entries_pushed_out_by_the_entry_bound_are_counted_as_evictions(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    doc = cached(upstream, key_file, make_doc)
    doc["cache"] = {"maxEntries": 1}
    proxy = await start_proxy(doc)
    for content in ("one", "two", "one"):
        _, headers, _ = await post(http, proxy, {**ASK, "messages": [{"role": "user", "content": content}]})
        assert headers["x-llmgw-cache"] == "MISS"  # "one" was pushed out by "two"
    assert proxy.sample("llmgw_cache_evictions_total", reason="evicted") == 2
    assert proxy.sample("llmgw_cache_evictions_total", reason="expired") == 0
    assert proxy.sample("llmgw_cache_lookups_total", result="miss") == 3
    assert proxy.sample("llmgw_cache_entries") == 1


async def test_a_nan_in_a_body_is_not_keyed_like_a_null(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> None:
    # orjson refuses NaN, so this body is decoded by the json module, and its key must not
    # take the fast path that assumes no NaN could be written as null.
    with_nan = json.dumps({**ASK, "logit_bias": {"50256": float("nan")}}).encode()
    with_null = json.dumps({**ASK, "logit_bias": {"50256": None}}).encode()
    for body in (with_nan, with_null, with_nan):
        status, headers, _ = await post(http, proxy, body)
        assert status == 200
    assert headers["x-llmgw-cache"] == "HIT"
    assert len(fake.requests) == 2
