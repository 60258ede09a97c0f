"""The narrow seam to providers: send a prepared request, get a status, headers and a body.

The pipeline depends only on ``Transport``; ``AiohttpTransport`` is the real
one (a pooled ``ClientSession``). Failures come back as two exception types so
callers (and the breaker/retry policies) can classify them without knowing
aiohttp: ``ConnectFailed`` (nothing was sent or the peer went away) and
``TimedOut`` (with the phase that ran out: connect, first_byte or total).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float
    total: float
    client: aiohttp.ClientTimeout = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once per provider, not per request.
        object.__setattr__(self, "client", aiohttp.ClientTimeout(total=self.total, sock_connect=self.connect))


@dataclasses.dataclass(slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    timeouts: Timeouts


class Response(Protocol):
    status: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: Request) -> Response: ...


class UpstreamError(Exception):
    """Base of transport failures; never carries request headers (they hold the key)."""


class ConnectFailed(UpstreamError):
    pass


class TimedOut(UpstreamError):
    def __init__(self, phase: str) -> None:
        super().__init__(f"{phase} timeout")
        self.phase = phase


class _AiohttpResponse:
    """The session's total timeout (set per provider) still runs while the body is read."""

    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError:
            raise TimedOut("total") from None
        except aiohttp.ClientError as exc:
            raise ConnectFailed(type(exc).__name__) from None
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                try:
                    # readany hands over whatever arrived: SSE events are relayed as they come.
                    chunk = await content.readany()
                except TimeoutError:
                    raise TimedOut("total") from None
                except aiohttp.ClientError as exc:
                    raise ConnectFailed(type(exc).__name__) from None
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        # Closing (not releasing) drops a half-read connection instead of reusing it.
        if not self._resp.closed:
            self._resp.close()


class AiohttpTransport:
    """Connect and total timeouts are aiohttp's own (one timer per request, which it runs anyway);
    the first-byte timeout is one more timer, around the wait for the response headers."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, request: Request) -> Response:
        t = request.timeouts
        try:
            if t.first_byte < t.total:
                async with asyncio.timeout(t.first_byte):
                    resp = await self._request(request)
            else:
                resp = await self._request(request)
        except aiohttp.ConnectionTimeoutError:
            raise TimedOut("connect") from None
        except TimeoutError:
            # The first-byte timer, when set, always fires before the longer total one.
            raise TimedOut("first_byte" if t.first_byte < t.total else "total") from None
        except aiohttp.ClientError as exc:
            raise ConnectFailed(type(exc).__name__) from None
        return _AiohttpResponse(resp)

    def _request(self, request: Request) -> Any:
        return self._session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=request.timeouts.client,
            allow_redirects=False,
        )


def new_session(limit: int = 256) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=30, enable_cleanup_closed=False)
    # auto_decompress stays on: usage accounting must read the JSON the provider sent.
    # No skip_auto_headers: aiohttp rebuilds that set per request (sorting it, copying the
    # headers); forward.request_headers supplies a User-Agent when the caller sent none.
    return aiohttp.ClientSession(connector=connector, trust_env=False)
