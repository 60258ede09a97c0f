"""A sidecar started under a low soft open-file limit raises it to what its connection caps need.

Container runtimes commonly start processes with a soft ``RLIMIT_NOFILE`` of
1,024 under a far higher hard limit. Here a real ``llmgw-proxy`` process starts
with a soft limit of ``SOFT`` and ``STREAMS`` streams are opened through it at
once, each holding two descriptors (the caller's and the provider's): more than
``SOFT`` allows. Every stream must complete, and the process's limit must be
what its caps need (``listen.maxConnections`` twice, the admin cap, a spare).
"""

from __future__ import annotations

import asyncio
import pathlib
import resource

import aiohttp
import pytest

from llmgw_dev import fake_provider, loadkit
from llmgw_proxy import config
from llmgw_proxy.server import openfiles

pytestmark = pytest.mark.slow

SOFT = 256
STREAMS = 200
MAX_CONNECTIONS = 400


def _soft_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-file limit")


async def _stream(http: aiohttp.ClientSession, url: str, opened: list[int], all_open: asyncio.Event) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        async with http.post(url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                return f"{r.status} {await r.text()}"
            events = []
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(line)
                    if len(events) == 1:
                        opened.append(1)
                        if len(opened) == STREAMS:
                            all_open.set()
                        await all_open.wait()  # hold this stream open until every one is
            return "ok" if events[-1].startswith(b"data: [DONE]") else "no [DONE]"
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"


async def test_a_sidecar_under_a_low_soft_open_file_limit_serves_more_streams_than_it_allows(
    tmp_path: pathlib.Path,
) -> None:
    fake = fake_provider.FakeProvider(record=False)
    path = tmp_path / "config.json"
    doc = {
        "version": 1,
        "listen": {"maxConnections": MAX_CONNECTIONS},
        "providers": {"fake": {"baseUrl": "", "retry": {"attempts": 1}}},
        "routes": [{"model": "*", "targets": [{"provider": "fake"}]}],
    }
    async with loadkit.fake_server(fake) as url:
        doc["providers"]["fake"]["baseUrl"] = url  # type: ignore[index]
        loadkit.write_config(path, doc)
        async with (
            loadkit.sidecar(path, tmp_path / "sidecar.log", open_files=SOFT) as sidecar,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        ):
            opened: list[int] = []
            all_open = asyncio.Event()
            ends = await asyncio.wait_for(
                asyncio.gather(*(_stream(http, sidecar.url, opened, all_open) for _ in range(STREAMS))),
                timeout=120,
            )
            limit = _soft_limit(sidecar.proc.pid)
    assert ends == ["ok"] * STREAMS, sorted(set(ends))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert limit == min(hard, openfiles.needed(config.parse(doc)))
