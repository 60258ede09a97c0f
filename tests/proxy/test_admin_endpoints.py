"""Probes and metrics on the admin listener."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Eventually, Proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def test_healthz_and_readyz_answer_ok_with_the_generation(
    proxy: Proxy, http: aiohttp.ClientSession
) -> None:
    async with http.get(proxy.admin_url + "/healthz") as resp:
        assert resp.status == 200
    async with http.get(proxy.admin_url + "/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "generation": 1}


async def test_readyz_fails_while_draining(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    proxy.live.draining = True
    async with http.get(proxy.admin_url + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "draining"


async def test_readiness_ignores_upstream_health(
    proxy: Proxy, http: aiohttp.ClientSession, fake: fake_provider.FakeProvider
) -> None:
    fake.plan(fake_provider.Fault(status=503, times=0))
    for _ in range(3):
        async with http.post(
            proxy.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
        ) as resp:
            assert resp.status == 503
    async with http.get(proxy.admin_url + "/readyz") as resp:
        assert resp.status == 200


async def test_exposes_request_latency_token_and_config_metrics(
    proxy: Proxy, http: aiohttp.ClientSession
) -> None:
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    async with http.get(proxy.admin_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    labels = 'model="other",provider="fake",route="*"'
    for line in (
        f'llmgw_requests_total{{{labels},status="200"}} 1.0',
        f"llmgw_request_duration_seconds_count{{{labels}}} 1.0",
        'llmgw_upstream_duration_seconds_count{model="other",provider="fake"} 1.0',
        f'llmgw_tokens_total{{kind="prompt",{labels}}} 2.0',  # "user" and "hi"
        f'llmgw_tokens_total{{kind="completion",{labels}}} 12.0',
        "llmgw_in_flight_requests 0.0",
        "llmgw_config_generation 1.0",
        'llmgw_config_reload_failures_total{reason="key_not_utf8"} 0.0',
    ):
        assert line in text


async def test_counts_a_stream_as_in_flight_until_it_ends(
    proxy: Proxy, fake: fake_provider.FakeProvider, eventually: Eventually
) -> None:
    fake.plan(fake_provider.Fault(stall_mid_stream=30))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    await anext(aiter(stream))
    assert proxy.sample("llmgw_in_flight_requests") == 1
    await stream.close()
    await eventually(lambda: proxy.sample("llmgw_in_flight_requests") == 0)
    assert proxy.sample("llmgw_requests_total", route="*", provider="fake", model="other", status="499") == 1
