"""A bare aiohttp pass-through: the floor the sidecar is measured against.

It does only what any aiohttp forwarder must: read the body, POST it upstream
on a pooled session, read the answer, write it back. No routing, no
validation, no metrics. ``python -m llmgw_dev.bench_passthrough --upstream URL``

``--client http1`` makes the same forwarder call upstream through the
sidecar's own client (``llmgw_proxy.upstream.http1``) instead of aiohttp's: measured
against that, the sidecar's remaining cost is its own request path alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from llmgw_proxy import upstream as upstream_
from llmgw_proxy.upstream import http1

SESSION = web.AppKey("session", aiohttp.ClientSession)
POOL = web.AppKey("pool", http1.Pool)
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-key"}
TIMEOUTS = upstream_.Timeouts(connect=5, first_byte=60, total=60)


def build(upstream: str, client: str = "aiohttp") -> web.Application:
    return _with_http1(upstream) if client == "http1" else _with_aiohttp(upstream)


def _with_aiohttp(upstream: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
        app[SESSION] = aiohttp.ClientSession(connector=connector)
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app[SESSION].post(upstream + request.path, data=body, headers=HEADERS) as resp:
            data = await resp.read()
            return web.Response(body=data, status=resp.status, content_type="application/json")

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", forward)
    return app


def _with_http1(upstream: str) -> web.Application:
    app = web.Application()

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = http1.Pool()
        yield
        await app[POOL].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        sent = upstream_.Request("POST", upstream + request.path, HEADERS, body, TIMEOUTS)
        resp = await request.app[POOL].send(sent)
        data = await resp.read()
        return web.Response(body=data, status=resp.status, content_type="application/json")

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client", choices=("aiohttp", "http1"), default="aiohttp")
    args = parser.parse_args()

    async def serve() -> None:
        runner = web.AppRunner(build(args.upstream, args.client), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        host, port = runner.addresses[0][:2]
        print(json.dumps({"msg": "listening", "address": f"{host}:{port}"}), flush=True)
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(serve())


if __name__ == "__main__":
    main()
