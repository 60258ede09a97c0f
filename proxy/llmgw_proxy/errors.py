"""OpenAI-shaped errors: ``{"error": {"message", "type", "code"}}`` with the right status.

The official ``openai`` client picks its exception class from the status alone
(400 BadRequestError, 404 NotFoundError, 413/415 APIStatusError, 5xx
InternalServerError), so the status is what matters most; ``type`` and
``code`` follow OpenAI's own vocabulary so callers can branch on them too.
"""

from __future__ import annotations

import json
import math
from typing import TypeVar

from aiohttp import web

_E = TypeVar("_E", bound=BaseException)


class ProxyError(Exception):
    """A failure the caller gets as an OpenAI-shaped JSON body. Never carries secrets."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
        local: bool = False,
    ) -> None:
        super().__init__(message)
        self.local = local  # the sidecar's own limit, not the provider's fault: no breaker failure, no retry
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "type": self.type, "code": self.code}}).encode()

    def response(self) -> web.Response:
        return web.Response(
            status=self.status, body=self.body(), content_type="application/json", headers=self.headers
        )


def settled(exc: _E) -> _E:
    """``exc``, caught and kept as a value from now on, without its traceback and chain.

    A caught exception's traceback holds every frame it passed through, and those
    frames hold the exception (a local, or an object that stores it): a reference
    cycle that only the collector's rare full passes free, keeping the whole
    request (its parsed message, its upstream connection) alive until then. The
    sidecar tunes the collector for speed (``server.run.settle_gc``), so under a
    run of upstream faults these cycles grew its RSS by megabytes. Dropping the
    traceback where the exception becomes a value lets reference counting free
    the request at once. Only for exceptions the sidecar handles and answers:
    an unexpected one is logged with its traceback first.
    """
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return exc


def invalid_json(detail: str) -> ProxyError:
    return ProxyError(400, f"The request body is not valid JSON: {detail}", code="invalid_json")


def bad_request(message: str, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, message, code=code)


def unsupported_media_type(got: str) -> ProxyError:
    return ProxyError(
        415, f"Content-Type must be application/json, got {got or 'none'!r}", code="unsupported_media_type"
    )


def body_too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"The request body exceeds the limit of {limit} bytes", code="request_too_large")


def unknown_model(model: str) -> ProxyError:
    return ProxyError(404, f"The model {model!r} does not exist on this gateway", code="model_not_found")


def endpoint_not_served(endpoint: str, model: str | None = None) -> ProxyError:
    whose = f"The route for model {model!r}" if model is not None else "No route of this gateway"
    return ProxyError(404, f"{whose} does not serve /v1/{endpoint}", code="endpoint_not_served")


def not_ready() -> ProxyError:
    return ProxyError(
        503, "The gateway has no valid configuration loaded yet", type="server_error", code="not_ready"
    )


def shutting_down() -> ProxyError:
    return ProxyError(
        503,
        "The gateway is shutting down and ended this request before it finished; send it again",
        type="server_error",
        code="server_shutting_down",
    )


def upstream_unreachable(provider: str) -> ProxyError:
    return ProxyError(
        502,
        f"Could not connect to provider {provider!r}",
        type="server_error",
        code="upstream_connection_error",
    )


def upstream_tls_failed(provider: str, reason: str) -> ProxyError:
    return ProxyError(
        502,
        f"TLS with provider {provider!r} failed: {reason}",
        type="server_error",
        code="upstream_tls_error",
    )


def egress_proxy_failed(provider: str, reason: str) -> ProxyError:
    return ProxyError(
        502,
        f"Could not reach provider {provider!r} through the egress proxy: {reason}",
        type="server_error",
        code="egress_proxy_error",
    )


def upstream_timeout(provider: str, phase: str) -> ProxyError:
    return ProxyError(
        504,
        f"Provider {provider!r} did not answer in time ({phase} timeout)",
        type="timeout",
        code="upstream_timeout",
    )


def upstream_too_large(provider: str, bound: str, limit: int) -> ProxyError:
    return ProxyError(
        502,
        f"Provider {provider!r} sent an answer beyond the gateway's bound {bound} ({limit})",
        type="server_error",
        code="upstream_response_too_large",
    )


def upstream_pool_busy(provider: str, size: int) -> ProxyError:
    return ProxyError(
        503,
        f"All {size} connections to provider {provider!r} are busy; the gateway could not send the "
        "request in time (raise upstreamLimits.poolSize or poolWait)",
        type="server_error",
        code="upstream_pool_exhausted",
        headers={"Retry-After": "1"},
        local=True,
    )


def internal(message: str = "The gateway failed to handle the request") -> ProxyError:
    return ProxyError(500, message, type="server_error", code="internal_error")


def rate_limited(retry_after: float | None, headers: dict[str, str]) -> ProxyError:
    """Every target refused by a local limit. ``retry_after`` None: the request can never fit."""
    out = dict(headers)
    if retry_after is None:
        return ProxyError(
            429,
            "The request needs more tokens than the gateway's rate limit can ever grant",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=out,
        )
    out["Retry-After"] = str(max(1, math.ceil(retry_after)))
    # The openai clients prefer this one: they wait the exact time instead of whole seconds.
    out["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    return ProxyError(
        429,
        f"Rate limit reached on this gateway; retry in {out['Retry-After']} s",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=out,
    )


def insufficient_quota() -> ProxyError:
    """Every target refused by a spent token budget: OpenAI's answer for a spent quota."""
    return ProxyError(
        429,
        "The token budget of this gateway's provider is spent for the current period",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def breakers_open(retry_after: float) -> ProxyError:
    return ProxyError(
        503,
        "Every provider for this model is failing and temporarily not called (circuit breaker open)",
        type="service_unavailable",
        code="circuit_open",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )
