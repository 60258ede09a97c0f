"""Keep a conversation with the provider that stores it (the Responses API's stored state).

A Responses request naming stored state (``previous_response_id``, or a
``conversation``) can only be served by the provider that holds it: it goes to
that one target, never to a fallback (retries on it still apply). The owner of
a ``previous_response_id`` is the provider that created it, when this sidecar
saw it created (``Live.pins``, bounded by ``maxPinnedResponses``); otherwise,
and for a conversation, the route's first target.

After the answer, a response the provider stored (``store`` not false) is
remembered with the provider that served it, fallback or not, so the next turn
finds it. Every other endpoint passes through untouched.
"""

from __future__ import annotations

from aiohttp import web

from llmgw_proxy.steps.call import Call, Next

RESPONSES = "responses"


async def pin(call: Call, next_step: Next) -> web.StreamResponse:
    if call.endpoint != RESPONSES:
        return await next_step(call)
    pins = call.services.live.pins
    previous = call.body.get("previous_response_id")
    if (isinstance(previous, str) and previous) or call.body.get("conversation") is not None:
        owner = pins.owner(previous) if isinstance(previous, str) else None
        held = [t for t in call.targets if t.provider == owner]
        call.targets = tuple(held[:1]) or call.targets[:1]
    response = await next_step(call)
    stored = call.body.get("store") is not False
    if call.status == 200 and call.response_id and call.provider is not None and stored:
        pins.remember(call.response_id, call.provider.name)
    return response
