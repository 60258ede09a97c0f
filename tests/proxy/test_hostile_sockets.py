"""The sidecar as a process, attacked over raw sockets: slow and idle connections, the
connection cap, and a storm of malformed requests.

Every wait here is bounded by ``BOUND``, far above the small timeouts the sidecar is given,
so a hang fails the test instead of stalling it, and no assertion depends on how fast it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import pathlib
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from llmgw_dev import fake_provider

BOUND = 20.0
"""Seconds any socket may take to be answered or closed (the sidecar's timeouts are 1-2 s)."""
MAX_BODY = 64 * 1024
ADMIN_CAP = 4


class Sidecar:
    def __init__(
        self, proc: asyncio.subprocess.Process, api: tuple[str, int], admin: tuple[str, int]
    ) -> None:
        self.proc, self.api, self.admin = proc, api, admin

    def rss_kib(self) -> int:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
async def sidecar(upstream: str, key_file: pathlib.Path, tmp_path: pathlib.Path) -> AsyncIterator[Sidecar]:
    doc: dict[str, Any] = {
        "version": 1,
        "maxBodyBytes": MAX_BODY,
        "listen": {"idleTimeout": 1, "readTimeout": 1, "maxConnections": 512},
        "admin": {"idleTimeout": 1, "maxConnections": ADMIN_CAP},
        "providers": {
            "fake": {
                "baseUrl": upstream,
                "apiKeyFile": str(key_file),
                "models": ["known"],
                "retry": {"attempts": 1},
            }
        },
        "routes": [{"model": "known", "targets": [{"provider": "fake"}]}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmgw_proxy.cli", "--config", str(path),
        "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(BOUND):
            while True:
                raw = await proc.stderr.readline()
                assert raw, f"sidecar exited: {lines}"
                lines.append(raw)
                line = json.loads(raw)
                if line.get("msg") == "listening":
                    break
        drain = asyncio.create_task(_drain(proc.stderr))
        yield Sidecar(proc, address(line["api"]), address(line["admin"]))
    finally:
        proc.kill()
        await proc.wait()
    await drain


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def answer_or_close(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes] | None:
    """The first answer on the connection, or None if it was closed without one."""
    async with asyncio.timeout(BOUND):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            assert not exc.partial, exc.partial
            return None
        except OSError:  # reset, or the pipe broke while this side was still sending
            return None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    async with asyncio.timeout(BOUND):
        try:
            return await reader.read(-1)
        except OSError:
            return b""


def assert_openai_error(answer: tuple[int, dict[str, str], bytes], request: bytes) -> None:
    status, headers, body = answer
    assert 400 <= status < 500, (status, body, request[:200])
    assert headers.get("content-type", "").startswith("application/json"), (headers, request[:200])
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "code"}, body
    assert error["type"] == "invalid_request_error" and "Traceback" not in error["message"]


async def test_closes_idle_and_half_sent_connections_on_both_listeners(sidecar: Sidecar) -> None:
    for host, port in (sidecar.admin, sidecar.api):
        idle = await asyncio.open_connection(host, port)
        half = await asyncio.open_connection(host, port)
        half[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # a head never finished
        kept = await asyncio.open_connection(host, port)
        kept[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then idle
        assert await until_closed(idle[0]) == b""
        assert await until_closed(half[0]) == b""
        assert (await until_closed(kept[0])).startswith(b"HTTP/1.1 ")
        for _, writer in (idle, half, kept):
            writer.close()


async def test_times_out_a_body_that_never_arrives_with_408(sidecar: Sidecar) -> None:
    reader, writer = await asyncio.open_connection(*sidecar.api)
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writer.write(request + b"Content-Length: 100\r\n\r\n" + b'{"model": ')
    answer = await answer_or_close(reader)
    assert answer is not None and answer[0] == 408
    assert_openai_error(answer, request)
    writer.close()


async def test_refuses_connections_past_the_admin_cap_and_serves_those_within_it(sidecar: Sidecar) -> None:
    held = [await asyncio.open_connection(*sidecar.admin) for _ in range(ADMIN_CAP)]
    await asyncio.sleep(0)  # the loop accepts them in order; the probe below comes after
    over_reader, over_writer = await asyncio.open_connection(*sidecar.admin)
    refused = await until_closed(over_reader)
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert json.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
    # A connection within the cap still gets its probe answered.
    reader, writer = held[0]
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await answer_or_close(reader)
    assert answer is not None and answer[0] == 200
    # Once the idle ones are closed, new connections are served again.
    for reader, _ in held:
        await until_closed(reader)
    reader, writer = await asyncio.open_connection(*sidecar.admin)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await answer_or_close(reader)
    assert answer is not None and answer[0] == 200
    for _, w in [*held, (over_reader, over_writer), (reader, writer)]:
        w.close()


STORM = 2400
"""Requests in the storm; the issue asks for at least 2,000."""
CONCURRENCY = 48
RSS_GROWTH_KIB = 64 * 1024
"""Generous: the storm's bodies are bounded by MAX_BODY and nothing of them may be kept."""
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
JSON_TYPE = b"Content-Type: application/json\r\n"


def post(body: bytes, *headers: bytes, path: bytes = b"/v1/chat/completions") -> bytes:
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if not any(h.lower().startswith(b"content-type") for h in headers):
        head += JSON_TYPE
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def junk(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def name(rng: random.Random, size: int) -> bytes:
    return "".join(rng.choices("abcxyz-_./?#%é\u202e", k=size)).encode()


def storm_case(rng: random.Random, i: int) -> tuple[bytes, str]:
    """One hostile request and how it is sent: 'all' then wait, 'shut' (half-close after
    sending), or 'slow' (a byte at a time, never finishing)."""
    pick = i % 40
    model = b'"model": "known"'
    cases: list[tuple[bytes, str]] = [
        # Request lines and heads that are not HTTP, or too big.
        (junk(rng, rng.randrange(1, 200)) + b"\r\n\r\n", "all"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + junk(rng, 64), "shut"),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", "all"),
        (b"P@ST /v1/chat/completions HTTP/1.1\r\n\r\n", "all"),
        (b"GET /" + b"a" * rng.randrange(9000, 20000) + b" HTTP/1.1\r\n\r\n", "all"),
        (CHAT + b"X-Big: " + b"b" * rng.randrange(9000, 20000) + b"\r\n\r\n", "all"),
        (CHAT + b"".join(b"X-H%d: v\r\n" % n for n in range(rng.randrange(101, 300))) + b"\r\n", "all"),
        (CHAT + b"no colon here\r\n\r\n", "all"),
        (CHAT + b"X-Bad\x00: v\r\n\r\n", "all"),
        # Framing: lengths and encodings that lie or conflict.
        (post(b"{}", b"Content-Length: -1"), "all"),
        (post(b"{}", b"Content-Length: abc"), "all"),
        (post(b"{}", b"Content-Length: 2", b"Content-Length: 3"), "all"),
        (post(b"2\r\n{}\r\n0\r\n\r\n", b"Content-Length: 9", b"Transfer-Encoding: chunked"), "all"),
        (post(b"zz\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"), "all"),
        (post(b"{}", b"Transfer-Encoding: gzip"), "all"),
        (post(b'5\r\n{"mod', b"Transfer-Encoding: chunked"), "shut"),
        (post(b'{"model": ', b"Content-Length: %d" % rng.randrange(20, 5000)), "shut"),
        (post(b"{}", b"Content-Length: %d" % (MAX_BODY * rng.randrange(2, 1000))), "all"),
        # Bodies: not JSON, not an object, too deep, wrong types, duplicate keys.
        (post(junk(rng, rng.randrange(1, 500))), "all"),
        (post(b"[" * rng.randrange(200, 30000)), "all"),
        (post(b"{" + model + b', "x": ' + b"[" * rng.randrange(129, 20000) + b"]" * 20000 + b"}"), "all"),
        (post(b'{"model": "known", "x": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}"), "all"),
        (post(rng.choice([b"null", b"1", b'"s"', b"[]", b"NaN", b"-Infinity", b"1e999"])), "all"),
        (post(b'{"model": ' + rng.choice([b"1", b"null", b"[]", b"{}", b'""', b"true"]) + b"}"), "all"),
        (post(b"{" + model + b', "stream": ' + rng.choice([b'"yes"', b"1", b"[]"]) + b"}"), "all"),
        (
            post(
                b"{" + model + b', "max_tokens": ' + rng.choice([b"1e400", b"-5", b"9" * 50, b'"9"']) + b"}"
            ),
            "all",
        ),
        (post(b"{" + model + b', "messages": {"role": "user"}}'), "all"),
        (post(b"{" + model + b', "model": "other"}'), "all"),
        (post(b'{"mod\\u0065l": "x", ' + model + b"}"), "all"),
        (post(b'{"model": "known", "x": 1' + b"0" * rng.randrange(4400, 9000) + b"}"), "all"),
        (post(b'{"model": "\xff\xfe\xfd"}'), "all"),
        # Model names: huge, unknown, hostile characters.
        (post(b'{"model": "' + name(rng, rng.randrange(257, MAX_BODY - 20)) + b'"}'), "all"),
        (post(b'{"model": "' + name(rng, rng.randrange(1, 256)) + b'", "messages": []}'), "all"),
        # Encodings and media types.
        (post(junk(rng, 64), b"Content-Encoding: gzip"), "all"),
        (
            post(
                gzip.compress(b'{"model": "known", "x": "' + b" " * (4 * MAX_BODY) + b'"}'),
                b"Content-Encoding: gzip",
            ),
            "all",
        ),
        (
            post(b"{}", b"Content-Encoding: " + rng.choice([b"br", b"zstd", b"gzip, gzip", b"compress"])),
            "all",
        ),
        (
            post(
                b'{"model": "known"}',
                b"Content-Type: " + rng.choice([b"text/plain", b"application/x-www-form-urlencoded", b""]),
            ),
            "all",
        ),
        # Methods and paths.
        (
            rng.choice([b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE"])
            + b" /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "all",
        ),
        (
            post(
                b"{}",
                path=rng.choice(
                    [
                        b"/v1/../../etc/passwd",
                        b"/%00",
                        b"/v1/chat/completions/x",
                        b"http://evil/v1/chat/completions",
                        b"/v2/" + b"x" * 100,
                    ]
                ),
            ),
            "all",
        ),
        # A slow sender that never finishes its head: closed at the idle timeout.
        (CHAT + b"X-Slow: " + b"s" * 64, "slow"),
    ]
    return cases[pick]


async def send_one(
    api: tuple[str, int], request: bytes, how: str
) -> tuple[int, dict[str, str], bytes] | None:
    reader, writer = await asyncio.open_connection(*api)
    try:
        try:
            if how == "slow":
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    if reader.at_eof():
                        break
                    await asyncio.sleep(0.05)  # a slow sender, by design: slower than the bound allows
            else:
                writer.write(request)
                await writer.drain()
                if how == "shut":
                    writer.write_eof()
        except OSError:
            pass  # the sidecar answered and closed before it had all: the answer is what counts
        return await answer_or_close(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.slow
async def test_a_raw_socket_storm_gets_only_openai_shaped_4xx_and_keeps_memory_bounded(
    sidecar: Sidecar, fake: fake_provider.FakeProvider
) -> None:
    rng = random.Random(12)
    rss_before = sidecar.rss_kib()
    statuses: dict[int, int] = {}
    closed = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        nonlocal closed
        async with gate:  # made here, not before: a request made is sent at once
            request, how = storm_case(rng, i)
            answer = await send_one(sidecar.api, request, how)
        if answer is None:
            closed += 1
            return
        assert_openai_error(answer, request)
        statuses[answer[0]] = statuses.get(answer[0], 0) + 1

    async with asyncio.timeout(300):  # a whole-test bound far above what the bounded sockets need
        await asyncio.gather(*(one(i) for i in range(STORM)))
    assert sum(statuses.values()) + closed == STORM
    assert sum(statuses.values()) > STORM * 0.8, (statuses, closed)  # most get an answer, not a close
    assert not fake.requests  # nothing hostile reached the provider
    # Still serving, and memory back within a generous bound of where it was.
    ok = await send_one(sidecar.api, post(b'{"model": "known", "messages": []}'), "all")
    assert ok is not None and ok[0] == 200
    rss_after = sidecar.rss_kib()
    assert rss_after - rss_before < RSS_GROWTH_KIB, (rss_before, rss_after)
    print(
        f"storm: {STORM} requests, answers by status {sorted(statuses.items())}, "
        f"closed without an answer {closed}, sidecar RSS {rss_before} KiB -> {rss_after} KiB"
    )
