"""Hostile callers: bodies and names built to break the parser, the metrics or the upstream URL."""

from __future__ import annotations

import gzip
import json
import pathlib
import zlib
from typing import TYPE_CHECKING

import aiohttp
import openai
import pytest

from llmgw_dev import fake_provider
from llmgw_proxy.steps import parse

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy

JSON = {"Content-Type": "application/json"}
CHAT = "/v1/chat/completions"


def error_of(body: bytes) -> dict[str, str]:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "code"}
    assert "Traceback" not in error["message"]
    return dict(error)


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return ('{"model": "m", "x": ' + opener * depth + closer * depth + "}").encode()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(nested(100_000), "json_too_deep", id="deep-arrays"),
        pytest.param(
            ('{"model": "m", "x": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}").encode(),
            "json_too_deep",
            id="deep-objects",
        ),
        pytest.param(nested(parse.MAX_JSON_DEPTH), "json_too_deep", id="one-past-the-bound"),
        pytest.param(
            b'{"model": "m", "x": NaN, "y": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            "json_too_deep",
            id="deep-and-only-the-json-module-decodes-it",
        ),
        pytest.param(b'{"model": "m", "stream": "yes"}', "invalid_type", id="stream-not-a-boolean"),
        pytest.param(b'{"model": "m", "messages": {"a": 1}}', "invalid_type", id="messages-not-an-array"),
        pytest.param(b'{"model": "m", "max_tokens": 1e400}', "invalid_type", id="max-tokens-infinite"),
        pytest.param(
            b'{"model": "m", "max_tokens": ' + b"9" * 400 + b"}", "invalid_type", id="max-tokens-huge"
        ),
        pytest.param(b'{"model": "m", "n": -1}', "invalid_type", id="n-negative"),
        pytest.param(
            b'{"model": "m", "stream_options": 3}', "invalid_type", id="stream-options-not-an-object"
        ),
        pytest.param(b'{"model": "m", "model": "other"}', "duplicate_key", id="model-twice"),
        pytest.param(b'{"model": "m", "mod\\u0065l": "other"}', "duplicate_key", id="model-twice-escaped"),
        pytest.param(b'{"model": "m", "stream": false, "stream": true}', "duplicate_key", id="stream-twice"),
        pytest.param(
            b'{"model": "m", "x": 1' + b"0" * 5000 + b"}", "invalid_json", id="int-past-python-limit"
        ),
        pytest.param(b'"just a string"', "invalid_request", id="top-level-string"),
        pytest.param(b"null", "invalid_request", id="top-level-null"),
        pytest.param(
            b'{"model": "' + b"m" * (parse.MAX_MODEL_NAME + 1) + b'"}', "model_name_too_long", id="long-model"
        ),
    ],
)
async def test_refuses_a_hostile_body_with_400(
    proxy: Proxy, http: aiohttp.ClientSession, fake: fake_provider.FakeProvider, body: bytes, code: str
) -> None:
    async with http.post(proxy.url + CHAT, data=body, headers=JSON) as resp:
        assert resp.status == 400, await resp.text()
        error = error_of(await resp.read())
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert not fake.requests


async def test_takes_a_body_nested_to_the_bound_and_a_long_allowed_model_name(
    proxy: Proxy, http: aiohttp.ClientSession, fake: fake_provider.FakeProvider
) -> None:
    body = nested(parse.MAX_JSON_DEPTH - 1)  # the body's own object is one level
    async with http.post(proxy.url + CHAT, data=body, headers=JSON) as resp:
        assert resp.status == 200, await resp.text()
    name = "m" * parse.MAX_MODEL_NAME
    async with http.post(proxy.url + CHAT, json={"model": name, "messages": []}) as resp:
        assert resp.status == 200, await resp.text()
    assert fake.requests[-1].body["model"] == name


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
    ],
)
async def test_decodes_a_compressed_body(
    proxy: Proxy,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
    encoding: str,
    compress: object,
) -> None:
    assert callable(compress)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi " * 1000}]}).encode()
    headers = {**JSON, "Content-Encoding": encoding}
    async with http.post(proxy.url + CHAT, data=compress(body), headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    received = fake.requests[-1]
    assert received.body["messages"][0]["content"] == "hi " * 1000
    assert "Content-Encoding" not in received.headers and "content-encoding" not in received.headers


async def test_refuses_a_compressed_body_that_expands_past_the_limit_with_413(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
) -> None:
    proxy = await start_proxy(make_doc(upstream, key_file, maxBodyBytes=64 * 1024))
    bomb = gzip.compress(b'{"model": "m", "x": "' + b" " * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024
    headers = {**JSON, "Content-Encoding": "gzip"}
    async with http.post(proxy.url + CHAT, data=bomb, headers=headers) as resp:
        assert resp.status == 413
        assert error_of(await resp.read())["code"] == "request_too_large"
    assert not fake.requests


@pytest.mark.parametrize(
    ("encoding", "data", "status", "code"),
    [
        ("br", b"xx", 415, "unsupported_content_encoding"),
        ("gzip", b"not gzip at all", 400, "invalid_encoding"),
        ("gzip", gzip.compress(b'{"model": "m"}')[:-6], 400, "invalid_encoding"),
        ("gzip", gzip.compress(b'{"model": "m"}') + b"junk", 400, "invalid_encoding"),
    ],
)
async def test_refuses_a_bad_encoding(
    proxy: Proxy, http: aiohttp.ClientSession, encoding: str, data: bytes, status: int, code: str
) -> None:
    headers = {**JSON, "Content-Encoding": encoding}
    async with http.post(proxy.url + CHAT, data=data, headers=headers) as resp:
        assert resp.status == status
        assert error_of(await resp.read())["code"] == code


async def test_the_openai_client_gets_a_bad_request_error_for_a_deep_body(proxy: Proxy) -> None:
    deep: object = []
    for _ in range(500):  # what the client itself can still encode
        deep = [deep]
    client = proxy.async_client()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[], extra_body={"x": deep})
    assert caught.value.code == "json_too_deep"
