"""POST /v1/messages to provider kind anthropic, with the official ``anthropic`` client as the caller."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import aiohttp
import anthropic
import pytest

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import StartProxy

    from apis.conftest import Fakes, MakeAnthropic

CALLER_KEY = "caller-key-not-forwarded"
ROUTE = [{"model": "claude-x", "targets": [{"provider": "claude"}, {"provider": "claude2"}]}]
REPLY_WORDS = len(fake_provider.REPLY.split())
MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "say hello"}]
PROMPT = 3  # the fake counts words in the messages: "user", "say", "hello"
TOKENS = {"route": "claude-x", "provider": "claude", "model": "claude-x"}


async def test_a_plain_message_goes_with_the_provider_key_and_version_and_counts_its_usage(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, secret: str, make_anthropic: MakeAnthropic
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = make_anthropic(proxy.url)
    message = await client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES)
    assert message.content[0].type == "text"
    assert message.content[0].text == fake_provider.REPLY
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT, REPLY_WORDS)
    received = fakes.fakes["claude"].requests[-1]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == secret
    assert received.headers["anthropic-version"] == client.default_headers["anthropic-version"]
    assert CALLER_KEY not in str(received.headers)
    assert "Authorization" not in received.headers
    assert proxy.sample("llmgw_tokens_total", kind="prompt", **TOKENS) == PROMPT
    assert proxy.sample("llmgw_tokens_total", kind="completion", **TOKENS) == REPLY_WORDS


ORDER = [
    "message_start",
    "content_block_start",
    "ping",
    *["content_block_delta"] * REPLY_WORDS,
    "content_block_stop",
    "message_delta",
    "message_stop",
]


async def test_a_streamed_message_relays_every_event_in_order_and_settles_input_and_output_tokens(
    start_proxy: StartProxy,
    fakes: Fakes,
    key_file: pathlib.Path,
    make_anthropic: MakeAnthropic,
    http: aiohttp.ClientSession,
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    client = make_anthropic(proxy.url)
    stream = await client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [e for e in ORDER if e != "ping"]  # the SDK drops pings
    body = {"model": "claude-x", "max_tokens": 64, "messages": MESSAGES, "stream": True}
    async with http.post(proxy.url + "/v1/messages", json=body) as resp:
        wire = [line[7:] for line in (await resp.text()).splitlines() if line.startswith("event: ")]
    assert wire == ORDER
    async with client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as helper:
        final = await helper.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == fake_provider.REPLY
    # Input from message_start, output from message_delta: all three streams counted.
    assert proxy.sample("llmgw_tokens_total", kind="prompt", **TOKENS) == 3 * PROMPT
    assert proxy.sample("llmgw_tokens_total", kind="completion", **TOKENS) == 3 * REPLY_WORDS


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_the_reservation_holds_max_tokens_and_settles_on_the_reported_usage(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, make_anthropic: MakeAnthropic, stream: bool
) -> None:
    route = [{"model": "claude-x", "targets": [{"provider": "claude"}]}]
    policies = {"claude": {"rateLimit": {"tokensPerMinute": 2000}}}
    proxy = await start_proxy(fakes.doc(key_file, route, policies))
    client = make_anthropic(proxy.url)
    for _ in range(2):
        if stream:
            async with client.messages.stream(model="claude-x", max_tokens=1000, messages=MESSAGES) as events:
                assert (await events.get_final_message()).stop_reason == "end_turn"
        else:
            message = await client.messages.create(model="claude-x", max_tokens=1000, messages=MESSAGES)
            assert message.stop_reason == "end_turn"
    with pytest.raises(anthropic.RateLimitError) as refused:
        await client.messages.create(model="claude-x", max_tokens=2500, messages=MESSAGES)
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "The request needs more tokens than the gateway's rate limit can ever grant",
        },
    }
    assert len(fakes.fakes["claude"].requests) == 2


@pytest.mark.parametrize(
    ("doc_model", "exception", "kind"),
    [
        pytest.param("nope", anthropic.NotFoundError, "not_found_error", id="unknown-model"),
        pytest.param("gpt-x", anthropic.NotFoundError, "not_found_error", id="an-openai-route"),
    ],
)
async def test_the_sidecars_own_errors_come_in_anthropics_shape(
    start_proxy: StartProxy,
    fakes: Fakes,
    key_file: pathlib.Path,
    make_anthropic: MakeAnthropic,
    doc_model: str,
    exception: type[anthropic.APIStatusError],
    kind: str,
) -> None:
    routes = [*ROUTE, {"model": "gpt-x", "targets": [{"provider": "openai"}]}]
    proxy = await start_proxy(fakes.doc(key_file, routes))
    with pytest.raises(exception) as refused:
        await make_anthropic(proxy.url).messages.create(model=doc_model, max_tokens=8, messages=MESSAGES)
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert len(fakes.fakes["openai"].requests) == 0


async def test_a_bad_body_is_refused_in_anthropics_shape(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    async with http.post(
        proxy.url + "/v1/messages", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]


async def test_an_openai_request_never_reaches_an_anthropic_route(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    chat = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(proxy.url + "/v1/chat/completions", json=chat) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "endpoint_not_served"
    assert len(fakes.fakes["claude"].requests) == 0


async def test_overloaded_529_falls_back_like_a_503(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, make_anthropic: MakeAnthropic
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTE))
    fakes.fakes["claude"].plan(fake_provider.Fault(status=529))
    raw = await make_anthropic(proxy.url).messages.with_raw_response.create(
        model="claude-x", max_tokens=8, messages=MESSAGES
    )
    assert raw.headers["x-llmgw-provider"] == "claude2"
    assert len(fakes.fakes["claude"].requests) == 1


async def test_overloaded_529_is_retried_and_opens_the_breaker_like_a_503(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, make_anthropic: MakeAnthropic
) -> None:
    route = [{"model": "claude-x", "targets": [{"provider": "claude"}]}]
    policies = {
        "claude": {
            "retry": {"attempts": 2, "baseBackoff": 0.01, "maxBackoff": 0.01},
            "circuitBreaker": {"consecutiveFailures": 2, "openDuration": 60},
        }
    }
    proxy = await start_proxy(fakes.doc(key_file, route, policies))
    client = make_anthropic(proxy.url)
    fakes.fakes["claude"].plan(fake_provider.Fault(status=529, times=2))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        await client.messages.create(model="claude-x", max_tokens=8, messages=MESSAGES)
    assert overloaded.value.status_code == 529
    assert len(fakes.fakes["claude"].requests) == 2  # retried once
    with pytest.raises(anthropic.APIStatusError) as open_:
        await client.messages.create(model="claude-x", max_tokens=8, messages=MESSAGES)
    assert open_.value.status_code == 503
    assert open_.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": open_.value.body["error"]["message"]},  # type: ignore[index]
    }
    assert len(fakes.fakes["claude"].requests) == 2  # the open breaker kept it away


async def test_a_stream_that_breaks_after_its_first_event_ends_with_an_error_event_the_client_raises(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, make_anthropic: MakeAnthropic
) -> None:
    policies = {"claude": {"timeouts": {"connect": 2, "firstByte": 1, "total": 1}}}
    proxy = await start_proxy(fakes.doc(key_file, ROUTE, policies))
    fakes.fakes["claude"].plan(fake_provider.Fault(stall_mid_stream=3))
    client = make_anthropic(proxy.url)
    stream = await client.messages.create(model="claude-x", max_tokens=8, messages=MESSAGES, stream=True)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as broke:
        async for event in stream:
            seen.append(event.type)
    assert seen[0] == "message_start"
    assert "did not answer in time" in str(broke.value)


async def test_the_anthropic_version_header_is_set_when_the_caller_sends_none(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    policies = {"claude2": {"apiVersion": "2099-01-01"}}
    routes = [
        {"model": "claude-x", "targets": [{"provider": "claude"}]},
        {"model": "claude-y", "targets": [{"provider": "claude2"}]},
    ]
    proxy = await start_proxy(fakes.doc(key_file, routes, policies))
    for model in ("claude-x", "claude-y"):
        body = {"model": model, "max_tokens": 8, "messages": MESSAGES}
        async with http.post(proxy.url + "/v1/messages", json=body) as resp:
            assert resp.status == 200
    assert fakes.fakes["claude"].requests[-1].headers["anthropic-version"] == "2023-06-01"
    assert fakes.fakes["claude2"].requests[-1].headers["anthropic-version"] == "2099-01-01"


async def test_models_lists_each_familys_routes_in_its_own_shape(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, make_anthropic: MakeAnthropic
) -> None:
    routes = [*ROUTE, {"model": "gpt-x", "targets": [{"provider": "openai"}]}]
    proxy = await start_proxy(fakes.doc(key_file, routes))
    claude_models = [m.id async for m in make_anthropic(proxy.url).models.list()]
    assert claude_models == ["claude-x"]
    openai_models = [m.id async for m in proxy.async_client().models.list()]
    assert openai_models == ["gpt-x"]
    one = await make_anthropic(proxy.url).models.retrieve("claude-x")
    assert (one.id, one.type) == ("claude-x", "model")
    with pytest.raises(anthropic.NotFoundError):
        await make_anthropic(proxy.url).models.retrieve("gpt-x")
