"""Upstream faults reach the caller as the status the openai client maps to the right exception."""

from __future__ import annotations

import pathlib
import socket
from typing import TYPE_CHECKING

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("fault", "exception", "status"),
    [
        pytest.param(fake_provider.Fault(status=400), openai.BadRequestError, 400, id="upstream-400"),
        pytest.param(fake_provider.Fault(status=401), openai.AuthenticationError, 401, id="upstream-401"),
        pytest.param(
            fake_provider.Fault(status=429, retry_after=7), openai.RateLimitError, 429, id="upstream-429"
        ),
        pytest.param(fake_provider.Fault(status=500), openai.InternalServerError, 500, id="upstream-500"),
        pytest.param(fake_provider.Fault(status=503), openai.InternalServerError, 503, id="upstream-503"),
        pytest.param(fake_provider.Fault(reset=True), openai.InternalServerError, 502, id="connection-reset"),
        pytest.param(
            fake_provider.Fault(stall=30), openai.InternalServerError, 504, id="stall-before-headers"
        ),
    ],
)
@pytest.mark.parametrize("stream", [pytest.param(False, id="plain"), pytest.param(True, id="stream")])
async def test_maps_each_upstream_fault_to_the_matching_client_exception(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    fault: fake_provider.Fault,
    exception: type[openai.APIStatusError],
    status: int,
    stream: bool,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["timeouts"] = {"connect": 1, "firstByte": 0.3, "total": 5}
    proxy = await start_proxy(doc)
    fake.plan(fault)
    with pytest.raises(exception) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=stream)
    assert caught.value.status_code == status
    assert caught.value.response.headers["x-llmgw-provider"] == "fake"
    if status == 429:
        assert caught.value.response.headers["Retry-After"] == "7"
    labels = {"route": "*", "provider": "fake", "model": "other", "status": str(status)}
    assert proxy.sample("llmgw_requests_total", **labels) == 1


async def test_passes_the_upstream_error_body_through(proxy: Proxy, fake: fake_provider.FakeProvider) -> None:
    fake.plan(fake_provider.Fault(status=503))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.body == {
        "message": "fake provider failure 503",
        "type": "server_error",
        "code": "503",
    }


async def test_answers_502_when_the_provider_refuses_connections(
    start_proxy: StartProxy, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = await start_proxy(make_doc(f"http://127.0.0.1:{port}/v1", key_file))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_connection_error"


async def test_answers_504_when_the_provider_is_slower_than_the_total_timeout(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["timeouts"] = {"connect": 1, "firstByte": 5, "total": 0.3}
    proxy = await start_proxy(doc)
    fake.plan(fake_provider.Fault(latency=30))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert "total timeout" in caught.value.message
