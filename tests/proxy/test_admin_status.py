"""``GET /status`` on the admin listener: the report the operator aggregates, and nothing secret."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import pathlib
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import yaml
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider
from llmgw_proxy import config, status

if TYPE_CHECKING:
    from conftest import Pair, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def _status(proxy: Proxy, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(proxy.admin_url + "/status") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
    status.SidecarStatus.model_validate(body)  # the operator's parser takes it
    return body


async def test_reports_the_generation_and_the_hash_of_the_config_it_serves(
    proxy: Proxy, http: aiohttp.ClientSession
) -> None:
    body = await _status(proxy, http)
    served = config.parse(yaml.safe_load(proxy.config_path.read_text()))
    assert (body["ready"], body["generation"], body["configHash"]) == (True, 1, config.digest(served))
    assert body["providers"] == {"fake": {"consecutiveFailures": 0}}
    assert body["cache"] == {"entries": 0, "bytes": 0}
    assert "lastReloadError" not in body


async def test_reports_an_open_breaker_its_failures_and_a_429_pause(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    doc = pair.doc(
        key_file,
        primary={"circuitBreaker": {"consecutiveFailures": 2, "openDuration": 60}},
        fallback={"rateLimit": {"requestsPerMinute": 10}},
    )
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    pair.primary.plan(fake_provider.Fault(status=500, times=1))
    await client.chat.completions.create(model="m", messages=MESSAGES)  # the fallback answers
    body = await _status(proxy, http)
    primary = body["providers"]["primary"]
    assert (primary["breaker"], primary["consecutiveFailures"], primary["lastFailureKind"]) == (
        "closed",
        1,
        "5xx",
    )
    # One of ten requests taken; the bucket refills continuously meanwhile.
    assert 0.9 <= body["providers"]["fallback"]["remainingShare"] < 0.95

    pair.primary.plan(fake_provider.Fault(reset=True, times=1))
    before = datetime.datetime.now(datetime.UTC)
    await client.chat.completions.create(model="m", messages=MESSAGES)
    primary = (await _status(proxy, http))["providers"]["primary"]
    assert (primary["breaker"], primary["lastFailureKind"]) == ("open", "connection")
    since = datetime.datetime.fromisoformat(primary["breakerSince"])
    assert before - datetime.timedelta(seconds=1) <= since <= datetime.datetime.now(datetime.UTC)
    assert since - datetime.datetime.fromisoformat(primary["lastFailureAt"]) < datetime.timedelta(seconds=1)

    pair.fallback.plan(fake_provider.Fault(status=429, retry_after=30, times=1))
    with contextlib.suppress(openai.APIStatusError):  # every target refused: the pause is what counts
        await client.chat.completions.create(model="m", messages=MESSAGES)
    fallback = (await _status(proxy, http))["providers"]["fallback"]
    until = datetime.datetime.fromisoformat(fallback["pausedUntil"])
    assert until > datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)


async def test_names_a_refused_reload_by_its_code_only(
    proxy: Proxy, http: aiohttp.ClientSession, key_file: pathlib.Path, secret: str
) -> None:
    # A key file the sidecar refuses for a bad character: its bytes are the (new) key.
    await asyncio.to_thread(key_file.write_text, secret + " tail-of-the-new-secret\n")
    proxy.watcher.poll()
    body = await _status(proxy, http)
    assert body["lastReloadError"] == {"reasonCode": "key_invalid_character"}
    assert (body["ready"], body["generation"]) == (True, 1)
    raw = str(body)
    assert secret not in raw and "tail-of-the-new-secret" not in raw and str(key_file) not in raw
