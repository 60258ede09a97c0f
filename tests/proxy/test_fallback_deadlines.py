"""Fallback until a stream's first event, error codes that move on, and the request's deadlines."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider
from llmgw_proxy import config

if TYPE_CHECKING:
    from conftest import Pair, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
FIRST_WORD = fake_provider.REPLY.split()[0]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(fake_provider.Fault(stall_first_event=3), id="stalls-after-headers"),
        pytest.param(fake_provider.Fault(reset_first_event=True), id="drops-after-headers"),
        pytest.param(fake_provider.Fault(error_event=True), id="error-event-first"),
    ],
)
async def test_a_stream_that_fails_before_its_first_event_falls_back(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, fault: fake_provider.Fault
) -> None:
    primary = {"timeouts": {"connect": 2, "firstByte": 2, "firstEvent": 0.5, "total": 5}}
    proxy = await start_proxy(pair.doc(key_file, primary=primary))
    pair.primary.plan(fault)
    raw = await proxy.async_client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True
    )
    chunks = [c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]
    assert "".join(chunks) == fake_provider.REPLY
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert raw.headers["x-llmgw-attempts"] == "2"
    assert len(pair.primary.requests) == len(pair.fallback.requests) == 1


async def test_after_its_first_event_a_silent_stream_ends_with_an_error_event_not_a_fallback(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    primary = {"timeouts": {"connect": 2, "firstByte": 2, "streamIdle": 0.3, "total": 5}}
    proxy = await start_proxy(pair.doc(key_file, primary=primary))
    pair.primary.plan(fake_provider.Fault(stall_mid_stream=3))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="stream_idle timeout"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == [FIRST_WORD]  # the first event reached the caller: the stream was its own
    assert len(pair.fallback.requests) == 0


async def test_total_bounds_the_retries_of_one_target(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    # Each try would get firstByte (0.6 s); the second one only gets what is left of the 1 s total.
    primary = {
        "timeouts": {"connect": 1, "firstByte": 0.6, "total": 1},
        "retry": {"attempts": 3, "baseBackoff": 0.01, "maxBackoff": 0.02},
    }
    doc = pair.doc(key_file, primary=primary)
    doc["routes"] = [{"model": "*", "targets": [{"provider": "primary"}]}]
    proxy = await start_proxy(doc)
    pair.primary.plan(fake_provider.Fault(stall=3, times=0))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert "(total timeout)" in caught.value.message
    assert len(pair.primary.requests) == 2


async def test_total_bounds_the_request_across_fallbacks(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    # The primary takes the whole 1 s total; the fallback's total counts from the same arrival.
    timeouts = {"connect": 1, "firstByte": 5, "total": 1}
    proxy = await start_proxy(
        pair.doc(key_file, primary={"timeouts": timeouts}, fallback={"timeouts": timeouts})
    )
    pair.primary.plan(fake_provider.Fault(stall=3))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert len(pair.primary.requests) == 1
    assert len(pair.fallback.requests) == 0


def coded(pair: Pair, key_file: pathlib.Path, codes: list[str]) -> dict[str, Any]:
    retry = {"attempts": 2, "fallbackOnErrorCodes": codes}
    return pair.doc(key_file, primary={"retry": retry}, fallback={"retry": retry})


@pytest.mark.parametrize("stream", [pytest.param(False, id="plain"), pytest.param(True, id="stream")])
async def test_a_listed_error_code_moves_to_the_next_target_without_a_retry(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path, stream: bool
) -> None:
    proxy = await start_proxy(coded(pair, key_file, ["content_filter", "context_length_exceeded"]))
    pair.primary.plan(fake_provider.Fault(status=400, code="context_length_exceeded"))
    raw = await proxy.async_client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=stream
    )
    assert raw.headers["x-llmgw-provider"] == "fallback"
    assert raw.headers["x-llmgw-attempts"] == "2"
    assert len(pair.primary.requests) == 1


async def test_when_every_target_answers_a_listed_code_the_caller_gets_the_last_answer(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(coded(pair, key_file, ["context_length_exceeded"]))
    for fake in (pair.primary, pair.fallback):
        fake.plan(fake_provider.Fault(status=400, code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.response.headers["x-llmgw-provider"] == "fallback"


async def test_an_unlisted_error_code_is_answered_as_is(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(coded(pair, key_file, ["content_filter"]))
    pair.primary.plan(fake_provider.Fault(status=400, code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.code == "context_length_exceeded"
    assert len(pair.fallback.requests) == 0


async def test_a_wait_for_capacity_past_the_deadline_sends_nothing_and_blames_no_provider(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    # One request per second, and up to 2 s of waiting for it: the second request's wait
    # outlasts its 0.5 s total. It must not go out with no time left and fail the breaker.
    primary = {
        "timeouts": {"connect": 1, "firstByte": 1, "total": 0.5},
        "rateLimit": {"requestsPerMinute": 60, "requestBurst": 1, "maxWait": 2},
        "circuitBreaker": {"consecutiveFailures": 1, "openDuration": 30},
    }
    doc = pair.doc(key_file, primary=primary)
    doc["routes"] = [{"model": "*", "targets": [{"provider": "primary"}]}]
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    await client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert len(pair.primary.requests) == 1
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 0


async def test_an_error_event_in_place_of_the_first_event_is_a_breaker_failure(
    start_proxy: StartProxy, pair: Pair, key_file: pathlib.Path
) -> None:
    doc = pair.doc(key_file, primary={"circuitBreaker": {"consecutiveFailures": 1, "openDuration": 30}})
    proxy = await start_proxy(doc)
    pair.primary.plan(fake_provider.Fault(error_event=True))
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        pass
    assert proxy.sample("llmgw_breaker_state", provider="primary") == 2


@pytest.mark.parametrize(
    "codes",
    [
        pytest.param(["context length"], id="space"),
        pytest.param(["x" * 65], id="too-long"),
        pytest.param([""], id="empty"),
        pytest.param([f"code{i}" for i in range(33)], id="too-many"),
    ],
)
def test_the_config_refuses_error_codes_it_could_not_match_or_bound(codes: list[str]) -> None:
    doc = {
        "providers": {"p": {"baseUrl": "http://127.0.0.1:1/v1", "retry": {"fallbackOnErrorCodes": codes}}},
        "routes": [{"model": "*", "targets": [{"provider": "p"}]}],
    }
    with pytest.raises(pydantic.ValidationError, match="fallbackOnErrorCodes"):
        config.parse(doc)
