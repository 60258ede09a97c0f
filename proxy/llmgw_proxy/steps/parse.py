"""Read and check the request body: content type and encoding (415), size (413), a JSON object
with a model (400).

Every bound here is a caller-facing limit stated in ``docs/proxy.md``: the body
size (``maxBodyBytes``, before and after decompression), the time to send it
(``listen.readTimeout``), the JSON nesting depth and the model name's length.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import zlib
from typing import Any

import orjson
from aiohttp import web

from llmgw_proxy import errors
from llmgw_proxy.steps.call import Call, Next

MAX_JSON_DEPTH = 128
"""Arrays and objects nested in each other. Real requests (tool schemas included) stay far
below; past it a recursive decoder or encoder (the json module, orjson's 255-level writer)
would fail, so it is refused up front instead of relying on a RecursionError."""
MAX_MODEL_NAME = 256
"""Characters in ``model``: it becomes a log field and a trace attribute, and may enter a URL."""
MAX_COUNT = 2**31 - 1
"""``max_tokens``, ``max_completion_tokens``, ``max_output_tokens`` and ``n`` past this are no
request but an attack on the limiter's arithmetic."""

_OPENERS = (ord("["), ord("{"))
# A JSON string, escapes included: removed before counting brackets, which a string may hold.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# What is left of the body after its strings are gone, as +1 / -1 steps (0 for the rest).
_STEPS = bytes(1 if b in _OPENERS else 255 if b in (ord("]"), ord("}")) else 0 for b in range(256))
# A key spelled with \u escapes, which could hide a second "model" from a byte search.
_ESCAPED_KEY = re.compile(rb'"[a-z_]*\\u00[0-9a-fA-F]{2}[a-z_\\u0-9a-fA-F]*"\s*:')
# Searched with re: its literal search took a third to half of bytes.count's time here.
_MODEL_KEY = re.compile(rb'"model"')
_ESCAPE = re.compile(rb"\\u")
_NOT_OPENERS = bytes(b for b in range(256) if b not in _OPENERS)
_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def parse_body(call: Call, next_step: Next) -> web.StreamResponse:
    request = call.request
    if request.content_type != "application/json":
        raise errors.unsupported_media_type(request.headers.get("Content-Type", ""))
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in _ENCODINGS and encoding not in ("", "identity"):
        raise errors.ProxyError(
            415,
            f"Content-Encoding {encoding[:64]!r} is not supported (use gzip, deflate or identity)",
            code="unsupported_content_encoding",
        )
    limit = call.snapshot.config.max_body_bytes
    raw = _arrived(request, limit)
    if raw is None:
        try:
            async with asyncio.timeout(call.snapshot.config.listen.read_timeout):
                raw = await _read_limited(request, limit)
        except TimeoutError:
            raise errors.ProxyError(
                408, "The request body did not arrive in time", code="request_timeout"
            ) from None
    if encoding in _ENCODINGS:
        raw = _decompress(raw, _ENCODINGS[encoding], limit)
    call.raw = raw
    body, call.finite = _decode(raw)
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("The request must name a model ('model' is missing)", "missing_model")
    if len(model) > MAX_MODEL_NAME:
        raise errors.bad_request(
            f"The model name is longer than {MAX_MODEL_NAME} characters", "model_name_too_long"
        )
    call.model = model  # logged even when a field's type is refused below
    _check_types(body)
    call.body, call.stream = body, body.get("stream") is True
    return await next_step(call)


def _decode(raw: bytes) -> tuple[Any, bool]:
    """The decoded body, and whether it is known to hold no NaN or infinity."""
    if len(raw.translate(None, _NOT_OPENERS)) > MAX_JSON_DEPTH:  # one C pass; the walk when needed
        _check_depth(raw)
    if _twice(raw):
        # The same key twice: this proxy reads the last, an upstream may read the first, and
        # the body goes upstream as sent, so a second "model" could slip past the routes and
        # the policies' models allow-lists.
        return _json_loads(raw, _refuse_duplicate_model), False
    # orjson refuses a few documents the json module takes (NaN, lone surrogate escapes,
    # integers past 64 bits): those, and real errors, get the json module's verdict, so
    # what is accepted and its message do not depend on the faster parser.
    try:
        return orjson.loads(raw), True  # what orjson decodes holds no NaN or infinity
    except orjson.JSONDecodeError:
        return _json_loads(raw), False


def _twice(raw: bytes) -> bool:
    """The body may name ``model`` twice: literally, or with a key spelled in \\u escapes."""
    first = _MODEL_KEY.search(raw)
    if first is not None and _MODEL_KEY.search(raw, first.end()) is not None:
        return True
    return b"\\" in raw and _ESCAPE.search(raw) is not None and _ESCAPED_KEY.search(raw) is not None


def _check_depth(raw: bytes) -> None:
    if depth(raw) > MAX_JSON_DEPTH:
        raise errors.bad_request(
            f"The request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
            "json_too_deep",
        )


def depth(raw: bytes) -> int:
    """How deep a JSON document's arrays and objects nest (0 for a scalar), without decoding it:
    its strings removed, each bracket left becomes a +1 or -1 step, and the running sum's
    maximum is the depth. All of it runs in C, even for a body of megabytes."""
    brackets = _STRING.sub(b"", raw).translate(_STEPS).replace(b"\0", b"")
    return max(itertools.accumulate(memoryview(brackets).cast("b")), default=0)


def _refuse_duplicate_model(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs) and [k for k, _ in pairs].count("model") > 1:
        raise errors.bad_request("The request body names 'model' twice", "duplicate_key")
    return result


def _json_loads(raw: bytes, hook: Any = None) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=hook)
    except RecursionError:  # _check_depth bounds the depth; this is only the last line of defence
        raise errors.bad_request("The request body nests too deeply", "json_too_deep") from None
    except ValueError as exc:
        raise errors.invalid_json(str(exc)[:200]) from None


def _check_types(body: dict[str, Any]) -> None:
    """Refuse the fields the gateway itself acts on when their type is wrong: the route, the
    limiter and the relay would otherwise act on a guess the upstream does not share."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.bad_request("'stream' must be a boolean", "invalid_type")
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise errors.bad_request("'messages' must be an array", "invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise errors.bad_request("'stream_options' must be an object", "invalid_type")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        # It decides which provider the request is pinned to.
        raise errors.bad_request("'previous_response_id' must be a string", "invalid_type")
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "n"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            raise errors.bad_request(f"'{name}' must be an integer from 0 to {MAX_COUNT}", "invalid_type")


def _decompress(raw: bytes, wbits: int, limit: int) -> bytes:
    """The decoded body, refused with 413 past ``limit`` bytes: the output is bounded, not only
    the input, since a few KB of gzip can expand to gigabytes."""
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, limit + 1)
        if len(out) > limit or decoder.unconsumed_tail:
            raise errors.body_too_large(limit)
        out += decoder.flush()
    except zlib.error as exc:
        raise errors.bad_request(
            f"The request body could not be decompressed: {exc}", "invalid_encoding"
        ) from None
    if len(out) > limit:
        raise errors.body_too_large(limit)
    if not decoder.eof or decoder.unused_data:
        raise errors.bad_request(
            "The compressed request body is truncated or has trailing data", "invalid_encoding"
        )
    return out


def _arrived(request: web.Request, limit: int) -> bytes | None:
    """The whole body when it has already arrived, as a small one usually has, or None.

    Taken without a wait, so no read timer is armed for it: that timer was a
    measurable share of a small request's cost. Nothing is consumed unless the
    whole body is there.
    """
    declared = request.content_length
    content = request.content
    if not declared or declared > limit or content.exception() is not None or content.total_bytes < declared:
        return None  # _read_limited answers each of these
    return content.read_nowait(declared)  # nothing else has read the body: all of it is buffered


async def _read_limited(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    try:
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
    except (asyncio.IncompleteReadError, web.HTTPException) as exc:
        raise errors.bad_request(
            f"The request body ended early: {type(exc).__name__}", "incomplete_body"
        ) from None
