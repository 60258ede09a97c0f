"""A hostile upstream on loopback: each accepted connection plays a script of raw bytes.

A script is a sequence of steps, run in order on one connection (the n-th
connection runs the n-th script; the last one repeats):

- ``READ``: read one whole request (head and Content-Length body);
- ``bytes``: written as one write, so on loopback it arrives as one segment;
- a function of the requests read so far on this connection, returning bytes;
- ``Drip(data, piece, limit)``: ``data`` repeated, written ``piece`` bytes at a
  time (each drained, so the peer's reading paces it) until ``limit`` bytes;
- ``Wait(event)``: wait until the test sets ``event``;
- ``CLOSE``: close the connection.

When a script ends the connection stays open until the client closes it, and
``Conn.closed`` says when that happened: the client dropping a connection is
what the tests check after a bound is broken. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from collections.abc import Callable, Sequence

READ = "read"
CLOSE = "close"


@dataclasses.dataclass(frozen=True)
class Drip:
    data: bytes
    piece: int
    limit: int


@dataclasses.dataclass(frozen=True)
class Wait:
    event: asyncio.Event


Step = str | bytes | Drip | Wait | Callable[[list[bytes]], bytes]
Script = Sequence[Step]


@dataclasses.dataclass
class Conn:
    """One accepted connection: the requests read on it and whether the client closed it."""

    requests: list[bytes] = dataclasses.field(default_factory=list)
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    written: int = 0


class HostileUpstream:
    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.conns: list[Conn] = []
        self.accepted = asyncio.Condition()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> HostileUpstream:
        # A deep accept queue: tests open hundreds of connections at once, and a dropped SYN
        # is retried only after a second, which a short connect timeout would not wait for.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        return self.base_url + "/chat/completions"

    async def until_connections(self, count: int) -> None:
        async with self.accepted:
            await self.accepted.wait_for(lambda: len(self.conns) >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn()
        script = self.scripts[min(len(self.conns), len(self.scripts) - 1)]
        self._writers.append(writer)
        async with self.accepted:
            self.conns.append(conn)
            self.accepted.notify_all()
        try:
            for step in script:
                if step == READ:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    conn.requests.append(head + await reader.readexactly(length))
                elif step == CLOSE:
                    writer.close()
                    return
                elif isinstance(step, Wait):
                    await step.event.wait()
                elif isinstance(step, Drip):
                    while conn.written < step.limit:
                        writer.write((step.data * (step.piece // len(step.data) + 1))[: step.piece])
                        conn.written += step.piece
                        await writer.drain()
                else:
                    data = step if isinstance(step, bytes) else step(conn.requests)  # type: ignore[operator]
                    writer.write(data)
                    conn.written += len(data)
                    await writer.drain()
            while await reader.read(65536):
                pass  # extra requests on a finished script go unanswered
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            conn.closed.set()


def response(
    body: bytes = b'{"ok": true}',
    *,
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (("Content-Type", "application/json"),),
    chunked: bool = False,
    trailers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One raw HTTP/1.1 answer, framed by Content-Length, or chunked (with any trailers)."""
    lines = [f"HTTP/1.1 {status} X", *(f"{n}: {v}" for n, v in headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = (f"{len(body):x}\r\n".encode() + body + b"\r\n") if body else b""
        tail = "".join(f"{n}: {v}\r\n" for n, v in trailers).encode()
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + framed + b"0\r\n" + tail + b"\r\n"
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chat(content: str) -> bytes:
    """A chat completion body whose content tells the answers apart."""
    return (
        b'{"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [{"index": 0, '
        b'"message": {"role": "assistant", "content": "'
        + content.encode()
        + b'"}, "finish_reason": "stop"}], '
        b'"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}'
    )


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about a thousandth of ``size``)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
