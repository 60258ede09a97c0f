"""Hostile callers: bodies and names built to break the parser, the metrics or the upstream URL."""

from __future__ import annotations

import gzip
import json
import pathlib
import zlib
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest
from pydantic import ValidationError

from llmgw_dev import fake_provider
from llmgw_proxy import config
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


HOSTILE_HEADERS = {
    "x-api-key": "caller-x-api-key",
    "api-key": "caller-api-key",
    "OpenAI-Organization": "org-of-the-caller",
    "OpenAI-Project": "proj-of-the-caller",
    "Forwarded": "for=10.0.0.1",
    "X-Forwarded-For": "10.0.0.1",
    "X-Real-IP": "10.0.0.1",
    "Proxy-Authorization": "Basic Y2FsbGVy",
    "Proxy-Foo": "bar",
    "Cookie": "session=caller",
    "X-Custom": "custom",
    "Keep-Alive": "timeout=5",
    "Connection": "keep-alive, X-Custom",
}


async def post_with(http: aiohttp.ClientSession, proxy: Proxy, headers: dict[str, str]) -> None:
    async with http.post(
        proxy.url + CHAT,
        data=b'{"model": "m", "messages": []}',
        headers={**JSON, "OpenAI-Beta": "assistants=v2", "Accept": "application/json", **headers},
    ) as resp:
        assert resp.status == 200, await resp.text()


async def test_forwards_only_the_default_caller_headers(
    proxy: Proxy, http: aiohttp.ClientSession, fake: fake_provider.FakeProvider, secret: str
) -> None:
    await post_with(http, proxy, {**HOSTILE_HEADERS, "Connection": "keep-alive"})
    received = {k.lower(): v for k, v in fake.requests[-1].headers.items()}
    for name in HOSTILE_HEADERS:
        if name.lower() != "connection":
            assert name.lower() not in received, name
    assert received["authorization"] == f"Bearer {secret}"
    assert received["openai-beta"] == "assistants=v2"
    assert received["content-type"] == "application/json"
    assert received["accept"] == "application/json"


async def test_forwards_a_providers_allow_listed_headers_unless_connection_names_them(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["forwardHeaders"] = ["X-Custom", "OpenAI-Project", "X-Tenant"]
    proxy = await start_proxy(doc)
    await post_with(http, proxy, {**HOSTILE_HEADERS, "X-Tenant": "t1"})
    received = {k.lower(): v for k, v in fake.requests[-1].headers.items()}
    assert received["openai-project"] == "proj-of-the-caller"  # the policy author chose to pass it
    assert received["x-tenant"] == "t1"
    assert "x-custom" not in received  # allow-listed, but the caller's Connection made it hop-by-hop
    assert "openai-organization" not in received and "x-api-key" not in received


@pytest.mark.parametrize(
    "name",
    ["Authorization", "x-api-key", "api-key", "Proxy-Anything", "Transfer-Encoding", "Connection", "Host",
     "Content-Length", "Content-Encoding", "Forwarded", "X-Forwarded-For", "Cookie", "TE", "Upgrade",
     "bad header", ""],
)  # fmt: skip
def test_refuses_to_allow_list_a_credential_or_hop_by_hop_header(name: str) -> None:
    doc: dict[str, Any] = {
        "providers": {"p": {"baseUrl": "http://127.0.0.1:1/v1", "forwardHeaders": [name]}},
        "routes": [{"model": "*", "targets": [{"provider": "p"}]}],
    }
    with pytest.raises(ValidationError, match="forwardHeaders"):
        config.parse(doc)
    doc["providers"]["p"]["forwardHeaders"] = ["X-Tenant", "OpenAI-Project"]  # these may be chosen
    assert config.parse(doc).providers["p"].forward_headers == ("x-tenant", "openai-project")


def two_providers(upstream: str, key_file: pathlib.Path, primary_models: list[str]) -> dict[str, object]:
    provider = {"baseUrl": upstream, "apiKeyFile": str(key_file), "retry": {"attempts": 1}}
    return {
        "version": 1,
        "providers": {"primary": {**provider, "models": primary_models}, "fallback": provider},
        "routes": [{"model": "*", "targets": [{"provider": "primary"}, {"provider": "fallback"}]}],
    }


async def test_skips_a_target_whose_policy_does_not_allow_the_model(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, fake: fake_provider.FakeProvider
) -> None:
    proxy = await start_proxy(two_providers(upstream, key_file, ["gpt-allowed"]))
    client = proxy.async_client()
    for model, served_by in (("gpt-allowed", "primary"), ("gpt-other", "fallback")):
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=[])
        assert (raw.headers["x-llmgw-provider"], raw.headers["x-llmgw-attempts"]) == (served_by, "1")
    assert [r.body["model"] for r in fake.requests] == ["gpt-allowed", "gpt-other"]


async def test_refuses_a_model_no_target_allows_with_404(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["models"] = ["gpt-allowed"]
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-expensive", messages=[])
    assert caught.value.code == "model_not_found"
    assert not fake.requests
    await client.chat.completions.create(model="gpt-allowed", messages=[])
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "model",
    ["d?api-version=2020-01-01", "d#", "../../v1/chat/completions", "..", "a/b", "d%2F..", "d ", "-d"],
)
async def test_refuses_a_model_that_would_change_the_azure_url(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    model: str,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(
        kind="azure-openai", baseUrl=upstream.removesuffix("/v1"), apiVersion="2024-10-21"
    )
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=model, messages=[])
    assert caught.value.code == "invalid_model_name"
    assert not fake.requests
    await client.chat.completions.create(model="gpt-4o.v2_mini-1", messages=[])
    assert fake.requests[-1].path == "/openai/deployments/gpt-4o.v2_mini-1/chat/completions"
    assert fake.requests[-1].query == {"api-version": "2024-10-21"}


async def test_keeps_the_metric_series_bounded_whatever_model_names_callers_send(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["routes"] = [
        {"model": "named", "targets": [{"provider": "fake"}]},
        {"model": "*", "targets": [{"provider": "fake"}]},
    ]
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    await client.chat.completions.create(model="named", messages=[])
    await client.chat.completions.create(model="first-unknown", messages=[])
    async with http.post(proxy.url + CHAT, json={"model": "z" * 1_000_000}) as resp:
        assert resp.status == 400
    size = len(proxy.metrics_text())
    for i in range(100):
        await client.chat.completions.create(model=f"unknown-{i}-" + "x" * 200, messages=[])
    text = proxy.metrics_text()
    assert "unknown-" not in text
    assert len(text) <= size + 200  # the same series, larger counts
    assert (
        proxy.sample("llmgw_requests_total", route="*", provider="fake", model="other", status="200") == 101
    )
    assert (
        proxy.sample("llmgw_requests_total", route="named", provider="fake", model="named", status="200") == 1
    )
    async with http.post(proxy.url + CHAT, json={"model": "y" * 1_000_000}) as resp:
        assert resp.status == 400
    assert len(proxy.metrics_text()) <= size + 400  # counted in the 400's existing series


@pytest.mark.parametrize("value", [b"NaN", b"-Infinity", b"1e999", b"123456789012345678901234567890"])
async def test_passes_on_numbers_only_the_json_module_reads_without_failing(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
    value: bytes,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["cache"] = {"enabled": True, "mode": "all"}  # the cache key reads the body too
    proxy = await start_proxy(doc)
    body = b'{"model": "m", "messages": [], "temperature": ' + value + b', "seed": ' + value + b"}"
    for _ in range(2):
        async with http.post(proxy.url + CHAT, data=body, headers=JSON) as resp:
            assert resp.status == 200, await resp.text()
    assert len(fake.requests) == 1  # the second was a cache hit: the key was computed both times
