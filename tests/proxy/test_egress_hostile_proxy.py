"""A forward proxy that misbehaves: every way ends in a bounded, clear error, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_proxy(behaviour: Behaviour) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A listener on loopback that reads the CONNECT head, then does ``behaviour``."""
    heads: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 Connection established\r\n")
    for _ in range(10_000):  # far past any bound, then stop: the sidecar must have hung up by then
        writer.write(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the sidecar gives up and closes


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
    await writer.drain()
    await reader.read()


async def early_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n\r\nunexpected")
    await writer.drain()
    await reader.read()


async def forbidden(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await reader.read()


async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def post(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        resp = await http.post(url + "/v1/chat/completions", json=body)
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("behaviour", "status", "code", "message"),
    [
        (endless_head, 502, "egress_proxy_error", "sent a CONNECT answer longer than 65536 bytes"),
        (silent, 504, "upstream_timeout", "connect timeout"),
        (garbage, 502, "egress_proxy_error", "answered CONNECT with something not HTTP"),
        (early_bytes, 502, "egress_proxy_error", "sent bytes before the TLS handshake"),
        (forbidden, 502, "egress_proxy_error", "refused to CONNECT to api.example.test:443 (403)"),
        (closes, 502, "egress_proxy_error", "closed the connection during CONNECT"),
    ],
    ids=["endless-head", "silent", "garbage", "early-bytes", "forbidden", "closes"],
)
async def test_a_misbehaving_proxy_ends_the_request_with_a_clear_error(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    key_file: pathlib.Path,
    secret: str,
    behaviour: Behaviour,
    status: int,
    code: str,
    message: str,
) -> None:
    async with fake_proxy(behaviour) as (url, heads):
        doc = make_doc("https://api.example.test/v1", key_file)
        doc["providers"]["fake"]["timeouts"]["connect"] = 1
        doc["providers"]["fake"]["egress"] = {"proxy": {"httpsProxy": url}}
        sidecar = await start_proxy(doc)
        got, body = await post(sidecar.url)
    assert (got, body["error"]["code"]) == (status, code)
    assert message in body["error"]["message"]
    assert heads and heads[0].startswith(b"CONNECT api.example.test:443 HTTP/1.1\r\n")
    assert secret.encode() not in b"".join(heads)  # the key never goes to the proxy
