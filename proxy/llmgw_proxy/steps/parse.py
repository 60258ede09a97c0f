"""Read and check the request body: content type (415), size (413), a JSON object with a model (400)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from llmgw_proxy import errors
from llmgw_proxy.steps.call import Call, Next


async def parse_body(call: Call, next_step: Next) -> web.StreamResponse:
    request = call.request
    if request.content_type != "application/json":
        raise errors.unsupported_media_type(request.headers.get("Content-Type", ""))
    limit = call.snapshot.config.max_body_bytes
    call.raw = await _read_limited(request, limit)
    # orjson refuses a few documents the json module takes (NaN, lone surrogate escapes,
    # integers past 64 bits): those, and real errors, get the json module's verdict, so
    # what is accepted and its message do not depend on the faster parser.
    try:
        body = orjson.loads(call.raw)
        call.finite = True  # what orjson decodes holds no NaN or infinity
    except orjson.JSONDecodeError:
        body = _json_loads(call.raw)
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("The request must name a model ('model' is missing)", "missing_model")
    call.body, call.model, call.stream = body, model, body.get("stream") is True
    return await next_step(call)


def _json_loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.invalid_json(str(exc)) from None


async def _read_limited(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None:
        if declared > limit:
            raise errors.body_too_large(limit)  # refused from the header, before a byte is read
        return await request.content.readexactly(declared) if declared else b""
    parts, size = [], 0
    async for part in request.content.iter_any():
        size += len(part)
        if size > limit:
            raise errors.body_too_large(limit)
        parts.append(part)
    return b"".join(parts)
