"""Circuit breakers in the request path: open, fall back, probe, close; 429s pause instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Eventually, Pair, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
BREAKER = {"circuitBreaker": {"consecutiveFailures": 3, "openDuration": 0.3}}


def strict_breaker() -> dict[str, Any]:
    return {"circuitBreaker": {"consecutiveFailures": 1, "openDuration": 30}}


async def ask(proxy: Proxy) -> Any:
    return await proxy.async_client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)


async def test_the_breaker_opens_after_its_threshold_then_probes_and_closes_when_the_upstream_recovers(
    start_proxy: StartProxy,
    pair: Pair,
    key_file: pathlib.Path,
    eventually: Eventually,
    log_lines: Callable[[], list[str]],
) -> None:
    proxy = await start_proxy(pair.doc(key_file, primary=BREAKER))
    pair.primary.plan(fake_provider.Fault(status=500, times=0))
    for _ in range(3):
        raw = await ask(proxy)
        assert raw.headers["x-llmgw-provider"] == "fallback"
        assert raw.headers["x-llmgw-attempts"] == "2"
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 2
    assert len(pair.primary.requests) == 3

    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert len(pair.primary.requests) == 3, "an open breaker lets nothing through"

    pair.primary.clear()
    await eventually(lambda: proxy.sample("llmgw_breaker_state", provider="primary") == 1)
    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "primary"
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 0
    for old, new in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        labels = {"provider": "primary", "from": old, "to": new}
        assert proxy.sample("llmgw_breaker_transitions_total", **labels) == 1
    events = [json.loads(line) for line in log_lines() if '"msg": "breaker"' in line]
    assert [(e["provider"], e["from"], e["to"]) for e in events] == [
        ("primary", "closed", "open"),
        ("primary", "open", "half_open"),
        ("primary", "half_open", "closed"),
    ]
    assert events[0]["reason"] == "3 consecutive failures"


async def test_answers_503_with_retry_after_when_every_breaker_is_open(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    slow = {"circuitBreaker": {"consecutiveFailures": 1, "openDuration": 30}}
    proxy = await start_proxy(pair.doc(key_file, primary=slow, fallback=slow))
    pair.primary.plan(fake_provider.Fault(status=500, times=0))
    pair.fallback.plan(fake_provider.Fault(status=500, times=0))
    body = {"model": "m", "messages": MESSAGES}
    async with http.post(proxy.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 500  # both failed once: the last upstream answer
    async with http.post(proxy.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["type"] == "service_unavailable"
        assert 29 <= int(resp.headers["Retry-After"]) <= 30
    assert len(pair.primary.requests) == len(pair.fallback.requests) == 1


async def test_an_upstream_429_pauses_the_provider_and_the_fallback_serves_without_counting_a_failure(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    strict = {"circuitBreaker": {"consecutiveFailures": 1, "openDuration": 30}}
    proxy = await start_proxy(pair.doc(key_file, primary=strict))
    pair.primary.plan(fake_provider.Fault(status=429, retry_after=30))
    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert proxy.sample("llmgw_provider_paused_total", provider="primary") == 1
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 0

    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert len(pair.primary.requests) == 1, "a paused provider gets no requests"
    labels = {"provider": "primary", "model": "other", "kind": "paused"}
    assert proxy.sample("llmgw_ratelimit_rejections_total", **labels) == 1
    assert proxy.sample("llmgw_fallbacks_total", route="*", **{"from": "primary", "to": "fallback"}) == 2


async def test_a_reload_keeps_the_breaker_of_an_unchanged_policy_and_resets_a_changed_one(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    doc = pair.doc(key_file, primary=strict_breaker(), fallback=strict_breaker())
    proxy = await start_proxy(doc)
    pair.primary.plan(fake_provider.Fault(status=500, times=0))
    await ask(proxy)
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 2

    doc["providers"]["primary"]["timeouts"]["total"] = 6  # the provider changed, its breaker did not
    doc["providers"]["fallback"]["circuitBreaker"]["consecutiveFailures"] = 2
    proxy.config_path.write_text(yaml.safe_dump(doc))
    proxy.watcher.load()
    assert proxy.sample("llmgw_config_generation") == 2
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 2

    doc["providers"]["primary"]["circuitBreaker"]["consecutiveFailures"] = 2
    proxy.config_path.write_text(yaml.safe_dump(doc))
    proxy.watcher.load()
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 0
    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "fallback"  # a fresh breaker lets the primary be tried
    assert len(pair.primary.requests) == 2


async def test_a_probe_whose_caller_leaves_while_it_waits_for_the_rate_limit_frees_its_probe_slot(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, eventually: Eventually
) -> None:
    policy = {
        "circuitBreaker": {"consecutiveFailures": 1, "openDuration": 0.2},
        "rateLimit": {"requestsPerMinute": 60, "requestBurst": 1, "maxWait": 5},
    }
    proxy = await start_proxy(pair.doc(key_file, primary=policy))
    assert proxy.live.snapshot is not None
    limiter = proxy.live.snapshot.providers["primary"].limiter
    assert limiter is not None
    pair.primary.plan(fake_provider.Fault(status=500))
    raw = await ask(proxy)  # takes the one request slot of this second and opens the breaker
    assert raw.headers["x-llmgw-provider"] == "fallback"
    await eventually(lambda: proxy.sample("llmgw_breaker_state", provider="primary") == 1)

    probe = asyncio.create_task(ask(proxy))

    # the probe booked the next slot and waits for it: the bucket is full again only after that
    def slot_booked() -> bool:
        reset = limiter.headers("m").reset_requests
        assert reset is not None
        return reset > 1.0

    await eventually(slot_booked)
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    await eventually(lambda: proxy.metrics.in_flight == 0)

    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "primary", "the breaker still held the left probe's slot"
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 0
