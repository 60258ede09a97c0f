"""A real proxy on real loopback sockets in front of fake providers, and openai clients for it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import openai
import pytest
import yaml
from aiohttp.pytest_plugin import AiohttpServer
from rediskit import RedisServer

import llmgw_proxy.upstream  # not `from llmgw_proxy import upstream`: that is a fixture's name here
from llmgw_dev import fake_provider
from llmgw_proxy import pipeline
from llmgw_proxy.runtime import reload, state
from llmgw_proxy.server import admin, api, listen
from llmgw_proxy.steps import call
from llmgw_proxy.telemetry import logs, metrics, tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SECRET = "sk-fake-provider-secret-0123456789abcdef"
CALLER_KEY = "caller-key-not-forwarded"


@dataclasses.dataclass
class Proxy:
    url: str
    admin_url: str
    live: state.Live
    metrics: metrics.Metrics
    watcher: reload.Watcher
    config_path: pathlib.Path
    clients: list[openai.OpenAI | openai.AsyncOpenAI] = dataclasses.field(default_factory=list)

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=CALLER_KEY, **kwargs)
        self.clients.append(client)
        return client

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=CALLER_KEY, **kwargs)
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            if isinstance(client, openai.AsyncOpenAI):
                await client.close()
            else:
                client.close()

    def metrics_text(self) -> str:
        return self.metrics.exposition().decode()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


StartProxy = Callable[..., Awaitable[Proxy]]


def config_doc(upstream: str, key_file: pathlib.Path | None, **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "providers": {
            "fake": {
                "baseUrl": upstream,
                "apiKeyFile": str(key_file) if key_file else None,
                "timeouts": {"connect": 2, "firstByte": 2, "total": 5},
                # One try: these tests see each upstream answer as it was; the policy tests retry.
                "retry": {"attempts": 1},
            }
        },
        "routes": [{"model": "*", "targets": [{"provider": "fake"}]}],
    }
    doc.update(top)
    return doc


@pytest.fixture
def fake() -> fake_provider.FakeProvider:
    return fake_provider.FakeProvider()


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer, fake: fake_provider.FakeProvider) -> str:
    server = await aiohttp_server(fake.app())
    return str(server.make_url("/v1"))


@pytest.fixture
def key_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "fake-key"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


@pytest.fixture
async def start_proxy(aiohttp_server: AiohttpServer, tmp_path: pathlib.Path) -> AsyncIterator[StartProxy]:
    started: list[Proxy] = []

    async def start(
        doc: dict[str, Any],
        *,
        tracing_: tracing.Tracing | None = None,
        steps: tuple[call.Step, ...] = pipeline.STEPS,
        transport: llmgw_proxy.upstream.Transport | None = None,
    ) -> Proxy:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        live = state.Live(asyncio.get_running_loop().time)
        metrics_ = metrics.Metrics(live)
        watcher = reload.Watcher(live, str(path))
        watcher.load()
        # Without a transport the app opens its own http1.Pool, as the sidecar does.
        api_app = api.build_api(
            live, metrics_, tracing_ or tracing.Tracing(None), steps=steps, transport=transport
        )
        # The listeners' bounds as the sidecar sets them (its connection cap is run.run's alone).
        cfg = watcher.config
        assert cfg is not None
        api_args = listen.handler_args(cfg.listen.idle_timeout)
        # TestServer: handler_cancellation on, like run.run
        api_server = await aiohttp_server(api_app, **api_args)
        admin_server = await aiohttp_server(
            admin.build(live, metrics_), **listen.handler_args(cfg.admin.idle_timeout)
        )
        proxy = Proxy(
            str(api_server.make_url("")).rstrip("/"),
            str(admin_server.make_url("")).rstrip("/"),
            live,
            metrics_,
            watcher,
            path,
        )
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.close_clients()
        if proxy.live.shared is not None:
            await proxy.live.shared.close()


@pytest.fixture
async def proxy(start_proxy: StartProxy, upstream: str, key_file: pathlib.Path) -> Proxy:
    return await start_proxy(config_doc(upstream, key_file))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Every log record of the test, formatted exactly as the sidecar writes it."""
    caplog.set_level(logging.DEBUG)
    formatter = logs.JsonFormatter()
    return lambda: [formatter.format(r) for r in caplog.records]


@pytest.fixture
def secret() -> str:
    return SECRET


class MakeDoc(Protocol):
    """The type of `config_doc`, as the `make_doc` fixture hands it to tests."""

    def __call__(self, upstream: str, key_file: pathlib.Path | None, **top: Any) -> dict[str, Any]: ...


@pytest.fixture
def make_doc() -> MakeDoc:
    return config_doc


class Mount:
    """A directory laid out as kubelet mounts a ConfigMap: files -> ..data -> ..<timestamp>/files."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        root.mkdir()
        self.version = 0

    def publish(self, files: dict[str, str]) -> None:
        self.version += 1
        stamped = self.root / f"..v{self.version}"
        stamped.mkdir()
        for name, content in files.items():
            (stamped / name).write_text(content)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamped.name)
        os.replace(tmp, self.root / "..data")  # the atomic swap inotify on the file never sees
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def path(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture
def kubelet_mount() -> type[Mount]:
    return Mount


@dataclasses.dataclass
class Pair:
    """Two fake providers behind one route: ``primary`` first, then ``fallback``."""

    primary: fake_provider.FakeProvider
    fallback: fake_provider.FakeProvider
    urls: dict[str, str]

    def doc(
        self,
        key_file: pathlib.Path,
        primary: dict[str, Any] | None = None,
        fallback: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        providers = {}
        for name, policy in (("primary", primary), ("fallback", fallback)):
            providers[name] = {
                "baseUrl": self.urls[name],
                "apiKeyFile": str(key_file),
                "timeouts": {"connect": 2, "firstByte": 2, "total": 5},
                "retry": {"attempts": 1},
                **(policy or {}),
            }
        targets = [{"provider": "primary"}, {"provider": "fallback"}]
        return {"version": 1, "providers": providers, "routes": [{"model": "*", "targets": targets}]}


@pytest.fixture
async def pair(aiohttp_server: AiohttpServer) -> Pair:
    fakes = {"primary": fake_provider.FakeProvider(), "fallback": fake_provider.FakeProvider()}
    urls = {}
    for name, fake_ in fakes.items():
        server = await aiohttp_server(fake_.app())
        urls[name] = str(server.make_url("/v1"))
    return Pair(fakes["primary"], fakes["fallback"], urls)


async def _eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.01)


class Eventually(Protocol):
    """The type of `_eventually`, as the `eventually` fixture hands it to tests."""

    def __call__(self, condition: Callable[[], bool], within: float = ...) -> Awaitable[None]: ...


@pytest.fixture
def eventually() -> Eventually:
    return _eventually


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar honours the proxy variables; a CI machine's own must not reroute the fake providers.
    A test that wants them sets them itself (tests/proxy/test_egress_proxy.py)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def redis_server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (tests/rediskit.py); stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
