"""The narrow seam to providers: send a prepared request, get a status, headers and a body.

The request path depends only on ``Transport``. ``http1.Pool`` is the real
one; ``memory.Transport`` answers from a function in the same process, for
tests of the request path that need no socket. Every implementation passes
the same contract suite (tests/proxy/upstream/test_transport_contract.py).
``sse`` reads and writes the event streams providers send.
Failures come back as two exception types so callers (and the breaker/retry
policies) can classify them without knowing the client: ``ConnectFailed``
(no connection, or the peer went away or answered garbage) and ``TimedOut``
(with the phase that ran out: connect, first_byte or total).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float
    total: float


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
