"""Config and key files are reloaded in place, kubelet style, keeping unchanged providers' state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from llmgw_dev import fake_provider
from llmgw_proxy.runtime import reload

if TYPE_CHECKING:
    from conftest import Eventually, MakeDoc, Mount, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def replace_file(path: pathlib.Path, content: str | bytes | None) -> None:
    """Write (or with None, delete) a watched file: synchronous on purpose, the watcher polls."""
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def reload_now(proxy: Proxy) -> None:
    assert proxy.watcher.changed()
    proxy.watcher.load()


async def test_picks_up_a_symlink_swapped_config_and_keeps_unchanged_provider_state(
    kubelet_mount: type[Mount],
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    tmp_path: pathlib.Path,
    fake: fake_provider.FakeProvider,
) -> None:
    mount = kubelet_mount(tmp_path / "cfg")
    doc = make_doc(upstream, key_file)
    doc["providers"]["other"] = {"baseUrl": upstream, "apiKeyFile": str(key_file)}
    mount.publish({"config.yaml": yaml.safe_dump(doc)})
    proxy = await start_proxy(doc)
    proxy.watcher.config_path = mount.path("config.yaml")
    proxy.watcher.load()
    before = proxy.live.snapshot
    assert before is not None

    doc["providers"]["other"]["timeouts"] = {"total": 9}
    doc["routes"] = [{"model": "renamed", "targets": [{"provider": "fake", "model": "upstream-name"}]}]
    mount.publish({"config.yaml": yaml.safe_dump(doc)})
    reload_now(proxy)

    after = proxy.live.snapshot
    assert after is not None and after.generation == before.generation + 1
    assert after.providers["fake"] is before.providers["fake"]  # unchanged: same state object
    assert after.providers["other"] is not before.providers["other"]
    await proxy.async_client().chat.completions.create(model="renamed", messages=MESSAGES)
    assert fake.requests[-1].body["model"] == "upstream-name"
    assert proxy.sample("llmgw_config_generation") == after.generation


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("providers: [not, a, map", id="not-yaml"),
        pytest.param("version: 1\nproviders: {}\nroutes: []\n", id="fails-validation"),
        pytest.param("version: 2\n", id="unknown-version"),
    ],
)
async def test_refuses_an_invalid_new_config_and_keeps_serving_the_old_one(
    proxy: Proxy, broken: str, log_lines: Callable[[], list[str]]
) -> None:
    assert proxy.live.snapshot is not None
    generation = proxy.live.snapshot.generation
    replace_file(proxy.config_path, broken)
    reload_now(proxy)
    assert proxy.live.snapshot.generation == generation
    code = "config_invalid"
    assert proxy.sample("llmgw_config_reload_failures_total", reason=code) == 1
    assert any("reload refused" in line for line in log_lines())
    completion = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices
    assert not proxy.watcher.changed()  # refused once, not retried until the file changes again


async def test_uses_a_rotated_key_on_the_next_request(
    proxy: Proxy, key_file: pathlib.Path, fake: fake_provider.FakeProvider
) -> None:
    replace_file(key_file, "sk-rotated-key-with-another-length\n")
    reload_now(proxy)
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert fake.requests[-1].headers["Authorization"] == "Bearer sk-rotated-key-with-another-length"


async def test_keeps_the_old_key_when_the_new_key_file_is_unreadable(
    proxy: Proxy, key_file: pathlib.Path, fake: fake_provider.FakeProvider, secret: str
) -> None:
    replace_file(key_file, None)
    reload_now(proxy)
    assert proxy.sample("llmgw_config_reload_failures_total", reason="key_unreadable") == 1
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {secret}"


async def test_becomes_ready_when_a_missing_key_file_appears(
    start_proxy: StartProxy,
    upstream: str,
    tmp_path: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
) -> None:
    key = tmp_path / "late-key"
    proxy = await start_proxy(make_doc(upstream, key))
    with pytest.raises(openai.InternalServerError):
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    replace_file(key, "sk-late")
    reload_now(proxy)
    async with http.get(proxy.admin_url + "/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["generation"] == 1


def test_the_first_config_must_be_valid(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\n")
    with pytest.raises(reload.ConfigError, match="invalid"):
        reload.read_config(str(path))


MARK = "zqxv"  # in every bad key below, and in no log line, path or message the sidecar writes itself
BAD_KEYS = [
    pytest.param(b"zqxv-\xff\xfe-not-utf8", "key_not_utf8", id="not-utf8"),
    pytest.param(b"zqxv-first\nzqxv-second\n", "key_invalid_character", id="embedded-newline"),
    pytest.param(b"zqxv with space", "key_invalid_character", id="inner-space"),
    pytest.param(b"zqxv\x00nul", "key_invalid_character", id="control-character"),
    pytest.param("zqxv-é-accent".encode(), "key_invalid_character", id="non-ascii"),
    pytest.param(b"zqxv" * 2500, "key_too_long", id="too-long"),
    pytest.param(b" \n\t\n", "key_empty", id="whitespace-only"),
]


async def readyz(http: aiohttp.ClientSession, proxy: Proxy) -> tuple[int, dict[str, Any]]:
    async with http.get(proxy.admin_url + "/readyz") as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("content", "code"), BAD_KEYS)
async def test_refuses_an_invalid_rotated_key_and_keeps_serving_the_previous_one(
    proxy: Proxy,
    key_file: pathlib.Path,
    fake: fake_provider.FakeProvider,
    secret: str,
    http: aiohttp.ClientSession,
    log_lines: Callable[[], list[str]],
    content: bytes,
    code: str,
) -> None:
    replace_file(key_file, content)
    reload_now(proxy)

    assert proxy.sample("llmgw_config_reload_failures_total", reason=code) == 1
    status, body = await readyz(http, proxy)
    assert status == 200 and body["generation"] == 1
    assert body["lastReloadError"]["reasonCode"] == code
    assert str(key_file) in body["lastReloadError"]["reason"]
    refused = [line for line in log_lines() if "reload refused" in line]
    assert len(refused) == 1 and str(key_file) in refused[0] and code in refused[0]
    assert all(MARK not in line for line in log_lines())
    assert MARK not in json.dumps(body) and MARK not in proxy.metrics_text()
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {secret}"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "  \n\n"])
async def test_strips_the_whitespace_around_a_key(
    proxy: Proxy, key_file: pathlib.Path, fake: fake_provider.FakeProvider, ending: str
) -> None:
    replace_file(key_file, "sk-rotated" + ending)
    reload_now(proxy)
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    assert fake.requests[-1].headers["Authorization"] == "Bearer sk-rotated"


@pytest.mark.parametrize(("content", "code"), BAD_KEYS[:2])
async def test_starts_not_ready_on_an_invalid_first_key_and_turns_ready_when_it_is_fixed(
    start_proxy: StartProxy,
    upstream: str,
    tmp_path: pathlib.Path,
    make_doc: MakeDoc,
    http: aiohttp.ClientSession,
    content: bytes,
    code: str,
) -> None:
    key = tmp_path / "bad-key"
    replace_file(key, content)
    proxy = await start_proxy(make_doc(upstream, key))
    status, body = await readyz(http, proxy)
    assert status == 503 and body["reasonCode"] == code and str(key) in body["reason"]
    replace_file(key, "sk-fixed\n")
    reload_now(proxy)
    assert await readyz(http, proxy) == (200, {"status": "ready", "generation": 1})


async def test_the_reload_loop_outlives_any_failure_and_picks_up_later_rotations(
    proxy: Proxy,
    upstream: str,
    make_doc: MakeDoc,
    key_file: pathlib.Path,
    fake: fake_provider.FakeProvider,
    eventually: Eventually,
    http: aiohttp.ClientSession,
) -> None:
    watching = asyncio.create_task(proxy.watcher.run(0.01))
    try:
        replace_file(key_file, b"\xff\xfe")  # once killed the loop with UnicodeDecodeError
        await eventually(
            lambda: proxy.sample("llmgw_config_reload_failures_total", reason="key_not_utf8") == 1
        )
        # A file no check foresees: nesting deep enough that the YAML parser overflows the stack.
        replace_file(proxy.config_path, "a: " + "[" * 5000 + "]" * 5000)
        await eventually(lambda: proxy.sample("llmgw_config_reload_failures_total", reason="unexpected") == 1)
        status, body = await readyz(http, proxy)
        assert status == 200 and body["lastReloadError"]["reasonCode"] == "unexpected"
        assert "RecursionError" in body["lastReloadError"]["reason"]

        replace_file(proxy.config_path, yaml.safe_dump(make_doc(upstream, key_file)))
        replace_file(key_file, "sk-rotated-after-failures\n")
        await eventually(lambda: proxy.live.snapshot is not None and proxy.live.snapshot.generation == 2)
        assert not watching.done()
        await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
        assert fake.requests[-1].headers["Authorization"] == "Bearer sk-rotated-after-failures"
        assert (await readyz(http, proxy))[1] == {"status": "ready", "generation": 2}
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
