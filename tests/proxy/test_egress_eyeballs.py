"""Happy eyeballs on real sockets: a black-holed first address costs the stagger, not the timeout."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import egresskit
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from llmgw_proxy import upstream
from llmgw_proxy.upstream import dial, http1


def request(url: str, *, connect: float, stagger: float) -> upstream.Request:
    return upstream.Request(
        "POST",
        url,
        {"Content-Type": "application/json"},
        b"{}",
        upstream.Timeouts(connect=connect, first_byte=5, total=10),
        egress=upstream.Egress(stagger=stagger),
    )


@pytest.fixture
async def good_port(aiohttp_server: AiohttpServer) -> int:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", ok)
    server = await aiohttp_server(app)
    assert server.port is not None
    return server.port


def resolver_for(addresses: Sequence[tuple[int, tuple[object, ...]]]) -> dial.Resolver:
    """The name "provider.test" resolving to ``addresses``, in that order, as a dual-stack DNS
    answer would (IPv6 first); only the name lookup is stood in for, every address is a real socket."""

    async def resolve(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
        assert host == "provider.test"
        return list(addresses)

    return resolve


async def test_a_black_holed_ipv6_address_does_not_eat_the_connect_timeout(good_port: int) -> None:
    with egresskit.black_hole() as (hole, hole_port):
        addresses = [(socket.AF_INET6, (hole, hole_port, 0, 0)), (socket.AF_INET, ("127.0.0.1", good_port))]
        pool = http1.Pool(dialer=dial.Dialer(environ={}, resolver=resolver_for(addresses)))
        try:
            url = "http://provider.test/v1/chat/completions"
            resp = await pool.send(request(url, connect=3, stagger=0.1))
            assert resp.status == 200 and await resp.read() == b'{"ok": true}'
        finally:
            await pool.close()


async def test_without_a_stagger_the_black_hole_eats_the_connect_timeout(good_port: int) -> None:
    """The same addresses tried one after the other (a stagger longer than the timeout): the
    black hole holds the first attempt until the connect timeout, as before happy eyeballs."""
    with egresskit.black_hole() as (hole, hole_port):
        addresses = [(socket.AF_INET6, (hole, hole_port, 0, 0)), (socket.AF_INET, ("127.0.0.1", good_port))]
        pool = http1.Pool(dialer=dial.Dialer(environ={}, resolver=resolver_for(addresses)))
        try:
            url = "http://provider.test/v1/chat/completions"
            with pytest.raises(upstream.TimedOut, match="connect"):
                await pool.send(request(url, connect=1, stagger=10))
        finally:
            await pool.close()


async def test_a_refused_first_address_starts_the_next_at_once(good_port: int) -> None:
    """A refused attempt does not wait out the stagger: with a stagger longer than the connect
    timeout, the request still succeeds because the refusal starts the second address."""
    closed = egresskit.free_port()  # nothing listens there: the connect is refused
    addresses = [(socket.AF_INET, ("127.0.0.1", closed)), (socket.AF_INET, ("127.0.0.1", good_port))]
    pool = http1.Pool(dialer=dial.Dialer(environ={}, resolver=resolver_for(addresses)))
    try:
        resp = await pool.send(request("http://provider.test/v1/chat/completions", connect=3, stagger=10))
        assert resp.status == 200
    finally:
        await pool.close()


async def test_every_address_failing_is_a_connect_failure() -> None:
    addresses = [(socket.AF_INET, ("127.0.0.1", egresskit.free_port())) for _ in range(3)]
    pool = http1.Pool(dialer=dial.Dialer(environ={}, resolver=resolver_for(addresses)))
    try:
        with pytest.raises(upstream.ConnectFailed, match="ConnectionRefusedError"):
            await pool.send(request("http://provider.test/v1/chat/completions", connect=3, stagger=10))
    finally:
        await pool.close()


async def test_a_name_that_does_not_resolve_is_a_connect_failure() -> None:
    pool = http1.Pool(dialer=dial.Dialer(environ={}))
    try:
        with pytest.raises(upstream.ConnectFailed):
            await pool.send(request("http://no-such-host.invalid/v1/x", connect=3, stagger=0.1))
    finally:
        await pool.close()
