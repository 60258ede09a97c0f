"""POST /v1/responses through a real sidecar, with the official ``openai`` client as the caller."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import aiohttp
import openai
import pytest

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import StartProxy

    from apis.conftest import Fakes

ROUTE = [{"model": "gpt-x", "targets": [{"provider": "openai"}, {"provider": "openai2"}]}]
REPLY_WORDS = len(fake_provider.REPLY.split())


async def test_a_plain_response_comes_back_with_its_usage_and_the_provider_key(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, secret: str
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = proxy.async_client()
    response = await client.responses.create(model="gpt-x", input="say hello", store=False)
    assert response.output_text == fake_provider.REPLY
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, REPLY_WORDS)
    received = fakes.fakes["openai"].requests[-1]
    assert received.path == "/v1/responses"
    assert received.headers["Authorization"] == f"Bearer {secret}"
    tokens = {"route": "gpt-x", "provider": "openai", "model": "gpt-x"}
    assert proxy.sample("llmgw_tokens_total", kind="completion", **tokens) == REPLY_WORDS
    assert proxy.sample("llmgw_tokens_total", kind="prompt", **tokens) == 2


STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * REPLY_WORDS,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


async def test_a_streamed_response_relays_every_typed_event_in_order_and_counts_its_usage(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = proxy.async_client()
    stream = await client.responses.create(model="gpt-x", input="say hello", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == STREAM_ORDER
    assert [e.sequence_number for e in events] == list(range(len(STREAM_ORDER)))
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == fake_provider.REPLY
    tokens = {"route": "gpt-x", "provider": "openai", "model": "gpt-x"}
    assert proxy.sample("llmgw_tokens_total", kind="completion", **tokens) == REPLY_WORDS


def _limited(tokens_per_minute: int) -> dict[str, dict[str, object]]:
    return {"openai": {"rateLimit": {"tokensPerMinute": tokens_per_minute}}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_the_reservation_holds_max_output_tokens_and_settles_on_the_reported_usage(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, stream: bool
) -> None:
    # 2000 tokens a minute: one request reserving ~1000 fits twice only if the first was settled
    # on its real usage (about 15 tokens); one asking for more than the bucket can hold never fits.
    route = [{"model": "gpt-x", "targets": [{"provider": "openai"}]}]
    proxy = await start_proxy(fakes.doc(key_file, route, _limited(2000)))
    client = proxy.async_client()
    for _ in range(2):
        if stream:
            events = await client.responses.create(
                model="gpt-x", input="hi", max_output_tokens=1000, stream=True
            )
            assert [e.type async for e in events][-1] == "response.completed"
        else:
            answer = await client.responses.create(model="gpt-x", input="hi", max_output_tokens=1000)
            assert answer.status == "completed"
    with pytest.raises(openai.RateLimitError) as refused:
        await client.responses.create(model="gpt-x", input="hi", max_output_tokens=2500)
    assert "can ever grant" in str(refused.value)
    assert len(fakes.fakes["openai"].requests) == 2


async def test_a_stored_response_is_pinned_to_the_fallback_that_created_it(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = proxy.async_client()
    primary, fallback = fakes.fakes["openai"], fakes.fakes["openai2"]
    primary.plan(fake_provider.Fault(status=503))
    first = await client.responses.with_raw_response.create(model="gpt-x", input="remember this")
    assert first.headers["x-llmgw-provider"] == "openai2"
    created = first.parse()
    # The primary is healthy again, and would not know the conversation: the next turn stays put.
    follow = await client.responses.with_raw_response.create(
        model="gpt-x", input="go on", previous_response_id=created.id
    )
    assert follow.headers["x-llmgw-provider"] == "openai2"
    assert follow.parse().previous_response_id == created.id
    read = await client.responses.with_raw_response.retrieve(created.id)
    assert read.headers["x-llmgw-provider"] == "openai2"
    assert read.parse().id == created.id
    assert proxy.live.pins.owner(created.id) == "openai2"
    await client.responses.delete(created.id)
    assert created.id not in fallback.responses.stored
    assert proxy.live.pins.owner(created.id) is None  # deleted at the provider: forgotten here
    assert [r.path for r in primary.requests] == ["/v1/responses"]  # only the failed first try


async def test_a_pinned_call_is_never_sent_to_a_fallback_when_its_provider_fails(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = proxy.async_client()
    created = await client.responses.create(model="gpt-x", input="remember this")
    fakes.fakes["openai"].plan(fake_provider.Fault(status=503))
    with pytest.raises(openai.InternalServerError) as failed:
        await client.responses.create(model="gpt-x", input="go on", previous_response_id=created.id)
    assert failed.value.status_code == 503
    assert fakes.fakes["openai2"].requests == type(fakes.fakes["openai2"].requests)()


async def test_an_unknown_previous_response_goes_to_the_first_target_only(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    # maxPinnedResponses 0: nothing is remembered, as after a restart or on another pod.
    proxy = await start_proxy(fakes.doc(key_file, ROUTE, maxPinnedResponses=0))
    client = proxy.async_client()
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="gpt-x", input="go on", previous_response_id="resp_elsewhere")
    assert len(fakes.fakes["openai"].requests) == 1
    assert len(fakes.fakes["openai2"].requests) == 0


async def test_a_failing_primary_falls_back_before_the_first_byte_plain_and_streamed(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = proxy.async_client()
    fakes.fakes["openai"].plan(fake_provider.Fault(status=500, times=2))
    plain = await client.responses.with_raw_response.create(model="gpt-x", input="hi", store=False)
    assert plain.headers["x-llmgw-provider"] == "openai2"
    streamed = await client.responses.with_raw_response.create(model="gpt-x", input="hi", stream=True)
    assert streamed.headers["x-llmgw-provider"] == "openai2"
    assert [e.type async for e in streamed.parse()][-1] == "response.completed"


def _cached(**policy: object) -> dict[str, dict[str, object]]:
    return {"openai": {"cache": {"enabled": True, **policy}}}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"store": False, "temperature": 0}, "HIT", id="deterministic-and-not-stored"),
        pytest.param({"temperature": 0}, "BYPASS", id="stored-by-default"),
        pytest.param({"store": False}, "BYPASS", id="not-deterministic"),
        pytest.param(
            {"store": False, "temperature": 0, "previous_response_id": "resp_x"}, "BYPASS", id="stored-state"
        ),
    ],
)
async def test_the_cache_answers_only_deterministic_requests_that_store_nothing(
    start_proxy: StartProxy,
    fakes: Fakes,
    key_file: pathlib.Path,
    http: aiohttp.ClientSession,
    extra: dict[str, object],
    expected: str,
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE, _cached()))
    fakes.fakes["openai"].responses.stored["resp_x"] = {}
    body = {"model": "gpt-x", "input": "hi", **extra}
    seen = []
    for _ in range(2):
        async with http.post(proxy.url + "/v1/responses", json=body) as resp:
            assert resp.status == 200
            seen.append(resp.headers["x-llmgw-cache"])
    assert seen[1] == expected


async def test_a_streamed_response_is_cached_and_replayed_as_the_same_stream(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE, _cached()))
    client = proxy.async_client()
    replies = []
    for _ in range(2):
        raw = await client.responses.with_raw_response.create(
            model="gpt-x", input="hi", store=False, temperature=0, stream=True
        )
        replies.append((raw.headers["x-llmgw-cache"], [e.type async for e in raw.parse()]))
    assert replies[0] == ("MISS", STREAM_ORDER)
    assert replies[1] == ("HIT", STREAM_ORDER)
    plain = await client.responses.with_raw_response.create(
        model="gpt-x", input="hi", store=False, temperature=0
    )
    assert plain.headers["x-llmgw-cache"] == "MISS"  # a plain request is keyed apart from the stream
    assert plain.parse().output_text == fake_provider.REPLY


async def test_a_stream_that_breaks_after_its_first_event_ends_with_an_error_event_the_client_raises(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    policies = {"openai": {"timeouts": {"connect": 2, "firstByte": 1, "total": 1}}}
    proxy = await start_proxy(fakes.doc(key_file, ROUTE, policies))
    fakes.fakes["openai"].plan(fake_provider.Fault(stall_mid_stream=3))
    client = proxy.async_client()
    stream = await client.responses.create(model="gpt-x", input="hi", stream=True)
    seen = []
    with pytest.raises(openai.APIError) as broke:
        async for event in stream:
            seen.append(event.type)
    assert seen[0] == "response.created"
    assert "did not answer in time" in broke.value.message


async def test_a_route_that_does_not_declare_responses_answers_404(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    route = [{"model": "gpt-x", "targets": [{"provider": "openai"}], "endpoints": ["chat/completions"]}]
    proxy = await start_proxy(fakes.doc(key_file, route))
    with pytest.raises(openai.NotFoundError) as refused:
        await proxy.async_client().responses.create(model="gpt-x", input="hi")
    assert refused.value.code == "endpoint_not_served"
    assert len(fakes.fakes["openai"].requests) == 0
