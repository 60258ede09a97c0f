"""The upstream client sends a streamed body (``upstream.Upload``): framed, paced, cut short safely."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from llmgw_proxy import upstream
from llmgw_proxy.upstream import http1

TIMEOUTS = upstream.Timeouts(connect=2.0, first_byte=5.0, total=10.0)
DATA = bytes(range(256)) * 4096  # 1 MiB: more than a socket buffer, so the sender must wait


async def _pieces(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.fixture
async def pool() -> AsyncIterator[http1.Pool]:
    made = http1.Pool()
    yield made
    await made.close()


@pytest.mark.parametrize("length", [len(DATA), None], ids=["content-length", "chunked"])
async def test_an_upload_arrives_whole_with_or_without_a_length(
    pool: http1.Pool, aiohttp_server: AiohttpServer, length: int | None
) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Content-Length"), request.headers.get("Transfer-Encoding")))
        body = await request.read()
        return web.json_response({"size": len(body), "sha": hashlib.sha256(body).hexdigest()})

    app = web.Application(client_max_size=len(DATA) * 2)
    app.router.add_post("/v1/files", echo)
    server = await aiohttp_server(app)
    for _ in range(2):  # the connection is reused after a whole upload
        body = upstream.Upload(_pieces(DATA), length)
        resp = await pool.send(
            upstream.Request("POST", str(server.make_url("/v1/files")), {}, body, TIMEOUTS)
        )
        assert resp.status == 200
        assert (await resp.read()) == (
            f'{{"size": {len(DATA)}, "sha": "{hashlib.sha256(DATA).hexdigest()}"}}'.encode()
        )
    expected = (str(len(DATA)), None) if length is not None else (None, "chunked")
    assert seen == [expected, expected]


async def test_an_answer_before_the_whole_upload_stops_it_and_the_connection_is_not_reused(
    pool: http1.Pool,
) -> None:
    connections = 0

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")  # the head only: the body is refused unread
        body = b'{"error": "too large"}'
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        try:
            await reader.read()  # whatever the client still sends, until it closes
        finally:
            writer.close()

    server = await asyncio.start_server(early, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/files"
    never = asyncio.Event()
    stopped = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        try:
            yield b"x" * 1024
            await never.wait()  # the caller's body stalls: only the answer can end this send
            yield b"never sent"
        finally:
            stopped.set()

    try:
        resp = await pool.send(upstream.Request("POST", url, {}, upstream.Upload(stalls(), 10_000), TIMEOUTS))
        assert resp.status == 413
        assert await resp.read() == b'{"error": "too large"}'
        async with asyncio.timeout(5):
            await stopped.wait()
        again = await pool.send(
            upstream.Request("POST", url, {}, upstream.Upload(_pieces(b"y"), 1), TIMEOUTS)
        )
        assert again.status == 413
        await again.read()
        assert connections == 2  # the half-sent connection was closed, not reused
    finally:
        server.close()
