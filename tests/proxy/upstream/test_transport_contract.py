"""What every ``upstream.Transport`` does, whichever it is: the contract the request path relies on.

Each test runs once per implementation, against a peer that answers as a
``Script`` says: ``http1.Pool`` against an aiohttp server on loopback, and
``memory.Transport`` against a handler in the same process. Where a test needs
the peer to wait, the peer waits on an ``asyncio.Event``; nothing sleeps, and
the timeout tests wait only for the short deadlines they set. The wire details
of HTTP/1.1 (framing, keep-alive, decoding) stay in tests/proxy/test_http1.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from llmgw_proxy import upstream
from llmgw_proxy.upstream import http1, memory

KEY = "Bearer sk-contract-secret-0123456789abcdef"
TIMEOUTS = upstream.Timeouts(connect=2.0, first_byte=5.0, total=10.0)
PATH = "/v1/chat/completions?api-version=2024-06-01"
BEFORE_HEADERS, MID_BODY = "before headers", "mid body"
MiB = 1024 * 1024


@dataclasses.dataclass
class Script:
    """One answer of a peer: framed by its length when it has at most one chunk, chunked otherwise."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: {"Content-Type": "application/json"})
    chunks: tuple[bytes, ...] = (b'{"ok": true}',)
    headers_after: asyncio.Event | None = None  # the headers wait for this
    rest_after: asyncio.Event | None = None  # the chunks after the first wait for this
    drop: str | None = None  # BEFORE_HEADERS or MID_BODY (after the first chunk): the peer goes away

    async def pieces(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == 1 and self.rest_after is not None:
                await self.rest_after.wait()
            if i == 1 and self.drop == MID_BODY:
                raise Dropped
            yield chunk


class Dropped(Exception):
    """Raised by ``Script.pieces`` where the peer goes away; each peer does so its own way."""


@dataclasses.dataclass
class Received:
    method: str
    target: str  # path and query
    headers: dict[str, str]  # names in lower case
    body: bytes


def echo(received: Received) -> Script:
    return Script(chunks=(received.body,))


class Peer:
    """The far end of a transport under test: answers by ``answer``, records what arrived."""

    transport: upstream.Transport
    url: str
    unreachable_url: str

    def __init__(self) -> None:
        self.answer: Callable[[Received], Script] = echo
        self.received: list[Received] = []
        self.abandoned = asyncio.Event()  # an exchange ended before the peer finished its answer

    def record(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Script:
        received = Received(method, target, {k.lower(): v for k, v in headers.items()}, body)
        self.received.append(received)
        return self.answer(received)


class LoopbackPeer(Peer):
    """An aiohttp server on 127.0.0.1, for ``http1.Pool``."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        script = self.record(request.method, request.path_qs, request.headers, await request.read())
        assert request.transport is not None
        try:
            if script.drop == BEFORE_HEADERS:
                request.transport.abort()
                raise asyncio.CancelledError  # the handler ends; nothing is written
            if script.headers_after is not None:
                await script.headers_after.wait()
            if len(script.chunks) <= 1:
                return web.Response(
                    status=script.status, headers=script.headers, body=b"".join(script.chunks)
                )
            response = web.StreamResponse(status=script.status, headers=script.headers)
            await response.prepare(request)
            try:
                async for chunk in script.pieces():
                    await response.write(chunk)
            except Dropped:
                request.transport.abort()
                raise asyncio.CancelledError from None
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.abandoned.set()
            raise


class MemoryPeer(Peer):
    """The handler of a ``memory.Transport``: refuses URLs other than its own, like a closed port."""

    url = "http://peer.test" + PATH
    unreachable_url = "http://unreachable.test" + PATH

    def __init__(self) -> None:
        super().__init__()
        self.transport = memory.Transport(self._handle)

    async def _handle(self, request: upstream.Request) -> memory.Answer:
        if not request.url.startswith("http://peer.test/"):
            raise upstream.ConnectFailed("connection refused")
        target = request.url.removeprefix("http://peer.test")
        assert not isinstance(request.body, upstream.Upload)  # the in-memory twin gathers uploads
        script = self.record(request.method, target, request.headers, request.body or b"")
        if script.drop == BEFORE_HEADERS:
            raise upstream.ConnectFailed("the peer closed the connection")
        try:
            if script.headers_after is not None:
                await script.headers_after.wait()
        except asyncio.CancelledError:
            self.abandoned.set()
            raise
        return memory.Answer(script.status, script.headers, self._body(script))

    async def _body(self, script: Script) -> AsyncIterator[bytes]:
        try:
            async for chunk in script.pieces():
                yield chunk
        except Dropped:
            raise upstream.ConnectFailed("the peer closed the connection") from None
        except (asyncio.CancelledError, GeneratorExit):
            self.abandoned.set()
            raise


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


# Every upstream.Transport implementation; a new one joins here and must pass the whole file.
@pytest.fixture(params=["http1.Pool", "memory.Transport"])
async def peer(request: pytest.FixtureRequest, aiohttp_server: AiohttpServer) -> AsyncIterator[Peer]:
    if request.param == "memory.Transport":
        yield MemoryPeer()
        return
    loopback = LoopbackPeer()
    server = await aiohttp_server(loopback.app())
    pool = http1.Pool()
    loopback.transport = pool
    loopback.url = str(server.make_url("/")).rstrip("/") + PATH
    loopback.unreachable_url = closed_port_url()
    yield loopback
    await pool.close()


def post(
    url: str,
    body: bytes = b'{"model": "m"}',
    *,
    timeouts: upstream.Timeouts = TIMEOUTS,
    headers: Mapping[str, str] | None = None,
    limits: upstream.Limits = upstream.DEFAULT_LIMITS,
) -> upstream.Request:
    sent = {"Authorization": KEY, "Content-Type": "application/json", **(headers or {})}
    return upstream.Request("POST", url, sent, body, timeouts, limits)


async def exchange(peer: Peer, request: upstream.Request) -> bytes:
    """Send and read the whole answer, closing it however that ends."""
    resp = await peer.transport.send(request)
    try:
        return await resp.read()
    finally:
        resp.close()


async def let_go(peer: Peer) -> None:
    async with asyncio.timeout(5):
        await peer.abandoned.wait()


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script(), id="ok-with-a-length"),
        pytest.param(
            Script(429, {"Content-Type": "application/json", "Retry-After": "2"}, (b'{"error": {}}',)),
            id="rate-limited-with-retry-after",
        ),
        pytest.param(
            Script(503, {"Content-Type": "text/plain", "X-Upstream": "a"}, (b"down ", b"for ", b"now")),
            id="failure-chunked",
        ),
        pytest.param(Script(204, {"X-Trace": "t-1"}, ()), id="no-content"),
    ],
)
async def test_the_status_headers_and_body_come_back_as_the_peer_sent_them(
    peer: Peer, script: Script
) -> None:
    peer.answer = lambda received: script
    resp = await peer.transport.send(post(peer.url))
    assert resp.status == script.status
    for name, value in script.headers.items():
        assert resp.headers[name] == value
        assert resp.headers.get(name.upper()) == value  # found by name in any case, as the pipeline does
    assert await resp.read() == b"".join(script.chunks)


async def test_the_request_reaches_the_peer_with_its_method_target_headers_and_body(peer: Peer) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    await exchange(peer, post(peer.url, body, headers={"X-Request-Id": "r-1", "User-Agent": "llmgw-proxy"}))
    [received] = peer.received
    assert (received.method, received.target, received.body) == ("POST", PATH, body)
    assert received.headers["authorization"] == KEY
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-request-id"] == "r-1"
    assert received.headers["user-agent"] == "llmgw-proxy"


async def test_a_streamed_body_arrives_chunk_by_chunk_in_order_before_the_peer_finishes(peer: Peer) -> None:
    sent = (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n", b"data: [DONE]\n\n")
    rest_sent = asyncio.Event()
    peer.answer = lambda received: Script(
        headers={"Content-Type": "text/event-stream"}, chunks=sent, rest_after=rest_sent
    )
    resp = await peer.transport.send(post(peer.url))
    chunks = resp.chunks()
    assert await anext(chunks) == sent[0]  # while the peer still holds the rest
    rest_sent.set()
    assert b"".join([chunk async for chunk in chunks]) == b"".join(sent[1:])


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param((b'{"ok": true}',), id="one-piece"),
        pytest.param(tuple(b"%d," % i for i in range(100)), id="a-hundred-pieces"),
        pytest.param((b"x" * 65536,) * 16, id="a-mebibyte-in-pieces"),
    ],
)
async def test_read_returns_the_whole_body_however_the_peer_split_it(
    peer: Peer, sent: tuple[bytes, ...]
) -> None:
    peer.answer = lambda received: Script(chunks=sent)
    assert await exchange(peer, post(peer.url)) == b"".join(sent)


@pytest.mark.parametrize(
    ("timeouts", "phase"),
    [
        pytest.param(upstream.Timeouts(connect=2, first_byte=0.05, total=5), "first_byte", id="first-byte"),
        pytest.param(upstream.Timeouts(connect=2, first_byte=5, total=0.05), "total", id="total-sooner"),
    ],
)
async def test_a_deadline_that_runs_out_before_the_headers_names_its_phase_and_lets_the_peer_go(
    peer: Peer, timeouts: upstream.Timeouts, phase: str
) -> None:
    never = asyncio.Event()
    peer.answer = lambda received: Script(headers_after=never)
    with pytest.raises(upstream.TimedOut) as caught:
        await peer.transport.send(post(peer.url, timeouts=timeouts))
    assert caught.value.phase == phase
    await let_go(peer)


async def read_whole(resp: upstream.Response) -> None:
    await resp.read()


async def read_by_chunks(resp: upstream.Response) -> None:
    async for _ in resp.chunks():
        pass


@pytest.mark.parametrize(
    "consume", [pytest.param(read_whole, id="read"), pytest.param(read_by_chunks, id="chunks")]
)
async def test_a_total_deadline_that_runs_out_during_the_body_raises_timed_out_total(
    peer: Peer, consume: Callable[[upstream.Response], Awaitable[None]]
) -> None:
    never = asyncio.Event()
    peer.answer = lambda received: Script(chunks=(b"first", b"never sent"), rest_after=never)
    resp = await peer.transport.send(post(peer.url, timeouts=upstream.Timeouts(2, 5, 0.5)))
    with pytest.raises(upstream.TimedOut) as caught:
        await consume(resp)
    assert caught.value.phase == "total"
    resp.close()
    await let_go(peer)


@pytest.mark.parametrize(
    ("url", "script"),
    [
        pytest.param("unreachable_url", Script(), id="refused"),
        pytest.param("url", Script(drop=BEFORE_HEADERS), id="dropped-before-the-headers"),
        pytest.param("url", Script(chunks=(b"a", b"b"), drop=MID_BODY), id="dropped-mid-body"),
    ],
)
async def test_a_peer_that_cannot_be_reached_or_goes_away_raises_connect_failed(
    peer: Peer, url: str, script: Script
) -> None:
    peer.answer = lambda received: script
    with pytest.raises(upstream.ConnectFailed):
        await exchange(peer, post(getattr(peer, url)))


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(peer: Peer) -> None:
    with pytest.raises(upstream.ConnectFailed):
        await exchange(peer, post(peer.url, headers={"X-Note": "one\r\nX-Injected: two"}))
    assert peer.received == []


def timed_out_before_headers(peer: Peer) -> upstream.Request:
    peer.answer = lambda received: Script(headers_after=asyncio.Event())
    return post(peer.url, timeouts=upstream.Timeouts(2, 0.05, 5))


def timed_out_mid_body(peer: Peer) -> upstream.Request:
    peer.answer = lambda received: Script(chunks=(b"a", b"b"), rest_after=asyncio.Event())
    return post(peer.url, timeouts=upstream.Timeouts(2, 5, 0.5))


def refused(peer: Peer) -> upstream.Request:
    return post(peer.unreachable_url)


def dropped_mid_body(peer: Peer) -> upstream.Request:
    peer.answer = lambda received: Script(chunks=(b"a", b"b"), drop=MID_BODY)
    return post(peer.url)


def split_header(peer: Peer) -> upstream.Request:
    return post(peer.url, headers={"X-Note": f"{KEY}\r\nX-Injected: two"})


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(timed_out_before_headers, id="timed-out-before-the-headers"),
        pytest.param(timed_out_mid_body, id="timed-out-mid-body"),
        pytest.param(refused, id="refused"),
        pytest.param(dropped_mid_body, id="dropped-mid-body"),
        pytest.param(split_header, id="a-header-with-a-line-break"),
    ],
)
async def test_no_failure_carries_the_key_from_the_request_headers(
    peer: Peer, failing: Callable[[Peer], upstream.Request]
) -> None:
    with pytest.raises(upstream.UpstreamError) as caught:
        await exchange(peer, failing(peer))
    secret = KEY.split()[1]
    error: BaseException | None = caught.value
    while error is not None:  # the causes too: a log prints the whole chain
        for shown in (str(error), repr(error), *map(repr, error.args)):
            assert secret not in shown
        error = error.__cause__ or error.__context__


@pytest.mark.parametrize(
    "when",
    [
        pytest.param("before reading", id="before-reading"),
        pytest.param("after the first chunk", id="after-the-first-chunk"),
        pytest.param("after reading it whole", id="after-reading-it-whole"),
    ],
)
async def test_closing_a_response_twice_at_any_point_is_safe_and_the_next_send_is_answered(
    peer: Peer, when: str
) -> None:
    rest_sent = asyncio.Event()
    peer.answer = lambda received: Script(chunks=(b"one", b"two"), rest_after=rest_sent)
    resp = await peer.transport.send(post(peer.url))
    if when == "after the first chunk":
        assert await anext(resp.chunks()) == b"one"
    elif when == "after reading it whole":
        rest_sent.set()
        assert await resp.read() == b"onetwo"
    resp.close()
    resp.close()
    peer.answer = echo
    assert await exchange(peer, post(peer.url, b"next")) == b"next"


async def test_closing_a_response_midway_lets_the_peer_go(peer: Peer) -> None:
    never = asyncio.Event()
    peer.answer = lambda received: Script(chunks=(b"one", b"two"), rest_after=never)
    resp = await peer.transport.send(post(peer.url))
    assert await anext(resp.chunks()) == b"one"
    resp.close()
    await let_go(peer)


async def test_many_concurrent_sends_each_get_their_own_answer(peer: Peer) -> None:
    count = 50
    all_arrived = asyncio.Event()

    def answer(received: Received) -> Script:
        if len(peer.received) == count:
            all_arrived.set()
        return Script(chunks=(received.body,), headers_after=all_arrived)  # none answers until all are in

    peer.answer = answer
    bodies = [b'{"n": %d}' % i for i in range(count)]
    answers = await asyncio.gather(*(exchange(peer, post(peer.url, body)) for body in bodies))
    assert answers == bodies


@pytest.mark.parametrize("split", [1, 2], ids=["length", "chunked"])
async def test_a_body_read_whole_past_max_response_bytes_raises_too_large_and_the_next_send_is_answered(
    peer: Peer, split: int
) -> None:
    body = b"x" * (2 * MiB)
    peer.answer = lambda received: Script(chunks=(body[:MiB], body[MiB:]) if split == 2 else (body,))
    small = upstream.Limits(max_response_bytes=MiB)
    resp = await peer.transport.send(post(peer.url, limits=small))
    with pytest.raises(upstream.TooLarge) as caught:
        await resp.read()
    resp.close()
    assert (caught.value.bound, caught.value.limit) == ("maxResponseBytes", MiB)
    assert KEY not in str(caught.value)
    peer.answer = echo
    assert await exchange(peer, post(peer.url, b"again")) == b"again"


async def test_a_streamed_body_is_not_bounded_by_max_response_bytes_in_total(peer: Peer) -> None:
    pieces = tuple(bytes([65 + i]) * (64 * 1024) for i in range(32))  # 2 MiB in pieces of 64 KiB
    peer.answer = lambda received: Script(chunks=pieces)
    resp = await peer.transport.send(post(peer.url, limits=upstream.Limits(max_response_bytes=MiB)))
    assert b"".join([chunk async for chunk in resp.chunks()]) == b"".join(pieces)
