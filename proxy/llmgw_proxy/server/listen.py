"""Bounds on the two listeners: header sizes, idle time, open connections, and JSON errors.

aiohttp's own defaults let a connection idle for an hour, and a connection that
sends half a request line is idle in its eyes: the admin listener, open to any
pod, could be emptied of file descriptors by anyone. Here:

- ``keepalive_timeout`` is the listener's ``idleTimeout``. aiohttp arms it when
  a connection opens and after each answer, and closes the connection if no
  complete request head arrived by then: it bounds idle keep-alive connections
  and slow (or never finished) request heads alike;
- request heads are bounded in line length, field length and header count;
- ``CappedSite`` counts open connections and answers one past ``maxConnections``
  with a 503 and closes it at once, so its descriptor is freed;
- aiohttp's answers to unparseable requests (400, 413, 431...) become
  OpenAI-shaped JSON like every other error, logged at debug level only (a
  hostile caller must not be able to fill the logs);
- bodies are never decompressed by aiohttp (whose decoder is unbounded here):
  ``steps.parse`` decodes them with the body limit as the bound.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

MAX_LINE = 8190
"""Bytes in the request line or one header line (aiohttp's default, stated)."""
MAX_FIELD = 8190
"""Bytes in one header value."""
MAX_HEADERS = 100
"""Header lines in one request."""
LINGER = 5.0
"""Seconds an answered request's unread body is drained before the connection closes."""


def handler_args(idle_timeout: float) -> dict[str, Any]:
    """aiohttp request-handler settings for a listener (also passed to test servers)."""
    return {
        "keepalive_timeout": idle_timeout,
        "max_line_size": MAX_LINE,
        "max_field_size": MAX_FIELD,
        "max_headers": MAX_HEADERS,
        "lingering_time": min(LINGER, idle_timeout),
        "auto_decompress": False,
    }


def _error_body(status: int, message: str, code: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


_FULL = _error_body(503, "The gateway has too many open connections", "too_many_connections")
_FULL_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_FULL)).encode() + b"\r\nConnection: close\r\n\r\n" + _FULL
)


class _Count:
    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = 0


class _Handler(RequestHandler):
    """aiohttp's handler, counted, with OpenAI-shaped answers to requests it cannot parse."""

    def __init__(self, manager: web.Server, count: _Count, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # Counted when made, not in connection_made: the loop accepts a burst of connections
        # and makes all their protocols before the first connection_made runs.
        self._count = count
        self._counted = True
        count.open += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._count.open -= 1
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        self.logger.debug("unparseable request: %s", message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed")
        if status >= 500:
            body = _error_body(status, "The gateway failed to handle the request", "internal_error")
        else:
            body = _error_body(status, f"Malformed HTTP request: {(message or '')[:200]}", "bad_http_request")
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.force_close()
        return resp


class _Refuse(asyncio.Protocol):
    """One connection past the cap: told why, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        stream = cast(asyncio.Transport, transport)
        stream.write(_FULL_ANSWER)
        stream.close()


class CappedSite(web.TCPSite):
    """A TCP site that serves at most ``max_connections`` connections at once.

    Give it a ``backlog`` of ``max_connections`` (the kernel caps it at ``somaxconn``):
    at aiohttp's default of 128, a burst of new connections while the loop is busy
    overflows the accept queue, and each connection dropped there waits a SYN
    retransmit (1 s, then 3 s, ...) before it is even seen.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        handler_args: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._max = max_connections
        self._args = handler_args
        self.count = _Count()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        args, count, cap = self._args, self.count, self._max

        def protocol() -> asyncio.Protocol:
            if count.open >= cap:
                return _Refuse()
            return _Handler(server, count, loop=loop, **args)

        self._server = await loop.create_server(protocol, self._host, self._port, backlog=self._backlog)
