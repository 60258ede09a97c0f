"""The upstream HTTP/1.1 client: pooled keep-alive connections, parsed by llhttp (httptools).

Why not aiohttp's client: per request it builds a URL, a request object, a
payload, a writer, a response object, a stream reader and their timers, which
cost the sidecar about as much CPU as all of its own work. A provider call is
always the same shape (POST, a bytes body, an answer read whole or relayed
chunk by chunk; a relayed upload's body sent as it arrives, paced by the
socket's write buffer), so this client does only that:

- one ``asyncio.Protocol`` per connection; the request goes out as one write;
- connections are kept per origin (scheme, host, port), reused most recent
  first, at most ``limits.pool_size`` open per origin (more requests wait up
  to ``limits.pool_wait`` for one, then fail as ``PoolBusy``, which is not a
  connect timeout: the provider did nothing wrong), and dropped after
  ``idle_seconds`` unused or when the server closes them;
- a connection goes back to the pool once, after its answer ended and only if
  nothing followed that answer: bytes the server sends beyond it (a second
  answer in the same segment, or on an idle connection) close it;
- a request on a reused connection is never re-sent when the connection
  fails: a POST may have reached the provider, and the retry policy decides;
- timeouts: ``connect`` for opening a connection, ``first_byte`` until the
  response headers (counted from when a connection was free, not from the
  wait for one), ``total`` from the request until its last body byte;
- it asks for an identity body, and still decodes gzip or deflate if sent;
- a body is buffered up to ``_HIGH_WATER`` before reading from the socket
  pauses, so a slow caller slows the provider rather than filling memory;
- every answer is bounded by the request's ``upstream.Limits``: the decoded
  bytes buffered (all of a body read whole; decompression stops at the bound,
  so a gzip bomb never inflates past it; each piece held counts ``_PART_COST``
  more, so tiny chunks cannot hide their overhead), the header fields' count and size,
  and the bytes that arrive without a body byte (a head or trailers that never
  end). Breaking one fails the answer with ``TooLarge`` and drops the connection.
  Trailers are counted, never kept, so none reaches the next answer's headers.
- connections open through ``dial.Dialer`` (forward proxy, CA bundle, client
  certificate, address racing: see ``dial``); the pool keeps them per origin
  and ``upstream.Egress``, so providers that leave differently never share one.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import typing
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from llmgw_proxy import upstream
from llmgw_proxy.upstream import dial

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
# What holding one received piece costs besides its bytes (the bytes object, its deque slot):
# counted with the bytes, so an answer sent in one-byte chunks is bounded like any other.
_PART_COST = 64
_DECODE_STEP = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DETACHED = httptools.HttpResponseParser(object())
"""What a closed connection holds instead of its parser: the parser holds the connection's
callbacks, a reference cycle that would keep a dropped connection (its buffers, its transport)
alive until the collector's rare full pass, which under a run of upstream resets adds up."""
_Key = tuple[str, str, int, upstream.Egress]
"""A pool of connections: the origin (scheme, host, port) and how it is reached."""


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[tuple[str, str, int], str, str]:
    """(origin, request target, Host header) of a URL; providers use a handful of URLs."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise upstream.ConnectFailed(f"unsupported URL scheme or host: {scheme!r}")
    host = parts.hostname
    port = parts.port or _DEFAULT_PORTS[scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), target, host_header


def encode_head(method: str, target: str, host: str, headers: Any, length: int | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines.append(f"Accept-Encoding: identity\r\n{framing}\r\n\r\n")
    head = "".join(lines)
    # One count per kind instead of a check per header: any CR or LF beyond the line
    # ends means a name or value carried one, which would split the request.
    ends = len(lines) + 3  # two in the first item, three in the last
    if head.count("\r") != ends or head.count("\n") != ends:
        raise upstream.ConnectFailed("a request header contains a line break")
    return head.encode("utf-8", "surrogateescape")


class _Stop(Exception):
    """Raised from a parser callback to stop parsing: the connection ends with ``error``."""

    def __init__(self, error: upstream.UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


class _Body:
    """What has arrived of one response body, for ``read`` or ``chunks``."""

    __slots__ = ("decoder", "done", "error", "parts", "size", "waiter", "whole")

    def __init__(self) -> None:
        self.parts: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.done = False
        self.error: upstream.UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.decoder: Any = None  # a zlib decompressor when the body is gzip or deflate
        self.whole = False  # read whole, not chunk by chunk: buffering must not pause the socket

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Response:
    """One upstream answer: status and headers now, the body as it arrives."""

    __slots__ = ("_body", "_conn", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDict[str], body: _Body) -> None:
        self._conn = conn
        self._body = body
        self.status = status
        self.headers = headers

    async def _wait(self) -> None:
        body = self._body
        body.waiter = asyncio.get_running_loop().create_future()
        try:
            await body.waiter
        finally:
            body.waiter = None

    async def read(self) -> bytes:
        body = self._body
        body.whole = True
        self._conn.resume()
        while not body.done and body.error is None:
            await self._wait()
        if body.error is not None:
            raise body.error
        return b"".join(body.parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        body = self._body
        try:
            while True:
                if body.parts:
                    chunk = body.parts.popleft()
                    body.size -= len(chunk) + _PART_COST
                    if body.size <= _LOW_WATER:
                        self._conn.resume()
                    yield chunk
                elif body.error is not None:
                    raise body.error
                elif body.done:
                    return
                else:
                    await self._wait()
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection if the body is not read to its end; a whole one is already reused."""
        if not self._body.done:
            self._conn.abort(upstream.ConnectFailed("the response was abandoned"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the parser calls the ``on_*`` methods from ``data_received``."""

    def __init__(self, pool: Pool, origin: _Key) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.closed = False
        self.paused = False
        self._headers: list[tuple[str, str]] = []
        self._started: asyncio.Future[Response] | None = None
        self._body: _Body | None = None
        self._until_eof = False  # no length and not chunked: the body ends with the connection
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.limits = upstream.DEFAULT_LIMITS  # the current request's
        self._expecting = False  # a request is out and its (final) answer has not ended
        self._reuse: bool | None = None  # set when an answer ended during this feed: release after it
        self._fields = 0  # header (and trailer) fields of the current answer, and their bytes
        self._field_bytes = 0
        self._framing = 0  # bytes received since the last body byte: a head or trailers that never end
        self._writable: asyncio.Future[None] | None = None  # set while the socket's write buffer is full
        self._spoiled = False  # an upload is not all sent: the connection cannot carry another request

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._expecting:
            self.abort(upstream.ConnectFailed("unexpected bytes on an idle connection"))
            return
        self._framing += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            stop = exc.__context__
            if isinstance(stop, _Stop):
                self.abort(stop.error)
            else:
                self.abort(upstream.ConnectFailed(f"malformed upstream response: {type(exc).__name__}"))
        except httptools.HttpParserUpgrade:
            self.abort(upstream.ConnectFailed("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self.abort(upstream.ConnectFailed(f"malformed upstream response: {type(exc).__name__}"))
        else:
            if self._expecting and self._framing > self.limits.max_header_bytes:
                self.abort(upstream.TooLarge("maxHeaderBytes", self.limits.max_header_bytes))
        # An answer that ended in this feed goes back only now, when nothing followed it.
        reuse, self._reuse = self._reuse, None
        if reuse is not None and not self.closed:
            if reuse and not self._spoiled:
                self.pool.release(self)
            else:
                self.abort(upstream.ConnectFailed("the connection is not reusable"))

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()  # an upload waiting to write finds the connection closed
        body = self._body
        if body is not None and self._until_eof and exc is None and not body.done and body.error is None:
            self._expecting = False
            self._finish_body()
        self._fail(upstream.ConnectFailed("the upstream closed the connection"))
        self.pool.forget(self)
        self.parser = _DETACHED  # no callback comes after this one

    # -- httptools callbacks (a ``_Stop`` raised here ends the connection)
    def on_message_begin(self) -> None:
        if not self._expecting:
            raise _Stop(upstream.ConnectFailed("the upstream sent more than one answer"))
        self._headers = []
        self._fields = self._field_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        self._fields += 1
        self._field_bytes += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
        if self._fields > limits.max_headers:
            raise _Stop(upstream.TooLarge("maxHeaders", limits.max_headers))
        if self._field_bytes > limits.max_header_bytes:
            raise _Stop(upstream.TooLarge("maxHeaderBytes", limits.max_header_bytes))
        if self._body is None:  # a trailer (after the body) is counted, never kept
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers = CIMultiDict(self._headers)
        self._headers = []
        if status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        body = self._body = _Body()
        coding = headers.get("Content-Encoding", "identity").lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            body.decoder = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, detected
        elif coding != "identity":
            body.error = upstream.ConnectFailed(f"unsupported content-encoding {coding!r}")
        self._until_eof = (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            and status not in (204, 304)
        )
        started, self._started = self._started, None
        if self._timer is not None and self._deadline:
            self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._timed_out, "total")
        if started is not None and not started.done():
            started.set_result(Response(self, status, headers, body))

    def on_body(self, data: bytes) -> None:
        self._framing = 0
        body = self._body
        if body is None or body.error is not None:
            return
        cap = self.limits.max_response_bytes
        while data:
            room = cap - body.size - _PART_COST
            piece = data
            if body.decoder is not None:
                try:
                    # A step at a time and at most one byte past the room: a bomb stops inflating
                    # here, and no single output buffer grows far beyond what is kept.
                    piece = body.decoder.decompress(data, max(0, min(room, _DECODE_STEP)) + 1)
                except zlib.error:
                    body.error = upstream.ConnectFailed("the upstream body does not decompress")
                    body.wake()
                    return
                data = body.decoder.unconsumed_tail
            else:
                data = b""
            if not piece:
                break  # a gzip header: nothing decoded yet
            if len(piece) > room:
                raise _Stop(upstream.TooLarge("maxResponseBytes", cap))
            body.parts.append(piece)
            body.size += len(piece) + _PART_COST
        if body.size > _HIGH_WATER and not body.whole and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        body.wake()

    def on_message_complete(self) -> None:
        body = self._body
        if body is None:
            return  # the end of an interim answer
        self._expecting = False
        self._finish_body()
        self._reuse = self.parser.should_keep_alive() and not isinstance(body.error, upstream.TooLarge)

    # -- used by Pool and Response
    def start(
        self,
        head: bytes,
        payload: bytes | None,
        first_byte_at: float,
        deadline: float,
        limits: upstream.Limits,
    ) -> asyncio.Future[Response]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        started: asyncio.Future[Response] = loop.create_future()
        self._started, self._body, self._deadline = started, None, deadline
        self.limits, self._expecting, self._framing = limits, True, 0
        if first_byte_at < deadline:
            self._timer = loop.call_at(first_byte_at, self._timed_out, "first_byte")
        else:
            self._timer, self._deadline = loop.call_at(deadline, self._timed_out, "total"), 0.0
        self.transport.write(head + payload if payload else head)
        return started

    async def upload(self, started: asyncio.Future[Response], body: upstream.Upload) -> Response:
        """Send ``body`` after the head ``start`` wrote, until it ends or the answer comes."""
        # Until the last byte went out, an answer that ends must not return the connection to the
        # pool: the rest of this body would be read as the next request.
        self._spoiled = True
        pump = asyncio.ensure_future(self._pump(body))
        try:
            await asyncio.wait((started, pump), return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and pump.exception() is not None:
                self.abort(upstream.ConnectFailed("the request body could not be sent"))
                if started.done() and not started.cancelled():
                    started.exception()  # taken: the body's own failure is the one to report
                pump.result()  # the body's own failure (the caller's body broke or was too large)
            return await started
        finally:
            if not pump.done():
                pump.cancel()  # answered before the whole body went out: the connection stays spoiled

    async def _pump(self, body: upstream.Upload) -> None:
        chunked = body.length is None
        async for chunk in body.chunks:
            if not chunk:
                continue
            if self.closed or self.transport is None:
                raise upstream.ConnectFailed("the upstream closed the connection")
            self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if self._writable is not None:
                await self._writable  # the peer reads slower than the caller sends: wait for it
        if chunked and not self.closed and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self._spoiled = False  # all of it went out: the connection may serve another request

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def abort(self, error: upstream.UpstreamError) -> None:
        self._expecting = False
        self._fail(error)
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self.pool.forget(self)

    def _finish_body(self) -> None:
        """The body ended; the caller decides whether the connection goes back to the pool."""
        body = self._body
        assert body is not None
        if body.decoder is not None and body.error is None:
            rest = body.decoder.flush()
            if body.size + len(rest) + _PART_COST > self.limits.max_response_bytes:
                body.error = upstream.TooLarge("maxResponseBytes", self.limits.max_response_bytes)
            elif rest:
                body.parts.append(rest)
                body.size += len(rest) + _PART_COST
        body.done = True
        body.wake()
        self._body = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.paused:
            self.resume()

    def _timed_out(self, phase: str) -> None:
        self._timer = None
        self.abort(upstream.TimedOut(phase))

    def _fail(self, error: upstream.UpstreamError) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        started, self._started = self._started, None
        if started is not None and not started.done():
            started.set_exception(error)
        body, self._body = self._body, None
        if body is not None and not body.done and body.error is None:
            body.error = error
            body.wake()


class Pool:
    """The ``upstream.Transport`` the sidecar uses: ``send`` one request, get its ``Response``."""

    def __init__(
        self,
        *,
        idle_seconds: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        dialer: dial.Dialer | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._dialer = dialer or dial.Dialer()
        self._idle: dict[_Key, list[_Connection]] = {}
        self._open: collections.Counter[_Key] = collections.Counter()
        self._waiters: dict[_Key, collections.deque[asyncio.Future[None]]] = {}
        self._all: set[_Connection] = set()
        self._closed = False
        self._swept = 0.0

    async def send(self, request: upstream.Request) -> Response:
        (scheme, hostname, port), target, host = _split(request.url)
        origin = (scheme, hostname, port, request.egress)
        route = self._dialer.route(scheme, hostname, port, request.egress)
        headers = request.headers
        if route.proxy is not None and scheme == "http":
            # Plain http through a proxy: the request itself goes to the proxy, in absolute form.
            target = f"http://{host}{target}"
            auth = route.proxy_authorization()
            if auth is not None:
                headers = {**headers, "Proxy-Authorization": auth}
        upload, body = None, b""
        if isinstance(request.body, upstream.Upload):
            upload = request.body
        elif request.body is not None:
            body = request.body
        length = len(body) if upload is None else upload.length
        head = encode_head(request.method, target, host, headers, length)
        loop = asyncio.get_running_loop()
        t = request.timeouts
        now = loop.time()
        deadline = now + t.total
        limits = request.limits
        conn = self._checkout(origin, now)
        if conn is None and self._open[origin] >= limits.pool_size:
            conn = await self._wait_for_one(origin, limits, min(now + limits.pool_wait, deadline))
            now = loop.time()  # the wait was the sidecar's, so first_byte starts after it (total does not)
        if conn is None:
            conn = await self._connect(origin, route, limits, loop.time() + min(t.connect, t.total))
        try:
            if upload is not None:
                # The upload's own sending takes time before any answer: total alone bounds it.
                return await conn.upload(conn.start(head, None, deadline, deadline, limits), upload)
            return await conn.start(head, body, now + t.first_byte, deadline, limits)
        except asyncio.CancelledError:
            conn.abort(upstream.ConnectFailed("the request was cancelled"))  # its answer would be orphaned
            raise

    def release(self, conn: _Connection) -> None:
        if self._closed:
            conn.abort(upstream.ConnectFailed("the client is closed"))
            return
        now = conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._wake(conn.origin)
        if now - self._swept > self.idle_seconds:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close connections idle too long everywhere, not only where requests still go.

        A reload that moves a provider to a new URL leaves its old origin's
        connections idle for good; checkouts alone would never look at them again.
        """
        self._swept = now
        for idle in list(self._idle.values()):
            for conn in [c for c in idle if now - c.idle_since >= self.idle_seconds]:
                conn.abort(upstream.ConnectFailed("idle too long"))  # forget() takes it off the list

    def forget(self, conn: _Connection) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        self._open[conn.origin] -= 1
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake(conn.origin)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.abort(upstream.ConnectFailed("the client is closed"))
        self._idle.clear()

    def _checkout(self, origin: _Key, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used is the least likely to be closed by now
            transport = conn.transport
            if (
                now - conn.idle_since < self.idle_seconds
                and transport is not None
                and not transport.is_closing()
            ):
                return conn
            conn.abort(upstream.ConnectFailed("idle too long"))
        return None

    async def _wait_for_one(
        self, origin: _Key, limits: upstream.Limits, give_up_at: float
    ) -> _Connection | None:
        """At the limit: wait for a connection to come back (reused) or close (None: open one).

        Timed apart from ``connect``: a busy pool is the sidecar's limit, not the provider's fault.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(give_up_at):
                while self._open[origin] >= limits.pool_size:
                    if self._closed:
                        raise upstream.ConnectFailed("the client is closed")
                    waiter = loop.create_future()
                    self._waiters.setdefault(origin, collections.deque()).append(waiter)
                    await waiter
                    reused = self._checkout(origin, loop.time())
                    if reused is not None:
                        return reused
        except TimeoutError:
            raise upstream.PoolBusy(limits.pool_size) from None
        return None

    async def _connect(
        self, origin: _Key, route: dial.Route, limits: upstream.Limits, give_up_at: float
    ) -> _Connection:
        if self._closed:
            raise upstream.ConnectFailed("the client is closed")
        try:
            async with asyncio.timeout_at(give_up_at):
                self._open[origin] += 1
                try:
                    scheme, host, port, egress = origin
                    _, conn = await self._dialer.open(
                        lambda: _Connection(self, origin),
                        scheme,
                        host,
                        port,
                        egress,
                        route,
                        limits,
                        self._ssl,
                    )
                except BaseException:
                    self._open[origin] -= 1
                    self._wake(origin)
                    raise
        except TimeoutError:
            raise upstream.TimedOut("connect") from None
        assert isinstance(conn, _Connection)
        self._all.add(conn)
        return conn

    def _wake(self, origin: _Key) -> None:
        waiters = self._waiters.get(origin)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
