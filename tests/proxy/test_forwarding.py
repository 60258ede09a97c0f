"""The sidecar feels like the provider's own API, adds the key and keeps the caller's."""

from __future__ import annotations

import asyncio
import pathlib
from typing import TYPE_CHECKING

import aiohttp
import openai
import pytest

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy


async def test_answers_a_chat_completion_from_the_sync_client(
    proxy: Proxy, fake: fake_provider.FakeProvider
) -> None:
    client = proxy.client()
    completion = await asyncio.to_thread(
        lambda: client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "hi there"}]
        )
    )
    assert completion.choices[0].message.content == fake_provider.REPLY
    assert completion.usage is not None and completion.usage.prompt_tokens == 3
    assert fake.requests[-1].path == "/v1/chat/completions"


async def test_answers_completions_embeddings_and_models_from_the_async_client(proxy: Proxy) -> None:
    client = proxy.async_client()
    text = await client.completions.create(model="gpt-x", prompt="say hello")
    assert text.choices[0].text == fake_provider.REPLY
    embedded = await client.embeddings.create(model="embed-x", input=["a", "b"])
    assert [e.index for e in embedded.data] == [0, 1]
    models = await client.models.list()
    assert [m.id for m in models.data] == []  # only a '*' route: no named model to list


async def test_lists_the_configured_models(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    doc = make_doc(
        upstream,
        key_file,
        routes=[
            {"model": "small", "targets": [{"provider": "fake"}]},
            {"model": "large", "targets": [{"provider": "fake"}]},
        ],
    )
    proxy = await start_proxy(doc)
    models = await proxy.async_client().models.list()
    assert [m.id for m in models.data] == ["small", "large"]


async def test_adds_the_provider_key_and_never_forwards_the_callers(
    proxy: Proxy, fake: fake_provider.FakeProvider, secret: str
) -> None:
    await proxy.async_client().chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    headers = fake.requests[-1].headers
    assert headers["Authorization"] == f"Bearer {secret}"
    assert "caller-key-not-forwarded" not in str(headers)


async def test_forwards_the_body_unchanged_when_the_model_keeps_its_name(
    proxy: Proxy, fake: fake_provider.FakeProvider, http: aiohttp.ClientSession
) -> None:
    raw = b'{"model": "m",   "messages": [{"role": "user", "content": "spaces kept"}], "extra_field": 1}'
    async with http.post(
        proxy.url + "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 200
    assert fake.requests[-1].body == {
        "model": "m",
        "messages": [{"role": "user", "content": "spaces kept"}],
        "extra_field": 1,
    }


async def test_renames_the_model_for_a_target_that_asks_for_it(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = make_doc(
        upstream,
        key_file,
        routes=[{"model": "fast", "targets": [{"provider": "fake", "model": "gpt-4o-mini"}]}],
    )
    proxy = await start_proxy(doc)
    completion = await proxy.async_client().chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "x"}]
    )
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"
    assert completion.model == "gpt-4o-mini"


async def test_marks_the_response_with_provider_and_request_id(proxy: Proxy) -> None:
    raw = await proxy.async_client().chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": "req-42"}
    )
    assert raw.headers["x-llmgw-provider"] == "fake"
    assert raw.headers["x-request-id"] == "req-42"


async def test_speaks_azure_openai_with_deployment_path_and_api_key_header(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    secret: str,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(
        kind="azure-openai", baseUrl=upstream.removesuffix("/v1"), apiVersion="2024-10-21"
    )
    proxy = await start_proxy(doc)
    await proxy.async_client().chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": "x"}]
    )
    received = fake.requests[-1]
    assert received.path == "/openai/deployments/my-deployment/chat/completions"
    assert received.query == {"api-version": "2024-10-21"}
    assert received.headers["api-key"] == secret
    assert "Authorization" not in received.headers


@pytest.mark.parametrize(
    ("route_model", "asked", "served"),
    [
        pytest.param("exact", "exact", True, id="exact-name"),
        pytest.param("exact", "other", False, id="other-name-without-wildcard"),
    ],
)
async def test_routes_by_the_requested_model(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    route_model: str,
    asked: str,
    served: bool,
) -> None:
    proxy = await start_proxy(
        make_doc(upstream, key_file, routes=[{"model": route_model, "targets": [{"provider": "fake"}]}])
    )
    client = proxy.async_client()
    if served:
        await client.chat.completions.create(model=asked, messages=[{"role": "user", "content": "x"}])
    else:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=asked, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        pytest.param({"User-Agent": "OpenAI/Python 1.99"}, "OpenAI/Python 1.99", id="callers-own"),
        pytest.param({}, "llmgw-proxy", id="none-sent"),
    ],
)
async def test_forwards_the_callers_user_agent_or_names_itself(
    proxy: Proxy,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
    sent: dict[str, str],
    forwarded: str,
) -> None:
    async with http.post(
        proxy.url + "/v1/chat/completions",
        data=b'{"model": "m", "messages": []}',
        headers={"Content-Type": "application/json", **sent},
        skip_auto_headers=["User-Agent"],
    ) as resp:
        assert resp.status == 200
    assert fake.requests[-1].headers["User-Agent"] == forwarded
