"""The upstream HTTP/1.1 client against scripted raw servers on loopback sockets.

Each server reads whole requests (head + Content-Length body) and answers
with exactly the bytes a test scripts, so framing, keep-alive, failures and
timeouts are the client's alone to get right.
"""

from __future__ import annotations

import asyncio
import gzip
import pathlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy import upstream
from llmgw_proxy.upstream import http1

if TYPE_CHECKING:
    from conftest import Eventually

Answer = Callable[[dict[str, str], bytes, asyncio.StreamWriter], Awaitable[None]]
TIMEOUTS = upstream.Timeouts(connect=2.0, first_byte=5.0, total=10.0)


def ok(body: bytes = b'{"ok": true}', *extra: str) -> Answer:
    async def answer(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return answer


def raw(data: bytes, *, then_close: bool = False) -> Answer:
    async def answer(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        if then_close:
            await writer.drain()
            writer.close()

    return answer


class Server:
    """Answers the n-th request with ``answers[n]`` (the last one repeats); counts connections."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.connections = 0
        self.closed_by_client = asyncio.Event()
        self.arrived = asyncio.Event()  # the first request was read
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head_bytes = await reader.readuntil(b"\r\n\r\n")
                lines = head_bytes.decode().split("\r\n")
                head = {"": lines[0]}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(": ")
                        head[name.lower()] = value
                payload = await reader.readexactly(int(head.get("content-length", "0")))
                self.requests.append((head, payload))
                self.arrived.set()
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
                await answer(head, payload, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()


def post(
    url: str,
    body: bytes = b'{"model": "m"}',
    limits: upstream.Limits = upstream.DEFAULT_LIMITS,
    **headers: str,
) -> upstream.Request:
    headers = {"Content-Type": "application/json", **headers}
    return upstream.Request("POST", url, headers, body, TIMEOUTS, limits)


@pytest.fixture
async def pool() -> AsyncIterator[http1.Pool]:
    made = http1.Pool()
    yield made
    await made.close()


async def test_sends_the_request_once_framed_and_reuses_the_connection(pool: http1.Pool) -> None:
    async with Server(ok(b"first"), ok(b"second")) as server:
        first = await pool.send(post(server.url, b'{"a": 1}', Authorization="Bearer sk-x"))
        assert (first.status, await first.read()) == (200, b"first")
        second = await pool.send(post(server.url))
        assert await second.read() == b"second"
    assert server.connections == 1
    head, payload = server.requests[0]
    assert head[""] == "POST /v1/chat/completions HTTP/1.1"
    assert head["host"] == server.url.split("/")[2]
    assert head["authorization"] == "Bearer sk-x"
    assert head["accept-encoding"] == "identity"
    assert payload == b'{"a": 1}'


async def test_opens_a_new_connection_after_connection_close(pool: http1.Pool) -> None:
    async with Server(ok(b"x", "Connection: close")) as server:
        for _ in range(2):
            assert await (await pool.send(post(server.url))).read() == b"x"
    assert server.connections == 2


async def test_reads_a_body_that_ends_with_the_connection(pool: http1.Pool) -> None:
    answer = raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", then_close=True)
    async with Server(answer) as server:
        assert await (await pool.send(post(server.url))).read() == b"until the end"


async def test_streams_a_chunked_body_chunk_by_chunk(pool: http1.Pool) -> None:
    async def answer(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await released.wait()  # the next chunk only after the client has seen this one
            released.clear()
        writer.write(b"0\r\n\r\n")

    released = asyncio.Event()
    async with Server(answer, ok(b"again")) as server:
        resp = await pool.send(post(server.url))
        assert resp.headers["content-type"] == "text/event-stream"
        seen = []
        async for chunk in resp.chunks():
            seen.append(chunk)
            released.set()
        assert seen == [b"data: 1\n\n", b"data: 2\n\n"]
        assert await (await pool.send(post(server.url))).read() == b"again"
    assert server.connections == 1  # the stream was read to its end, so its connection was reused


async def test_decodes_a_gzip_body_it_did_not_ask_for(pool: http1.Pool) -> None:
    async with Server(ok(gzip.compress(b'{"zipped": true}'), "Content-Encoding: gzip")) as server:
        assert await (await pool.send(post(server.url))).read() == b'{"zipped": true}'


async def test_refuses_a_content_encoding_it_cannot_decode(pool: http1.Pool) -> None:
    async with Server(ok(b"\x00\x01", "Content-Encoding: br")) as server:
        resp = await pool.send(post(server.url))
        with pytest.raises(upstream.ConnectFailed, match="content-encoding"):
            await resp.read()


async def test_skips_an_interim_answer(pool: http1.Pool) -> None:
    async with Server(
        raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    ) as server:
        resp = await pool.send(post(server.url))
        assert (resp.status, await resp.read()) == (201, b"ok")


async def test_a_malformed_answer_is_a_connect_failure(pool: http1.Pool) -> None:
    async with Server(raw(b"SMTP ready\r\n\r\n")) as server:
        with pytest.raises(upstream.ConnectFailed, match="malformed"):
            await pool.send(post(server.url))


async def test_a_reset_mid_body_fails_the_read(pool: http1.Pool) -> None:
    answer = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", then_close=True)
    async with Server(answer) as server:
        resp = await pool.send(post(server.url))
        with pytest.raises(upstream.ConnectFailed, match="closed the connection"):
            await resp.read()


async def test_refuses_a_header_with_a_line_break_before_connecting(pool: http1.Pool) -> None:
    async with Server(ok()) as server:
        with pytest.raises(upstream.ConnectFailed, match="line break"):
            await pool.send(
                upstream.Request("POST", server.url, {"X-Evil": "a\r\nX-Injected: yes"}, b"", TIMEOUTS)
            )
    assert server.connections == 0


async def test_an_unreachable_port_is_a_connect_failure(pool: http1.Pool) -> None:
    async with Server(ok()) as server:
        url = server.url
    with pytest.raises(upstream.ConnectFailed):
        await pool.send(post(url))


async def test_a_silent_upstream_times_out_waiting_for_the_first_byte(pool: http1.Pool) -> None:
    async def silent(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        pass

    quick = upstream.Timeouts(connect=1.0, first_byte=0.2, total=5.0)
    async with Server(silent) as server:
        with pytest.raises(upstream.TimedOut) as caught:
            await pool.send(upstream.Request("POST", server.url, {}, b"{}", quick))
        assert caught.value.phase == "first_byte"
        await server.closed_by_client.wait()  # the stalled connection is dropped, not pooled


async def test_a_stalled_body_times_out_on_the_total_deadline(pool: http1.Pool) -> None:
    quick = upstream.Timeouts(connect=1.0, first_byte=0.2, total=0.4)
    async with Server(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")) as server:
        resp = await pool.send(upstream.Request("POST", server.url, {}, b"{}", quick))
        with pytest.raises(upstream.TimedOut) as caught:
            await resp.read()
        assert caught.value.phase == "total"


async def test_waits_for_a_connection_at_the_limit() -> None:
    gate = asyncio.Event()

    async def held(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        await ok(b"done")(head, payload, writer)

    limited = http1.Pool()
    one = upstream.Limits(pool_size=1)
    try:
        async with Server(held) as server:
            first = asyncio.ensure_future(limited.send(post(server.url, limits=one)))
            second = asyncio.ensure_future(limited.send(post(server.url, limits=one)))
            await server.arrived.wait()
            assert not second.done() and len(server.requests) == 1  # queued, not sent
            gate.set()
            for task in (first, second):
                assert await (await task).read() == b"done"
        assert server.connections == 1
    finally:
        await limited.close()


async def test_drops_a_connection_idle_past_its_limit() -> None:
    fresh_only = http1.Pool(idle_seconds=0.0)
    try:
        async with Server(ok()) as server:
            for _ in range(2):
                await (await fresh_only.send(post(server.url))).read()
        assert server.connections == 2
    finally:
        await fresh_only.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    pool: http1.Pool, eventually: Eventually
) -> None:
    async with Server(ok()) as server:
        await (await pool.send(post(server.url))).read()
        server.writers[0].close()
        origin = (*http1._split(server.url)[0], upstream.DEFAULT_EGRESS)
        await eventually(lambda: not pool._idle.get(origin))  # the client has seen the close
        assert (await pool.send(post(server.url))).status == 200
    assert server.connections == 2


async def test_a_cancelled_request_drops_its_connection(pool: http1.Pool) -> None:
    async def never(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        pass

    async with Server(never, ok()) as server:
        task = asyncio.ensure_future(pool.send(post(server.url)))
        await server.arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.closed_by_client.wait()
        assert (await pool.send(post(server.url))).status == 200


async def test_a_slow_reader_pauses_the_socket_instead_of_buffering(
    pool: http1.Pool, eventually: Eventually
) -> None:
    size = 32 * 1024 * 1024
    finished = asyncio.Event()

    async def big(head: dict[str, str], payload: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()
        finished.set()

    async with Server(big) as server:
        resp = await pool.send(post(server.url))
        chunks = resp.chunks()
        received = len(await anext(chunks))
        await eventually(lambda: resp._conn.paused, within=10)
        assert resp._body.size <= 2 * http1._HIGH_WATER  # bounded while the caller does not read
        assert not finished.is_set()
        async for chunk in chunks:
            received += len(chunk)
        assert received == size and finished.is_set()


async def test_close_drops_every_connection_and_refuses_new_requests() -> None:
    closing = http1.Pool()
    async with Server(ok()) as server:
        await (await closing.send(post(server.url))).read()
        await closing.close()
        await server.closed_by_client.wait()
        with pytest.raises(upstream.ConnectFailed, match="closed"):
            await closing.send(post(server.url))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_speaks_tls_and_verifies_the_certificate(
    certificate: tuple[pathlib.Path, pathlib.Path],
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = http1.Pool(ssl_context=ssl.create_default_context(cafile=str(cert)))
    default = http1.Pool()
    try:
        async with Server(ok(b"secure")) as server:
            assert server.server is not None
            server.server.close()
            server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=server_ctx)
            server.port = server.server.sockets[0].getsockname()[1]
            url = server.url.replace("http://", "https://")
            assert await (await trusting.send(post(url))).read() == b"secure"
            with pytest.raises(upstream.TlsFailed, match="certificate verification failed"):
                await default.send(post(url))  # the system trust store does not know this certificate
    finally:
        await trusting.close()
        await default.close()


@pytest.mark.parametrize(
    ("url", "origin", "target", "host"),
    [
        pytest.param("http://h/v1/x", ("http", "h", 80), "/v1/x", "h", id="default-port"),
        pytest.param("https://h:8443/x?v=1", ("https", "h", 8443), "/x?v=1", "h:8443", id="query"),
        pytest.param("http://[::1]:9/", ("http", "::1", 9), "/", "[::1]:9", id="ipv6"),
        pytest.param("HTTPS://h", ("https", "h", 443), "/", "h", id="no-path"),
    ],
)  # fmt: skip
def test_splits_a_url_into_origin_target_and_host(
    url: str, origin: tuple[str, str, int], target: str, host: str
) -> None:
    assert http1._split(url) == (origin, target, host)


def test_refuses_a_url_it_cannot_call() -> None:
    with pytest.raises(upstream.ConnectFailed, match="scheme"):
        http1._split("ftp://h/x")


_NAMES = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(lambda n: n != "host")
_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)


@given(st.dictionaries(_NAMES, _VALUES, max_size=6), st.integers(0, 10**6))
def test_an_encoded_head_parses_back_to_the_same_request(headers: dict[str, str], length: int) -> None:
    head = http1.encode_head("POST", "/v1/x?y=1", "h:1", headers, length)
    seen: dict[str, str] = {}

    class Into:
        def on_header(self, name: bytes, value: bytes) -> None:
            seen[name.decode().lower()] = value.decode()

    parser = httptools.HttpRequestParser(Into())
    parser.feed_data(head)
    assert parser.get_method() == b"POST"
    assert seen == {**headers, "host": "h:1", "accept-encoding": "identity", "content-length": str(length)}


@given(st.text(max_size=10), st.sampled_from(["\r", "\n", "\r\n"]), st.text(max_size=10))
def test_any_line_break_in_a_header_is_refused(before: str, brk: str, after: str) -> None:
    with pytest.raises(upstream.ConnectFailed):
        http1.encode_head("POST", "/", "h", {"x-name": before + brk + after}, 0)


async def test_closes_idle_connections_to_an_origin_no_longer_called() -> None:
    short = http1.Pool(idle_seconds=0.2)
    try:
        async with Server(ok()) as old, Server(ok()) as new:
            await (await short.send(post(old.url))).read()
            await asyncio.sleep(
                0.25
            )  # let the old connection's idle time run out: time itself is the subject
            await (await short.send(post(new.url))).read()
            async with asyncio.timeout(5):
                await old.closed_by_client.wait()  # closed although nothing called the old origin again
        assert old.connections == 1
    finally:
        await short.close()
