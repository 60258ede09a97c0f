"""Pick the route for the request's ``model``: its own, else the ``*`` route, else 404."""

from __future__ import annotations

from aiohttp import web

from llmgw_proxy import errors
from llmgw_proxy.steps.call import Call, Next


async def resolve_route(call: Call, next_step: Next) -> web.StreamResponse:
    route = call.snapshot.config.route_for(call.model)
    if route is None:
        raise errors.unknown_model(call.model)
    call.route = route
    return await next_step(call)
