"""The errors the sidecar itself produces, in the shape of the API family the caller speaks.

OpenAI callers get ``{"error": {"message", "type", "code"}}`` (``errors.ProxyError``).
Anthropic callers (``/v1/messages``) get Anthropic's
``{"type": "error", "error": {"type", "message"}}`` with its type names, so the
``anthropic`` SDK raises the exception a real Anthropic answer would raise.

In a stream that already started, the error is an event: for chat and
completions the data-only error event the ``openai`` client raises; for the
Responses API an ``error`` event (its ``type``, ``code``, ``message`` and the
next ``sequence_number``, plus the ``error`` object the ``openai`` client
raises on); for Anthropic an ``error`` event the ``anthropic`` client raises.
"""

from __future__ import annotations

import json

from aiohttp import web

from llmgw_proxy import errors
from llmgw_proxy.upstream import sse

ANTHROPIC_ENDPOINT = "messages"
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    return ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_body(status: int, message: str) -> bytes:
    error = {"type": anthropic_type(status), "message": message}
    return json.dumps({"type": "error", "error": error}).encode()


def anthropic(endpoint: str) -> bool:
    """``endpoint`` (a path after ``/v1/``) is Anthropic's: its callers read Anthropic's errors."""
    return endpoint == ANTHROPIC_ENDPOINT or endpoint.startswith(ANTHROPIC_ENDPOINT + "/")


def response(endpoint: str, failure: errors.ProxyError) -> web.Response:
    """``failure`` as the answer a caller of ``endpoint`` expects."""
    if not anthropic(endpoint):
        return failure.response()
    return web.Response(
        status=failure.status,
        body=anthropic_body(failure.status, failure.message),
        content_type="application/json",
        headers=failure.headers,
    )


def stream_event(endpoint: str, failure: errors.ProxyError, last_sequence: int | None = None) -> bytes:
    """The in-band event that ends a started stream of ``endpoint`` with ``failure``."""
    code = failure.code or "upstream_error"
    if anthropic(endpoint):
        return b"event: error\ndata: " + anthropic_body(failure.status, failure.message) + b"\n\n"
    if endpoint == "responses":
        data = {
            "type": "error",
            "code": code,
            "message": failure.message,
            "param": None,
            "sequence_number": (last_sequence + 1) if last_sequence is not None else 0,
            "error": {"message": failure.message, "type": failure.type, "code": code},
        }
        return b"event: error\n" + sse.encode(json.dumps(data).encode())
    return sse.error_event(failure.message, failure.type, code)
