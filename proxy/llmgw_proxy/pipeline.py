"""The request path, as a list of steps: reading ``STEPS`` tells the path.

Every API request becomes a ``steps.call.Call`` that flows through ``STEPS``
in order. A step is ``async def step(call, next_step) -> web.StreamResponse``:
it may read or change the call, answer by itself (return a response or raise
``errors.ProxyError``), or hand over to ``next_step``::

    account          metrics, the log line, the server span; turns ProxyError into JSON
    parse_body       content type and encoding, size and depth limits, JSON, ``model``, ``stream``
    resolve_route    ``model`` -> route (404 when none, or when it does not serve the endpoint),
                     and the targets whose policy allows it
    pin              a Responses call naming stored state keeps to the provider holding it
    cache            answer repeat deterministic requests from memory; a hit spends no
                     rate limit quota; a miss registers a hook that stores the answer
    attempt_targets  the allowed targets in order; for each target:
      breaker        skip a target whose breaker is open (503 when all are)
      rate limit     reserve a request and tokens, wait up to maxWait or skip the target
                     (429 + Retry-After when every target was refused)
      retry          retry the target with backoff, honouring Retry-After, then fall back
    forward          one upstream exchange; relays the body or the SSE stream

Each step lives in its own module under ``steps/``; this module only puts them
in order. A step removed from the list takes all of its behaviour with it.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from llmgw_proxy import errors
from llmgw_proxy.apis import shapes
from llmgw_proxy.steps import account, attempts, cache, forward, parse, pin, relay, route
from llmgw_proxy.steps.call import Call, Next, Services, Step

STEPS: tuple[Step, ...] = (
    account.account,
    parse.parse_body,
    route.resolve_route,
    pin.pin,
    cache.cache,
    attempts.attempt_targets,
    forward.forward,
)


def compose(steps: Sequence[Step]) -> Next:
    async def end(call: Call) -> web.StreamResponse:
        raise AssertionError("the last step must answer")  # pragma: no cover

    chain: Next = end
    for step in reversed(steps):
        chain = functools.partial(step, next_step=chain)
    return chain


RELAY_STEPS: tuple[Step, ...] = (
    account.account,
    relay.resolve_relay,
    relay.relay,
)
"""The path of a relayed endpoint (audio, images, files... and stored Responses objects): the
route that declares it, its breaker and request limit, one exchange with the body streamed."""


def handler(
    services: Services, endpoint: str | None, steps: Sequence[Step] = STEPS
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The request handler of ``endpoint``; None: the path after ``/v1/`` names it (a relay)."""
    chain = compose(steps)

    async def handle(request: web.Request) -> web.StreamResponse:
        name = endpoint if endpoint is not None else request.match_info["tail"]
        snapshot = services.live.snapshot
        if snapshot is None:
            return shapes.response(name, errors.not_ready())
        drain = services.live.drain
        if drain.cutting:
            return shapes.response(name, errors.shutting_down())
        request_id = request.headers.get("x-request-id", "")[:128] or os.urandom(12).hex()
        call = Call(request, name, services, snapshot, request_id, asyncio.get_running_loop().time())
        task = drain.enter()  # a shutdown past its grace ends it (runtime.drain, steps.account)
        try:
            return await chain(call)
        finally:
            drain.leave(task)

    return handle
