"""``llmgw-proxy`` as a process: ready, reloading from a kubelet-style mount, draining on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import MakeDoc, Mount

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


class Sidecar:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"raw": raw.decode(errors="replace")})

    async def line_with(self, key: str, within: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for line in self.lines:
                if key in line:
                    return line
            assert self.proc.returncode is None, f"sidecar exited: {self.lines}"
            assert time.monotonic() < deadline, f"no {key!r} line in {self.lines}"
            await asyncio.sleep(0.01)

    async def readyz(self, http: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        admin = (await self.line_with("admin"))["admin"]
        async with http.get(f"http://{admin}/readyz") as resp:
            return resp.status, await resp.json()

    async def until_ready(self, http: aiohttp.ClientSession, generation: int = 1, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while True:
            status, body = await self.readyz(http)
            if status == 200 and body["generation"] >= generation:
                return
            assert time.monotonic() < deadline, f"not ready with generation {generation}: {body}"
            await asyncio.sleep(0.02)

    async def api(self) -> str:
        return "http://" + str((await self.line_with("api"))["api"]) + "/v1"


class RunSidecar(Protocol):
    async def __call__(self, *args: str) -> Sidecar: ...


@pytest.fixture
async def run_sidecar() -> AsyncIterator[RunSidecar]:
    started: list[Sidecar] = []

    async def run(*args: str) -> Sidecar:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmgw_proxy.cli", *args,
            "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1", "--reload-interval", "0.05",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        started.append(Sidecar(proc))
        return started[-1]

    yield run
    for sidecar in started:
        if sidecar.proc.returncode is None:
            sidecar.proc.kill()
            await sidecar.proc.wait()
        await sidecar._reader


async def test_quick_mode_gets_ready_and_answers(
    run_sidecar: RunSidecar,
    upstream: str,
    key_file: pathlib.Path,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
    secret: str,
) -> None:
    sidecar = await run_sidecar("--upstream", upstream, "--api-key-file", str(key_file))
    await sidecar.until_ready(http)
    async with openai.AsyncOpenAI(base_url=await sidecar.api(), api_key="caller", max_retries=0) as client:
        completion = await client.chat.completions.create(model="any-model", messages=MESSAGES)
    assert completion.choices[0].message.content == fake_provider.REPLY
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {secret}"
    line = await sidecar.line_with("request_id")
    assert line["msg"] == "request" and line["level"] == "info"
    assert (line["route"], line["provider"], line["model"], line["status"]) == (
        "*",
        "upstream",
        "any-model",
        200,
    )
    assert (line["prompt_tokens"], line["completion_tokens"]) == (2, 12)
    assert all(secret not in json.dumps(each) and "hi" not in each.values() for each in sidecar.lines)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"version: 1\nroutes: []\n", id="fails-validation"),
        pytest.param(b"version: 1\n\xff\xfe\n", id="not-utf8"),
        pytest.param(b"a: " + b"[" * 5000 + b"]" * 5000, id="nested-past-the-parser"),
    ],
)
async def test_refuses_to_start_from_an_invalid_config(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmgw_proxy.cli", "--config", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"cannot start" in err and b"Traceback" not in err


async def test_drains_an_in_flight_stream_on_sigterm_then_exits_0(
    run_sidecar: RunSidecar,
    upstream: str,
    key_file: pathlib.Path,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
) -> None:
    sidecar = await run_sidecar("--upstream", upstream, "--api-key-file", str(key_file))
    await sidecar.until_ready(http)
    fake.plan(fake_provider.Fault(chunk_delay=0.1))
    async with openai.AsyncOpenAI(base_url=await sidecar.api(), api_key="caller", max_retries=0) as client:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        chunks = [await anext(aiter(stream))]
        sidecar.proc.send_signal(signal.SIGTERM)
        chunks += [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake_provider.REPLY
    assert await asyncio.wait_for(sidecar.proc.wait(), timeout=10) == 0
    assert any(line.get("msg") == "draining" for line in sidecar.lines)


async def test_reloads_a_config_swapped_under_a_data_symlink(
    run_sidecar: RunSidecar,
    upstream: str,
    key_file: pathlib.Path,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
    make_doc: MakeDoc,
    kubelet_mount: type[Mount],
    tmp_path: pathlib.Path,
) -> None:
    mount = kubelet_mount(tmp_path / "config")
    doc = make_doc(upstream, key_file, routes=[{"model": "old", "targets": [{"provider": "fake"}]}])
    mount.publish({"config.yaml": yaml.safe_dump(doc)})
    sidecar = await run_sidecar("--config", mount.path("config.yaml"))
    await sidecar.until_ready(http)

    doc["routes"] = [{"model": "new", "targets": [{"provider": "fake", "model": "upstream-new"}]}]
    mount.publish({"config.yaml": yaml.safe_dump(doc)})
    await sidecar.until_ready(http, generation=2)

    async with openai.AsyncOpenAI(base_url=await sidecar.api(), api_key="caller", max_retries=0) as client:
        await client.chat.completions.create(model="new", messages=MESSAGES)
        assert fake.requests[-1].body["model"] == "upstream-new"
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="old", messages=MESSAGES)

    mount.publish({"config.yaml": "version: 1\nproviders: {}\n"})
    admin = (await sidecar.line_with("admin"))["admin"]
    deadline = time.monotonic() + 10
    while True:  # the refusal shows as a counted failure while generation 2 keeps serving
        async with http.get(f"http://{admin}/metrics") as resp:
            text = await resp.text()
        if 'llmgw_config_reload_failures_total{reason="config_invalid"} 1.0' in text:
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.02)
    status, body = await sidecar.readyz(http)
    assert (status, body["generation"], body["lastReloadError"]["reasonCode"]) == (200, 2, "config_invalid")


@pytest.mark.parametrize(
    ("raw_model", "logged"),
    [
        pytest.param(r"mod\u00e8le", "modèle", id="non-ascii"),
        pytest.param(r"m\ud800", "m\ud800", id="lone-surrogate"),
        pytest.param("m", "m", id="plain"),
    ],
)
async def test_writes_a_request_line_for_any_model_name_json_allows(
    run_sidecar: RunSidecar,
    upstream: str,
    key_file: pathlib.Path,
    http: aiohttp.ClientSession,
    raw_model: str,
    logged: str,
) -> None:
    sidecar = await run_sidecar("--upstream", upstream, "--api-key-file", str(key_file))
    await sidecar.until_ready(http)
    body = b'{"model": "%s", "messages": [], "x": 1e400}' % raw_model.encode()
    async with http.post(
        await sidecar.api() + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        await resp.read()
    line = await sidecar.line_with("request_id")
    assert line["model"] == logged
    assert line["route"] == "*"


async def test_starts_not_ready_on_a_key_that_is_not_utf8_and_turns_ready_when_it_is_fixed(
    run_sidecar: RunSidecar, upstream: str, tmp_path: pathlib.Path, http: aiohttp.ClientSession
) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"sk-\xff\xfe")
    sidecar = await run_sidecar("--upstream", upstream, "--api-key-file", str(key))
    status, body = await sidecar.readyz(http)
    assert (status, body["reasonCode"]) == (503, "key_not_utf8")
    key.write_text("sk-fixed\n")
    await sidecar.until_ready(http)
    assert sidecar.proc.returncode is None
    assert not any("Traceback" in json.dumps(line) for line in sidecar.lines)


async def test_status_over_a_real_socket_never_holds_the_key_or_the_refused_file(
    run_sidecar: RunSidecar,
    upstream: str,
    key_file: pathlib.Path,
    http: aiohttp.ClientSession,
    fake: fake_provider.FakeProvider,
    secret: str,
) -> None:
    sidecar = await run_sidecar("--upstream", upstream, "--api-key-file", str(key_file))
    await sidecar.until_ready(http)
    fake.plan(fake_provider.Fault(status=500, times=5))  # past the retries
    async with openai.AsyncOpenAI(base_url=await sidecar.api(), api_key="caller", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
    # The next key is refused (a space inside it): its bytes must not show either.
    await asyncio.to_thread(key_file.write_text, "sk-next key-material-0123456789\n")
    admin = (await sidecar.line_with("admin"))["admin"]
    deadline = time.monotonic() + 10
    while True:
        reader, writer = await asyncio.open_connection(*admin.rsplit(":", 1))
        writer.write(f"GET /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
        writer.close()
        if b'"lastReloadError"' in raw:
            break
        assert time.monotonic() < deadline, raw
        await asyncio.sleep(0.02)
    assert raw.startswith(b"HTTP/1.1 200")
    assert b'"reasonCode":"key_invalid_character"' in raw
    assert b'"lastFailureKind"' not in raw  # no breaker configured: only what the policy has
    for leak in (secret, "key-material", "sk-next", str(key_file)):
        assert leak.encode() not in raw
