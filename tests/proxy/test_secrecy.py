"""The provider key never leaves the sidecar: not in answers, log lines or metrics."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider
from llmgw_proxy.runtime import keys

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "a secret prompt text"}]


async def drive_every_outcome(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> list[bytes]:
    """Successes, streams, upstream faults and bad input; returns every raw response seen."""
    seen: list[bytes] = []
    client = proxy.async_client()
    raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    seen.append(str(raw.headers).encode() + raw.content)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for chunk in stream:
        seen.append(chunk.model_dump_json().encode())
    for fault in (
        fake_provider.Fault(status=401),
        fake_provider.Fault(reset=True),
        fake_provider.Fault(status=500),
    ):
        fake.plan(fault)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        seen.append(str(caught.value.response.headers).encode() + caught.value.response.content)
    for body in (b"{bad", b'{"model": 1}'):
        async with http.post(
            proxy.url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            seen.append(str(resp.headers).encode() + await resp.read())
    for path in ("/metrics", "/readyz", "/healthz", "/status"):
        async with http.get(proxy.admin_url + path) as resp:
            seen.append(await resp.read())
    return seen


async def test_no_response_log_line_or_metric_contains_the_key(
    proxy: Proxy,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
    secret: str,
    log_lines: Callable[[], list[str]],
) -> None:
    seen = await drive_every_outcome(proxy, fake, http)
    assert len(fake.requests) >= 5  # the upstream did receive the key on every call
    assert all(r.headers["Authorization"] == f"Bearer {secret}" for r in fake.requests)
    for blob in seen:
        assert secret.encode() not in blob
    lines = log_lines()
    assert any('"msg": "request"' in line for line in lines)
    for line in lines:
        assert secret not in line
        assert "a secret prompt text" not in line  # prompts stay out of info logs too
        assert "caller-key-not-forwarded" not in line
    assert secret not in proxy.metrics_text()


async def test_a_key_object_hides_its_value_from_repr_and_format() -> None:
    key = keys.Key("sk-hidden")
    assert "sk-hidden" not in repr(key) and "sk-hidden" not in f"{key}" and "sk-hidden" not in str([key])
    assert key.reveal() == "sk-hidden"


@pytest.mark.parametrize(
    ("content", "message"),
    [pytest.param("", "is empty", id="empty-file"), pytest.param(None, "cannot read", id="missing-file")],
)
def test_an_unusable_key_file_is_reported_without_its_content(
    tmp_path: pathlib.Path, content: str | None, message: str
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(keys.KeyFileError, match=message):
        keys.read(str(path))


async def test_an_unreachable_provider_error_names_no_key(
    start_proxy: StartProxy, key_file: pathlib.Path, make_doc: MakeDoc, secret: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = await start_proxy(make_doc(f"http://127.0.0.1:{port}/v1", key_file))
    with pytest.raises(openai.InternalServerError) as caught:
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert secret not in caught.value.response.text


async def test_no_answer_log_line_or_metric_contains_the_key_with_every_policy_on(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
    secret: str,
    log_lines: Callable[[], list[str]],
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(
        rateLimit={"requestsPerMinute": 6000, "tokensPerMinute": 1_000_000},
        circuitBreaker={"consecutiveFailures": 1, "openDuration": 30},
        retry={"attempts": 2, "baseBackoff": 0.01},
        cache={"enabled": True},  # deterministic: these requests bypass it, so faults reach the upstream
    )
    proxy = await start_proxy(doc)
    seen = await drive_every_outcome(proxy, fake, http)
    assert proxy.sample("llmgw_breaker_state", provider="fake") == 2  # the reset opened it: 503s were seen
    for blob in seen:
        assert secret.encode() not in blob
    lines = log_lines()
    assert any('"msg": "breaker"' in line for line in lines)
    assert all(secret not in line for line in lines)
    assert secret not in proxy.metrics_text()
