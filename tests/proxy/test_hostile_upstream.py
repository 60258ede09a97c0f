"""A hostile upstream cannot take the sidecar down: every answer is bounded, every connection released once.

The upstream is ``hostile_upstream.HostileUpstream``, raw bytes scripted per
connection; most tests go through a real sidecar with the openai client, the
rest straight to ``http1.Pool`` where the pool itself is the subject. A broken
bound must end that one request (502, or an error event mid-stream), log the
bound's name, close that connection, and leave the next request unharmed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import openai
import pytest
from hostile_upstream import (
    READ,
    SSE_HEAD,
    Drip,
    HostileUpstream,
    Script,
    Wait,
    chat,
    chunk,
    gzip_bomb,
    response,
)
from openai.types.chat import ChatCompletionMessageParam

from llmgw_proxy import config, upstream
from llmgw_proxy.runtime import state
from llmgw_proxy.upstream import http1

if TYPE_CHECKING:
    from conftest import MakeDoc, Proxy, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MiB = 1024 * 1024
TIMEOUTS = upstream.Timeouts(connect=2.0, first_byte=5.0, total=10.0)
FINE = (READ, response(chat("fine")))  # a healthy connection: the next request is not harmed


@pytest.fixture
async def sidecar(
    start_proxy: StartProxy, make_doc: MakeDoc, key_file: pathlib.Path
) -> AsyncIterator[StartSidecar]:
    """``await sidecar(*scripts, limits=..., **provider)``: a proxy in front of a hostile upstream."""
    servers: list[HostileUpstream] = []

    async def start(*scripts: Script, limits: dict[str, Any] | None = None, **provider: Any) -> Sidecar:
        server = await HostileUpstream(*scripts).__aenter__()
        servers.append(server)
        doc = make_doc(server.base_url, key_file)
        doc["providers"]["fake"].update(provider)
        if limits is not None:
            doc["providers"]["fake"]["upstreamLimits"] = limits
        return Sidecar(server, await start_proxy(doc))

    yield start
    for server in servers:
        await server.__aexit__()


@dataclasses.dataclass
class Sidecar:
    server: HostileUpstream
    proxy: Proxy

    async def ask(self, **kwargs: Any) -> Any:
        return await self.proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, **kwargs)

    def violations(self, bound: str) -> float:
        return self.proxy.sample("llmgw_upstream_bound_violations_total", provider="fake", bound=bound)


StartSidecar = Callable[..., Awaitable[Sidecar]]


def bound_logged(lines: list[str], bound: str) -> bool:
    records = [json.loads(line) for line in lines]
    return any(r.get("logger") == "llmgw.upstream" and r.get("bound") == bound for r in records)


async def closed(server: HostileUpstream, conn: int) -> None:
    await asyncio.wait_for(server.conns[conn].closed.wait(), 5)


# -- bodies


@pytest.mark.parametrize("status", [200, 500], ids=["answer", "error-body"])
async def test_a_body_past_max_response_bytes_is_a_502_and_only_its_connection_is_closed(
    sidecar: StartSidecar, log_lines: Callable[[], list[str]], secret: str, status: int
) -> None:
    big = response(b"x" * (2 * MiB), status=status)
    s = await sidecar((READ, big), FINE, limits={"maxResponseBytes": 1 * MiB})
    with pytest.raises(openai.InternalServerError) as caught:
        await s.ask()
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_response_too_large"
    assert "maxResponseBytes" in caught.value.message
    await closed(s.server, 0)
    answer = await s.ask()
    assert answer.choices[0].message.content == "fine"
    assert bound_logged(log_lines(), "maxResponseBytes")
    assert secret not in "\n".join(log_lines())
    assert s.violations("maxResponseBytes") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_gzip_bomb_is_cut_off_at_the_bound_without_inflating_memory(
    sidecar: StartSidecar, stream: bool
) -> None:
    cap = 1 * MiB
    bomb = gzip_bomb(64 * MiB)  # 64 MiB of zeros in about 64 KB
    kind = "text/event-stream" if stream else "application/json"
    headers = (("Content-Type", kind), ("Content-Encoding", "gzip"))
    s = await sidecar((READ, response(bomb, headers=headers)), FINE, limits={"maxResponseBytes": cap})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(openai.APIError, match="maxResponseBytes"):
            answer = await s.ask(stream=stream)
            async for _ in answer:
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What the sidecar held at most: the bound plus a little, never the inflated 64 MiB.
    assert peak < 8 * cap, f"peak {peak / MiB:.1f} MiB"
    await closed(s.server, 0)
    assert (await s.ask()).choices[0].message.content == "fine"


# -- heads and trailers


def _head_that_never_ends() -> Script:
    return (READ, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ", Drip(b"a", 16384, 8 * MiB))


def _trailers_that_never_end() -> Script:
    start = SSE_HEAD.replace(b"text/event-stream", b"application/json") + chunk(b"{}") + b"0\r\nX-T: "
    return (READ, start, Drip(b"a", 16384, 8 * MiB))


@pytest.mark.parametrize(
    ("script", "bound"),
    [
        pytest.param(
            (READ, response(headers=(("Content-Type", "application/json"), ("X-Big", "a" * 100_000)))),
            "maxHeaderBytes",
            id="one-huge-header",
        ),
        pytest.param(
            (
                READ,
                response(
                    headers=[("Content-Type", "application/json")] + [(f"X-{i}", "v") for i in range(200)]
                ),
            ),
            "maxHeaders",
            id="too-many-headers",
        ),
        pytest.param(_head_that_never_ends(), "maxHeaderBytes", id="head-never-ends"),
        pytest.param(_trailers_that_never_end(), "maxHeaderBytes", id="trailers-never-end"),
        pytest.param(
            (READ, Drip(b"HTTP/1.1 100 Continue\r\n\r\n", 25 * 100, 8 * MiB)),
            "maxHeaderBytes",
            id="interim-answers-never-end",
        ),
    ],
)
async def test_a_head_past_its_bounds_is_a_502_naming_the_bound(
    sidecar: StartSidecar, log_lines: Callable[[], list[str]], script: Script, bound: str
) -> None:
    s = await sidecar(script, FINE)  # the default bounds
    with pytest.raises(openai.InternalServerError) as caught:
        await s.ask()
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_response_too_large")
    assert bound in caught.value.message
    assert bound_logged(log_lines(), bound)
    await closed(s.server, 0)
    assert (await s.ask()).choices[0].message.content == "fine"


async def test_an_upstream_cannot_pass_hop_by_hop_headers_or_speak_for_the_sidecar(
    sidecar: StartSidecar,
) -> None:
    sent = (
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive, x-hop-named"),
        ("X-Hop-Named", "1"),
        ("Upgrade", "h2c"),
        ("Trailer", "x-checksum"),
        ("Proxy-Authenticate", "Basic"),
        ("X-LLMGW-Cache", "hit"),
        ("x-llmgw-provider", "someone-else"),
        ("X-Provider-Own", "kept"),
    )
    s = await sidecar((READ, response(chat("fine"), headers=sent)))
    raw = await s.proxy.async_client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    for name in ("x-hop-named", "upgrade", "trailer", "proxy-authenticate", "x-llmgw-cache"):
        assert name not in raw.headers, name
    assert raw.headers["x-llmgw-provider"] == "fake"
    assert raw.headers["x-provider-own"] == "kept"
    assert raw.parse().choices[0].message.content == "fine"


async def test_trailers_never_reach_the_next_answer_on_a_reused_connection(
    sidecar: StartSidecar,
) -> None:
    first = response(chat("one"), chunked=True, trailers=[("X-Leak", "yes"), ("Set-Thing", "t")])
    s = await sidecar((READ, first, READ, response(chat("two"))))
    client = s.proxy.async_client()
    for content in ("one", "two"):
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == content
        assert "x-leak" not in raw.headers and "set-thing" not in raw.headers
    assert len(s.server.conns) == 1  # the same connection served both


# -- server-sent events


def _first_event() -> bytes:
    data = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}],
    }
    return chunk(b"data: " + json.dumps(data).encode() + b"\n\n")


async def test_an_event_that_never_ends_is_cut_off_with_an_error_event(
    sidecar: StartSidecar, log_lines: Callable[[], list[str]]
) -> None:
    never_ends = chunk(b"data: " + b"x" * 16384)
    script = (READ, SSE_HEAD + _first_event(), Drip(never_ends, len(never_ends), 16 * MiB))
    # The cache is on, so the sidecar must look inside the stream and buffers events.
    s = await sidecar(
        script, FINE, limits={"maxEventBytes": 256 * 1024}, cache={"enabled": True, "mode": "all"}
    )
    stream = await s.ask(stream=True)
    pieces = []
    with pytest.raises(openai.APIError, match="maxEventBytes"):
        async for piece in stream:
            pieces.append(piece.choices[0].delta.content)
    assert pieces == ["hel"]  # what came before the endless event reached the caller
    await closed(s.server, 0)
    assert bound_logged(log_lines(), "maxEventBytes")
    assert (await s.ask()).choices[0].message.content == "fine"


# -- answers the sidecar reads for usage


DEEP = b"[" * 100_000 + b"]" * 100_000  # past the json module's recursion limit


async def test_a_deeply_nested_usage_in_an_answer_is_relayed_not_a_500(sidecar: StartSidecar) -> None:
    body = b'{"id": "c", "choices": [], "usage": ' + DEEP + b"}"
    s = await sidecar((READ, response(body)))
    raw = await s.proxy.async_client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.http_response.content == body  # the provider's answer, as sent


async def test_a_deeply_nested_event_in_a_filtered_stream_is_relayed_not_a_crash(
    sidecar: StartSidecar,
) -> None:
    deep = chunk(b'data: {"usage": ' + DEEP + b"}\n\n")
    done = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    s = await sidecar((READ, SSE_HEAD + _first_event() + deep + done), cache={"enabled": True, "mode": "all"})
    client = s.proxy.async_client()
    async with client.chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, stream=True
    ) as raw:
        text = b"".join([part async for part in raw.http_response.aiter_bytes()])
    assert raw.status_code == 200
    assert DEEP in text and text.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("first", "stored", "then_stream"),
    [
        pytest.param(False, response(b"not json at all"), True, id="json-answer-not-json"),
        pytest.param(False, response(b"[1, 2]"), True, id="json-answer-not-an-object"),
        pytest.param(False, response(b'{"choices": [1]}'), True, id="json-answer-odd-choices"),
        pytest.param(
            True,
            SSE_HEAD + chunk(b'data: {"choices": [1]}\n\n') + b"0\r\n\r\n",
            False,
            id="stream-odd-choices",
        ),
    ],
)
async def test_an_odd_answer_in_the_cache_is_asked_again_not_a_500(
    sidecar: StartSidecar, first: bool, stored: bytes, then_stream: bool
) -> None:
    fresh = SSE_HEAD + _first_event() + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    answer = fresh if then_stream else response(chat("fresh"))
    s = await sidecar((READ, stored, READ, answer), cache={"enabled": True, "mode": "all"})
    client = s.proxy.async_client()
    async with client.chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, stream=first
    ) as raw:
        assert raw.status_code == 200
    if then_stream:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert [p.choices[0].delta.content async for p in stream] == ["hel"]
    else:
        assert (await s.ask()).choices[0].message.content == "fresh"
    assert len(s.server.conns[0].requests) == 2  # asked upstream again instead of replaying the odd entry


# -- connection reuse


async def test_a_second_answer_in_the_same_segment_closes_the_connection_and_every_caller_gets_its_own(
    sidecar: StartSidecar,
) -> None:
    def own(requests: list[bytes]) -> bytes:
        return response(chat(json.loads(requests[-1].split(b"\r\n\r\n", 1)[1])["messages"][0]["content"]))

    stray = (READ, response(chat("first")) + response(chat("stray")), READ, own, READ, own)
    s = await sidecar(stray, (READ, own, READ, own), (READ, own, READ, own))
    client = s.proxy.async_client()
    first = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert first.choices[0].message.content == "first"
    await closed(s.server, 0)

    async def ask(word: str) -> str | None:
        msg: list[ChatCompletionMessageParam] = [{"role": "user", "content": word}]
        answer = await client.chat.completions.create(model="m", messages=msg)
        content: str | None = answer.choices[0].message.content
        return content

    assert list(await asyncio.gather(ask("a"), ask("b"))) == ["a", "b"]
    assert not s.server.conns[0].requests[1:], "nothing more went to the connection with the stray answer"


# -- the pool


async def test_waiting_for_a_busy_pool_is_a_local_503_not_a_provider_failure(
    sidecar: StartSidecar, log_lines: Callable[[], list[str]]
) -> None:
    release = asyncio.Event()
    held = (READ, SSE_HEAD + _first_event(), Wait(release), chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n", *FINE)
    s = await sidecar(
        held,
        held,
        FINE,
        limits={"poolSize": 2, "poolWait": 0.2},
        circuitBreaker={"consecutiveFailures": 1},
    )
    streams = [await s.ask(stream=True) for _ in range(2)]
    for stream in streams:
        assert (await anext(aiter(stream))).choices[0].delta.content == "hel"
    with pytest.raises(openai.InternalServerError) as caught:
        await s.ask()
    assert (caught.value.status_code, caught.value.code) == (503, "upstream_pool_exhausted")
    assert caught.value.response.headers["Retry-After"] == "1"
    assert len(s.server.conns) == 2, "no third connection was opened past poolSize"
    assert s.proxy.sample("llmgw_upstream_pool_exhausted_total", provider="fake") == 1
    assert s.proxy.sample("llmgw_breaker_state", provider="fake") == 0, "the breaker stays closed"
    release.set()
    for stream in streams:
        async for _ in stream:
            pass
    assert (await s.ask()).choices[0].message.content == "fine"  # a freed pooled connection serves it
    assert any("no pooled upstream connection" in line for line in log_lines())


async def test_a_broken_bound_counts_as_a_provider_failure_for_the_breaker(
    sidecar: StartSidecar,
) -> None:
    big = response(b"x" * (2 * MiB))
    s = await sidecar(
        (READ, big), limits={"maxResponseBytes": 1 * MiB}, circuitBreaker={"consecutiveFailures": 1}
    )
    with pytest.raises(openai.InternalServerError):
        await s.ask()
    assert s.proxy.sample("llmgw_breaker_state", provider="fake") == 2  # open


# -- straight to http1.Pool


@pytest.fixture
async def pool() -> AsyncIterator[http1.Pool]:
    made = http1.Pool()
    yield made
    await made.close()


def post(
    url: str, limits: upstream.Limits = upstream.DEFAULT_LIMITS, body: bytes = b"{}"
) -> upstream.Request:
    return upstream.Request("POST", url, {"Content-Type": "application/json"}, body, TIMEOUTS, limits)


async def test_pool_two_answers_in_one_segment_release_the_connection_once(pool: http1.Pool) -> None:
    def own(requests: list[bytes]) -> bytes:
        return response(requests[-1].split(b"\r\n\r\n", 1)[1])

    async with HostileUpstream(
        (READ, response(b"A") + response(b"B"), READ, own), (READ, own), (READ, own)
    ) as server:
        assert await (await pool.send(post(server.url, body=b"A?"))).read() == b"A"
        await closed(server, 0)

        async def ask(word: bytes) -> bytes:
            return await (await pool.send(post(server.url, body=word))).read()

        # Both at once: had the connection gone back twice, both would take it.
        assert list(await asyncio.wait_for(asyncio.gather(ask(b"x"), ask(b"y")), 5)) == [b"x", b"y"]
        assert len(server.conns) == 3


@pytest.mark.parametrize("extra", [b"garbage", b"HTTP/1.1 200 OK\r\n"], ids=["garbage", "half-an-answer"])
async def test_pool_stray_bytes_in_an_answers_segment_close_the_connection(
    pool: http1.Pool, extra: bytes
) -> None:
    async with HostileUpstream(
        (READ, response(b"A") + extra, READ, response(b"B")), (READ, response(b"C"))
    ) as s:
        assert await (await pool.send(post(s.url))).read() == b"A"
        await closed(s, 0)
        assert await (await pool.send(post(s.url))).read() == b"C"


async def test_pool_bytes_after_an_answer_on_an_idle_connection_close_it(pool: http1.Pool) -> None:
    later = asyncio.Event()
    async with HostileUpstream(
        (READ, response(b"A"), Wait(later), response(b"B")), (READ, response(b"C"))
    ) as s:
        assert await (await pool.send(post(s.url))).read() == b"A"
        later.set()
        await closed(s, 0)
        assert await (await pool.send(post(s.url))).read() == b"C"


async def test_pool_trailers_are_not_headers_of_the_next_answer(pool: http1.Pool) -> None:
    first = response(b"one", chunked=True, trailers=[("X-Leak", "yes")])
    async with HostileUpstream((READ, first, READ, response(b"two"))) as s:
        for body in (b"one", b"two"):
            resp = await pool.send(post(s.url))
            assert await resp.read() == body
            assert "X-Leak" not in resp.headers
        assert len(s.conns) == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["read", "chunks"])
async def test_pool_a_gzip_bomb_fails_at_the_bound_with_bounded_memory(
    pool: http1.Pool, streamed: bool
) -> None:
    cap = 1 * MiB
    headers = (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))
    async with HostileUpstream((READ, response(gzip_bomb(64 * MiB), headers=headers))) as s:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            resp = await pool.send(post(s.url, upstream.Limits(max_response_bytes=cap)))
            with pytest.raises(upstream.TooLarge) as caught:
                if streamed:
                    async for _ in resp.chunks():
                        pass
                else:
                    await resp.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (caught.value.bound, caught.value.limit) == ("maxResponseBytes", cap)
        assert peak < 4 * cap, f"peak {peak / MiB:.1f} MiB"
        await closed(s, 0)


async def test_pool_an_answer_in_one_byte_chunks_is_bounded_with_its_overhead(pool: http1.Pool) -> None:
    cap = 1 * MiB
    tiny = b"".join(chunk(b"x") for _ in range(1000))
    head = SSE_HEAD.replace(b"text/event-stream", b"application/json")
    async with HostileUpstream((READ, head, Drip(tiny, len(tiny), 400 * len(tiny)))) as s:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            resp = await pool.send(post(s.url, upstream.Limits(max_response_bytes=cap)))
            with pytest.raises(upstream.TooLarge):
                await resp.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # 400,000 one-byte pieces would hold some 20 MiB of bytes objects for 400 KB of data.
        assert peak < 4 * cap, f"peak {peak / MiB:.1f} MiB"
        await closed(s, 0)


async def test_pool_waiting_for_a_connection_is_pool_busy_not_a_connect_timeout(pool: http1.Pool) -> None:
    release = asyncio.Event()
    one = upstream.Limits(pool_size=1, pool_wait=0.1)
    async with HostileUpstream((READ, SSE_HEAD, Wait(release))) as s:
        held = await pool.send(post(s.url, one))
        with pytest.raises(upstream.PoolBusy) as caught:
            await pool.send(post(s.url, one))
        assert caught.value.size == 1
        assert len(s.conns) == 1
        held.close()


async def test_pool_the_wait_for_a_connection_does_not_spend_the_first_byte_timeout(pool: http1.Pool) -> None:
    release = asyncio.Event()
    one = upstream.Limits(pool_size=1, pool_wait=5.0)
    quick = upstream.Timeouts(connect=2.0, first_byte=1.0, total=10.0)
    script = (READ, SSE_HEAD + chunk(b"first"), Wait(release), b"0\r\n\r\n", READ, response(b"second"))
    async with HostileUpstream(script) as s:
        held = await pool.send(post(s.url, one))  # its body is not over: the one connection stays taken
        request = upstream.Request("POST", s.url, {}, b"{}", quick, one)
        waiting = asyncio.ensure_future(pool.send(request))
        await asyncio.sleep(1.2)  # the waiter's first_byte timeout would have run out by now
        assert not waiting.done()
        release.set()
        assert await held.read() == b"first"
        assert await (await waiting).read() == b"second"


async def test_pool_holds_more_than_256_long_streams_at_once_by_default(pool: http1.Pool) -> None:
    release = asyncio.Event()
    count = 300
    async with HostileUpstream((READ, SSE_HEAD + chunk(b"data: {}\n\n"), Wait(release))) as s:
        # 300 connects and their accepts share this one event loop: on a loaded machine they can
        # take longer than TIMEOUTS' 2 s, which is not what this test is about.
        patient = upstream.Timeouts(connect=15.0, first_byte=15.0, total=30.0)
        requests = [
            upstream.Request(
                "POST", s.url, {"Content-Type": "application/json"}, b"{}", patient, upstream.DEFAULT_LIMITS
            )
            for _ in range(count)
        ]
        responses = await asyncio.wait_for(asyncio.gather(*[pool.send(r) for r in requests]), 40)
        assert len(s.conns) == count
        for resp in responses:
            resp.close()


# -- the config


def test_the_config_defaults_are_the_transport_defaults() -> None:
    b = config.UpstreamLimits()
    assert state.transport_limits(b) == upstream.DEFAULT_LIMITS
    assert b.pool_size >= 1024
