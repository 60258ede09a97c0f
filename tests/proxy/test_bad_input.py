"""Malformed requests get an OpenAI-shaped error with the right status, never a traceback."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import pytest

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy

JSON = {"Content-Type": "application/json"}


def assert_openai_shaped(body: bytes, code: str) -> None:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == code
    assert "Traceback" not in error["message"]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "code"),
    [
        pytest.param("/v1/chat/completions", JSON, b"{not json", 400, "invalid_json", id="invalid-json"),
        pytest.param(
            "/v1/chat/completions", JSON, b"[1, 2]", 400, "invalid_request", id="json-not-an-object"
        ),
        pytest.param(
            "/v1/chat/completions", JSON, b'{"messages": []}', 400, "missing_model", id="missing-model"
        ),
        pytest.param(
            "/v1/chat/completions", JSON, b'{"model": 7}', 400, "missing_model", id="model-not-a-string"
        ),
        pytest.param(
            "/v1/chat/completions",
            {"Content-Type": "text/plain"},
            b'{"model": "m"}',
            415,
            "unsupported_media_type",
            id="wrong-content-type",
        ),
        pytest.param(
            "/v1/embeddings", {}, b'{"model": "m"}', 415, "unsupported_media_type", id="no-content-type"
        ),
        # Under /v1/ a path is a relayed endpoint, served only when a route declares it.
        pytest.param("/v1/nothing-here", JSON, b"{}", 404, "endpoint_not_served", id="undeclared-path"),
        pytest.param("/nothing-here", JSON, b"{}", 404, "unknown_url", id="unknown-path"),
    ],
)
async def test_refuses_malformed_input(
    proxy: Proxy,
    http: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    async with http.post(proxy.url + path, data=body, headers=headers) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        assert_openai_shaped(await resp.read(), code)


async def test_refuses_a_wrong_method_with_405(proxy: Proxy, http: aiohttp.ClientSession) -> None:
    async with http.get(proxy.url + "/v1/chat/completions") as resp:
        assert resp.status == 405
        assert_openai_shaped(await resp.read(), "method_not_allowed")


async def test_refuses_a_body_over_the_limit_with_413_before_reading_it(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    proxy = await start_proxy(make_doc(upstream, key_file, maxBodyBytes=2048))
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    # Announce 1 GB but send only the headers: the answer must come from the header alone.
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert head.startswith(b"HTTP/1.1 413")
    writer.close()
    await writer.wait_closed()
    assert not fake.requests


async def test_refuses_a_chunked_body_over_the_limit_with_413(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    proxy = await start_proxy(make_doc(upstream, key_file, maxBodyBytes=2048))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    async with http.post(proxy.url + "/v1/chat/completions", data=body(), headers=JSON) as resp:
        assert resp.status == 413
        assert_openai_shaped(await resp.read(), "request_too_large")


async def test_answers_503_until_a_config_with_keys_is_loaded(
    start_proxy: StartProxy,
    upstream: str,
    tmp_path: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    proxy = await start_proxy(make_doc(upstream, tmp_path / "not-yet-mounted"))
    async with http.post(proxy.url + "/v1/chat/completions", json={"model": "m"}) as resp:
        assert resp.status == 503
        assert_openai_shaped(await resp.read(), "not_ready")
    async with http.get(proxy.admin_url + "/readyz") as resp:
        assert resp.status == 503
