"""Fake providers of each API family behind a real sidecar, and the official SDK of each as caller."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import pytest
from aiohttp.pytest_plugin import AiohttpServer

from llmgw_dev import fake_anthropic, fake_provider

CALLER_KEY = "caller-key-not-forwarded"
TIMEOUTS = {"connect": 2, "firstByte": 2, "total": 5}


@dataclasses.dataclass
class Fakes:
    """Fakes by provider name, their base URLs, and the config documents built on them."""

    fakes: dict[str, fake_provider.FakeProvider]
    urls: dict[str, str]

    def provider(self, name: str, key_file: pathlib.Path | None, **policy: Any) -> dict[str, Any]:
        kind = "anthropic" if isinstance(self.fakes[name], fake_anthropic.FakeAnthropic) else "openai"
        return {
            "kind": kind,
            "baseUrl": self.urls[name],
            "apiKeyFile": str(key_file) if key_file else None,
            "timeouts": TIMEOUTS,
            "retry": {"attempts": 1},
            **policy,
        }

    def doc(
        self,
        key_file: pathlib.Path | None,
        routes: list[dict[str, Any]],
        policies: dict[str, dict[str, Any]] | None = None,
        **top: Any,
    ) -> dict[str, Any]:
        policies = policies or {}
        providers = {name: self.provider(name, key_file, **policies.get(name, {})) for name in self.fakes}
        return {"version": 1, "providers": providers, "routes": routes, **top}


@pytest.fixture
async def fakes(aiohttp_server: AiohttpServer) -> Fakes:
    """Two OpenAI fakes (``openai``, ``openai2``) and two Anthropic fakes (``claude``, ``claude2``)."""
    made: dict[str, fake_provider.FakeProvider] = {
        "openai": fake_provider.FakeProvider(),
        "openai2": fake_provider.FakeProvider(),
        "claude": fake_anthropic.FakeAnthropic(),
        "claude2": fake_anthropic.FakeAnthropic(),
    }
    urls = {}
    for name, fake in made.items():
        server = await aiohttp_server(fake.app())
        urls[name] = str(server.make_url("/v1"))
    return Fakes(made, urls)


MakeAnthropic = Callable[[str], anthropic.AsyncAnthropic]


@pytest.fixture
async def make_anthropic() -> AsyncIterator[MakeAnthropic]:
    """An ``anthropic`` client for a sidecar's URL (the SDK adds /v1/messages itself), closed after."""
    made: list[anthropic.AsyncAnthropic] = []

    def make(proxy_url: str) -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(base_url=proxy_url, api_key=CALLER_KEY, max_retries=0)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
