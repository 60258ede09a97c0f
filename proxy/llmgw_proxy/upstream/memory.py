"""An ``upstream.Transport`` that answers from a function in the same process, for tests.

``Transport(handler)`` calls ``await handler(request)`` for each request; the
handler returns an ``Answer`` (status, headers, and a body as bytes or an async
iterable of chunks) or raises an ``upstream.UpstreamError`` (``ConnectFailed``
stands for a refused or dropped connection). The timeouts mean what they mean
for ``http1.Pool``: ``first_byte`` bounds the handler, ``total`` bounds the
handler and the body, and the deadline that runs out names the phase; a body
read whole longer than ``limits.max_response_bytes`` raises ``TooLarge``. The body
is produced by a task as a peer would write it, whether or not it is read, and
``close`` cancels that task, which the handler's iterable sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TypeAlias

from llmgw_proxy import upstream


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | AsyncIterable[bytes] = b""


Handler = Callable[[upstream.Request], Awaitable[Answer]]
_End: TypeAlias = Exception | None  # what follows the last chunk: nothing, or the failure that cut the body


class Transport:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def send(self, request: upstream.Request) -> Response:
        if any("\r" in k or "\n" in k or "\r" in v or "\n" in v for k, v in request.headers.items()):
            raise upstream.ConnectFailed("a request header contains a line break")
        loop = asyncio.get_running_loop()
        t = request.timeouts
        deadline = loop.time() + t.total
        phase = "first_byte" if t.first_byte < t.total else "total"
        scope = asyncio.timeout_at(min(loop.time() + t.first_byte, deadline))
        try:
            async with scope:
                if isinstance(request.body, upstream.Upload):
                    # The twin gathers an upload: its handlers read bytes, as a peer's socket would.
                    body = b"".join([chunk async for chunk in request.body.chunks])
                    request = dataclasses.replace(request, body=body)
                answer = await self.handler(request)
        except TimeoutError:
            if scope.expired():
                raise upstream.TimedOut(phase) from None
            raise
        return Response(answer, deadline, request.limits.max_response_bytes)


class Response:
    def __init__(self, answer: Answer, deadline: float, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self.status = answer.status
        self.headers = Headers(answer.headers)
        self._parts: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._produce(answer.body, deadline))

    async def _produce(self, body: bytes | AsyncIterable[bytes], deadline: float) -> None:
        end: _End = None
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                if isinstance(body, bytes):
                    self._put(body)
                else:
                    async for chunk in body:
                        self._put(chunk)
        except Exception as exc:  # the handler's failure (or bug) reaches the reader, not the loop
            end = upstream.TimedOut("total") if scope.expired() else exc
        self._parts.put_nowait(end)

    def _put(self, chunk: bytes) -> None:
        if chunk:  # as from a socket: no empty chunks
            self._parts.put_nowait(chunk)

    async def read(self) -> bytes:
        parts, size = [], 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > self._max_bytes:
                self.close()
                raise upstream.TooLarge("maxResponseBytes", self._max_bytes)
            parts.append(chunk)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while isinstance(part := await self._parts.get(), bytes):
                yield part
            self._parts.put_nowait(part)  # the end stays for any later reader
            if part is not None:
                raise part
        finally:
            self.close()

    def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
            self._parts.put_nowait(upstream.ConnectFailed("the response was abandoned"))


class Headers(Mapping[str, str]):
    """Response headers looked up by name in any case, as ``http1``'s CIMultiDict does."""

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = {name.lower(): (name, value) for name, value in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)
