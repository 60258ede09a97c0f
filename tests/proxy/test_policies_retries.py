"""Retries with backoff on one target, bounded by the request's deadline, then fallback."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import MakeDoc, Pair, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
RETRY = {"retry": {"attempts": 3, "baseBackoff": 0.01, "maxBackoff": 0.02}}


def single(upstream: str, key_file: pathlib.Path, make_doc: MakeDoc, **provider: Any) -> dict[str, Any]:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(provider)
    return dict(doc)


async def test_a_503_then_success_on_the_same_target_succeeds_on_the_second_attempt(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    proxy = await start_proxy(single(upstream, key_file, make_doc, **RETRY))
    fake.plan(fake_provider.Fault(status=503))
    raw = await proxy.async_client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-llmgw-attempts"] == "2"
    assert raw.headers["x-llmgw-provider"] == "fake"
    assert proxy.sample("llmgw_retries_total", provider="fake") == 1


@pytest.mark.parametrize("stream", [pytest.param(False, id="plain"), pytest.param(True, id="stream")])
async def test_a_400_is_never_retried_nor_sent_to_a_fallback(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, stream: bool
) -> None:
    proxy = await start_proxy(pair.doc(key_file, primary=RETRY))
    pair.primary.plan(fake_provider.Fault(status=400, times=0))
    with pytest.raises(openai.BadRequestError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=stream)
    assert caught.value.response.headers["x-llmgw-attempts"] == "1"
    assert len(pair.primary.requests) == 1
    assert len(pair.fallback.requests) == 0


async def test_retries_stop_at_the_total_deadline(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    # Retry-After 0.4 s is honoured; with a 1 s total only two tries fit, not ten.
    retry = {"attempts": 10, "baseBackoff": 0.01, "maxBackoff": 0.02}
    timeouts = {"connect": 1, "firstByte": 1, "total": 1}
    proxy = await start_proxy(single(upstream, key_file, make_doc, retry=retry, timeouts=timeouts))
    fake.plan(fake_provider.Fault(status=503, retry_after=0.4, times=0))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert 2 <= len(fake.requests) <= 3


async def test_a_stream_falls_back_when_the_primary_fails_before_its_first_byte(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(pair.doc(key_file))
    pair.primary.plan(fake_provider.Fault(reset=True))
    raw = await proxy.async_client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True
    )
    chunks = [c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]
    assert "".join(chunks) == fake_provider.REPLY
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert raw.headers["x-llmgw-attempts"] == "2"


FAST = {"baseBackoff": 0.001, "maxBackoff": 0.002}


def failing_pair(pair: Pair, key_file: pathlib.Path, retry: dict[str, Any], **top: Any) -> dict[str, Any]:
    """Both targets answer 503 to everything, and retry up to ``retry.attempts`` times."""
    doc = pair.doc(key_file, primary={"retry": {**FAST, **retry}}, fallback={"retry": {**FAST, **retry}})
    doc.update(top)
    pair.primary.plan(fake_provider.Fault(status=503, times=0))
    pair.fallback.plan(fake_provider.Fault(status=503, times=0))
    return doc


@pytest.mark.parametrize(
    ("top", "cap"), [pytest.param({}, 5, id="default"), pytest.param({"maxAttempts": 3}, 3, id="configured")]
)
async def test_one_request_sends_at_most_max_attempts_upstream_across_targets(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, top: dict[str, Any], cap: int
) -> None:
    # 10 tries on each of 2 targets would be 20 upstream calls for one request.
    proxy = await start_proxy(
        failing_pair(pair, key_file, {"attempts": 10, "budgetMinPerSecond": 100}, **top)
    )
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 503  # the last answer, as it was
    assert len(pair.primary.requests) + len(pair.fallback.requests) == cap
    assert caught.value.response.headers["x-llmgw-attempts"] == str(cap)
    denied = sum(
        proxy.sample("llmgw_retries_denied_total", provider=p, reason="max_attempts") for p in pair.urls
    )
    assert denied >= 1


async def test_a_spent_retry_budget_sends_the_request_to_the_fallback_instead(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    # No ratio and 0.1 retries a second over 10 s: one retry in the window, whatever the traffic.
    retry = {"attempts": 3, "budgetRatio": 0, "budgetMinPerSecond": 0.1, "budgetWindow": 10, **FAST}
    proxy = await start_proxy(pair.doc(key_file, primary={"retry": retry}))
    pair.primary.plan(fake_provider.Fault(status=503, times=0))
    for _ in range(3):
        raw = await proxy.async_client().chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES
        )
        assert raw.headers["x-llmgw-provider"] == "fallback"
    # 3 first tries and the one retry the budget held; without it, 3 tries for each request.
    assert len(pair.primary.requests) == 4
    assert proxy.sample("llmgw_retries_total", provider="primary") == 1
    assert proxy.sample("llmgw_retries_denied_total", provider="primary", reason="budget") == 3


async def test_the_retry_budget_grows_with_the_requests(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    retry = {"attempts": 2, "budgetRatio": 0.5, "budgetMinPerSecond": 0, "budgetWindow": 60, **FAST}
    proxy = await start_proxy(pair.doc(key_file, primary={"retry": retry}))
    pair.primary.plan(fake_provider.Fault(status=503, times=0))
    for _ in range(4):
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    # Retries may reach half the requests: after requests 2 and 4 (1 of 2, then 2 of 4).
    assert proxy.sample("llmgw_retries_total", provider="primary") == 2
    assert len(pair.primary.requests) == 6
