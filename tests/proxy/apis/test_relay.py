"""Relayed endpoints (audio, images, moderations, files...): declared per route, key added, request
limits and breaker applied, bodies streamed through, with the official ``openai`` client as caller."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest
import yarl

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import StartProxy

    from apis.conftest import Fakes

ENDPOINTS = ["chat/completions", "audio", "images/generations", "moderations", "files"]
ROUTES = [
    {"model": "gpt-x", "targets": [{"provider": "openai"}, {"provider": "openai2"}], "endpoints": ENDPOINTS}
]
AUDIO = b"RIFF" + bytes(range(256)) * 64  # 16 KiB of "audio"


def _policy(**policy: Any) -> dict[str, dict[str, Any]]:
    return {"openai": policy}


async def test_a_multipart_transcription_is_relayed_with_the_provider_key_and_no_caller_key(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, secret: str
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES))
    client = proxy.async_client()
    raw = await client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=("a.wav", AUDIO))
    assert raw.parse().text == f"{len(AUDIO)} bytes of audio heard"
    assert raw.headers["x-llmgw-provider"] == "openai"
    upload = fakes.fakes["openai"].responses.uploads[-1]
    assert upload["path"] == "/v1/audio/transcriptions"
    assert upload["fields"]["model"] == "whisper-1"
    assert upload["sizes"]["file"] == len(AUDIO)
    assert upload["headers"]["Authorization"] == f"Bearer {secret}"
    assert "caller-key" not in str(upload["headers"])
    assert upload["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")


async def test_json_and_get_endpoints_are_relayed_as_the_sdk_sends_them(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES))
    client = proxy.async_client()
    image = await client.images.generate(model="gpt-image-1", prompt="a cat")
    assert image.data is not None and image.data[0].b64_json == "iVBORw0KGgo="
    moderation = await client.moderations.create(model="omni-moderation-latest", input="hello")
    assert moderation.results[0].flagged is False
    created = await client.files.create(file=("batch.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert (created.bytes, created.purpose) == (9, "batch")
    listed = await client.files.list(purpose="batch")
    assert listed.data == []
    received = fakes.fakes["openai"].requests
    assert [(r.method, r.path) for r in received] == [
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/moderations"),
        ("GET", "/v1/files"),
    ]
    assert received[-1].query == {"purpose": "batch"}
    # No token accounting and no cache: nothing is counted as tokens for relayed calls.
    assert "llmgw_tokens_total{" not in proxy.metrics_text()


async def test_an_endpoint_no_route_declares_is_404_and_never_relayed(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    routes = [{"model": "gpt-x", "targets": [{"provider": "openai"}]}]  # the default: modelled endpoints only
    proxy = await start_proxy(fakes.doc(key_file, routes))
    with pytest.raises(openai.NotFoundError) as refused:
        await proxy.async_client().moderations.create(model="omni-moderation-latest", input="hello")
    assert refused.value.code == "endpoint_not_served"
    assert len(fakes.fakes["openai"].requests) == 0


async def test_a_multipart_body_is_streamed_through_not_held_until_it_ends(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES))
    fake = fakes.fakes["openai"].responses
    boundary = "relay-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    first, second = AUDIO[:8192], AUDIO[8192:]

    async def body() -> AsyncIterator[bytes]:
        yield head + first
        # The rest is sent only once the provider has read the first part of the file: a sidecar
        # that held the body until its end would wait here forever (the timeout below fails it).
        await fake.wait_for_bytes(len(first) // 2)
        yield second + f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with asyncio.timeout(10):
        async with http.post(proxy.url + "/v1/audio/transcriptions", data=body(), headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["text"] == f"{len(AUDIO)} bytes of audio heard"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
async def test_a_body_past_max_body_bytes_is_refused_with_413(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession, chunked: bool
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES, maxBodyBytes=4096))
    data = b"x" * 20_000

    async def stream() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 1000):
            yield data[at : at + 1000]

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    async with http.post(
        proxy.url + "/v1/audio/transcriptions", data=stream() if chunked else data, headers=headers
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"
    if not chunked:
        assert fakes.fakes["openai"].responses.uploads == []  # refused from the header


async def test_relayed_calls_take_a_request_from_the_rate_limit_and_no_tokens(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    # One token a minute would refuse any chat request; relayed calls reserve none.
    limit = {"rateLimit": {"requestsPerMinute": 60, "requestBurst": 2, "tokensPerMinute": 1}}
    proxy = await start_proxy(fakes.doc(key_file, ROUTES, _policy(**limit)))
    client = proxy.async_client()
    for _ in range(2):
        await client.moderations.create(model="omni-moderation-latest", input="hello")
    with pytest.raises(openai.RateLimitError):
        await client.moderations.create(model="omni-moderation-latest", input="hello")
    assert len(fakes.fakes["openai"].requests) == 2
    assert len(fakes.fakes["openai2"].requests) == 0  # a relay goes to its route's first target only


async def test_the_breaker_counts_relayed_failures_and_keeps_calls_away_once_open(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path
) -> None:
    breaker = {"circuitBreaker": {"consecutiveFailures": 1, "openDuration": 60}}
    proxy = await start_proxy(fakes.doc(key_file, ROUTES, _policy(**breaker)))
    client = proxy.async_client()
    fakes.fakes["openai"].plan(fake_provider.Fault(status=500))
    with pytest.raises(openai.InternalServerError):
        await client.images.generate(model="gpt-image-1", prompt="a cat")
    with pytest.raises(openai.APIStatusError) as open_:
        await client.images.generate(model="gpt-image-1", prompt="a cat")
    assert open_.value.status_code == 503
    assert open_.value.code == "circuit_open"
    assert len(fakes.fakes["openai"].requests) == 1


async def test_a_modelled_path_with_another_method_is_405_not_relayed(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, [{**ROUTES[0], "endpoints": ["*"]}]))
    async with http.get(proxy.url + "/v1/chat/completions") as resp:
        assert resp.status == 405
    assert len(fakes.fakes["openai"].requests) == 0


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/files/%2e%2e/%2e%2e/admin", id="encoded-dot-segments"),
        pytest.param("/v1/files/x%3Fpurpose=other", id="encoded-query"),
        pytest.param("/v1/files//x", id="empty-segment"),
    ],
)
async def test_a_relayed_path_cannot_leave_v1_at_the_provider(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, http: aiohttp.ClientSession, path: str
) -> None:
    proxy = await start_proxy(fakes.doc(key_file, ROUTES))
    async with http.get(yarl.URL(proxy.url + path, encoded=True)) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_path"
    assert len(fakes.fakes["openai"].requests) == 0
