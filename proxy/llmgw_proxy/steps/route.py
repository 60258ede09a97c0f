"""Pick the route for the request's ``model`` (its own, else the ``*`` route, else 404), and the
targets of it that may serve this model.

A target may not serve the model when its provider's ``models`` allow-list
(the ProviderPolicy's) leaves the upstream model out: a ``*`` route would
otherwise send any name to any provider. Such a target is skipped, not failed;
when no target is left the answer is 404 ``model_not_found``. A route serves only the endpoints
of its API family it declares (``Route.endpoints``; unset, its family's modelled ones): a
request to another is 404 ``endpoint_not_served``, so an OpenAI-shaped request never reaches an
Anthropic provider, or the reverse. A caller's model
name that would enter an Azure deployment URL must be a plain path segment.
"""

from __future__ import annotations

import re

from aiohttp import web

from llmgw_proxy import config, errors
from llmgw_proxy.steps.call import Call, Next

AZURE_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""What a model may be where it becomes the Azure deployment path segment: Azure's own
deployment-name characters. ``/``, ``?``, ``#``, ``%`` and dot segments would change the URL."""


async def resolve_route(call: Call, next_step: Next) -> web.StreamResponse:
    route = call.snapshot.config.route_for(call.model)
    if route is None:
        raise errors.unknown_model(call.model)
    if not route.serves(call.endpoint, call.snapshot.config.family(route)):
        raise errors.endpoint_not_served(call.endpoint, call.model)
    call.route = route
    call.targets = allowed_targets(call, route)
    return await next_step(call)


def allowed_targets(call: Call, route: config.Route) -> tuple[config.Target, ...]:
    providers = call.snapshot.providers
    if all(providers[t.provider].models is None for t in route.targets):
        targets = route.targets  # the common case: no allow-list
    else:
        targets = tuple(t for t in route.targets if providers[t.provider].allows(t.model or call.model))
    if not targets:
        raise errors.ProxyError(
            404,
            f"The model {call.model!r} is not allowed by this gateway's provider policies",
            code="model_not_found",
        )
    for target in targets:
        if (
            target.model is None
            and providers[target.provider].provider.kind is config.ProviderKind.AZURE_OPENAI
            and AZURE_DEPLOYMENT.fullmatch(call.model) is None
        ):
            raise errors.bad_request(
                "The model name may only hold letters, digits, '.', '_' and '-' for this route's "
                "Azure OpenAI provider",
                "invalid_model_name",
            )
    return targets
