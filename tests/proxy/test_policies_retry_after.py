"""An upstream's Retry-After is capped (retry.maxRetryAfter), and a changed provider is no longer paused."""

from __future__ import annotations

import asyncio
import pathlib
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Pair, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
A_DAY = 86400


async def ask(proxy: Proxy) -> Any:
    return await proxy.async_client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)


def paused_for(proxy: Proxy, provider: str) -> float:
    assert proxy.live.snapshot is not None
    limiter = proxy.live.snapshot.providers[provider].limiter
    assert limiter is not None
    return limiter.paused_until - asyncio.get_running_loop().time()


@pytest.mark.parametrize(
    ("retry", "cap"), [pytest.param({}, 60.0, id="default"), ({"maxRetryAfter": 5}, 5.0)]
)
async def test_a_429_retry_after_of_a_day_pauses_the_provider_for_the_cap_only(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, retry: dict[str, Any], cap: float
) -> None:
    proxy = await start_proxy(pair.doc(key_file, primary={"retry": {"attempts": 1, **retry}}))
    pair.primary.plan(fake_provider.Fault(status=429, retry_after=A_DAY))
    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert 0 < paused_for(proxy, "primary") <= cap


async def test_a_5xx_retry_after_of_a_day_delays_the_retry_by_the_cap_only(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    primary = {"retry": {"attempts": 2, "maxRetryAfter": 0.05}}
    proxy = await start_proxy(pair.doc(key_file, primary=primary))
    pair.primary.plan(fake_provider.Fault(status=503, retry_after=A_DAY))
    raw = await ask(proxy)
    assert raw.headers["x-llmgw-provider"] == "primary"  # retried there, not given up on
    assert raw.headers["x-llmgw-attempts"] == "2"
    assert not pair.fallback.requests


async def test_a_reload_that_changes_a_paused_provider_ends_its_pause(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    doc = pair.doc(key_file)
    proxy = await start_proxy(doc)
    pair.primary.plan(fake_provider.Fault(status=429, retry_after=30))
    assert (await ask(proxy)).headers["x-llmgw-provider"] == "fallback"

    doc["providers"]["fallback"]["timeouts"]["total"] = 6  # another provider changed: still paused
    proxy.config_path.write_text(yaml.safe_dump(doc))
    proxy.watcher.load()
    assert (await ask(proxy)).headers["x-llmgw-provider"] == "fallback"

    doc["providers"]["primary"]["timeouts"]["total"] = 6
    proxy.config_path.write_text(yaml.safe_dump(doc))
    proxy.watcher.load()
    assert (await ask(proxy)).headers["x-llmgw-provider"] == "primary"
    assert len(pair.primary.requests) == 2
