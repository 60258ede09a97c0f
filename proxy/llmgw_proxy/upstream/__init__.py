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

Two more kinds say the provider was not simply unreachable: ``TooLarge``
(the answer broke one of the request's ``Limits``; the connection is dropped)
and ``PoolBusy`` (no pooled connection came free in time: the sidecar's own
capacity, never held against the provider).

``Egress`` says how a request leaves the pod (a forward proxy or direct, the
trust store, a client certificate); ``dial`` opens the connection it asks for.
Two ``ConnectFailed`` kinds name why: ``TlsFailed`` (the provider's
certificate did not verify, or the CA bundle could not be loaded) and
``ProxyFailed`` (the forward proxy refused or broke the tunnel).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float
    total: float


MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one answer may make the sidecar hold, and on the pool it comes through.

    ``max_response_bytes``: a body read whole (after decoding gzip or deflate), or
    what is buffered of a streamed one; ``max_header_bytes`` / ``max_headers``:
    the response head (and a chunked body's trailers); ``max_event_bytes``: one
    server-sent event the sidecar must look inside; ``pool_size``: connections
    open per origin; ``pool_wait``: seconds a request may wait for one of them.
    """

    max_response_bytes: int = 32 * MiB
    max_header_bytes: int = 64 * 1024
    max_headers: int = 128
    max_event_bytes: int = 1 * MiB
    pool_size: int = 1024
    pool_wait: float = 10.0


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True, slots=True)
class Upload:
    """A request body sent on as it arrives (a relayed multipart upload), never held whole.

    ``length`` is its Content-Length; None sends it chunked. It is sent once: a
    request with an ``Upload`` cannot be retried. Only ``total`` bounds it (its
    sending takes part of the time before the answer), and an answer that comes
    before all of it was sent stops the sending and closes the connection after it.
    """

    chunks: AsyncIterable[bytes]
    length: int | None


CONNECT_STAGGER = 0.25
"""Seconds between connection attempts to a host's successive addresses (RFC 8305's default)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Egress:
    """How requests to one provider leave the pod; equal settings share pooled connections.

    ``proxy``: None follows the sidecar's environment (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``NO_PROXY``); otherwise the three settings themselves
    (empty strings: go direct). ``proxy_credentials_file``: ``user:password``
    for the proxy, re-read at each new connection. ``ca_file``: PEM bundle that
    replaces the system trust store; ``client_cert_file`` / ``client_key_file``:
    the certificate presented to the provider (mTLS).
    """

    proxy: tuple[str, str, str] | None = None  # (https_proxy, http_proxy, no_proxy)
    proxy_credentials_file: str | None = None
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    stagger: float = CONNECT_STAGGER


DEFAULT_EGRESS = Egress()


@dataclasses.dataclass(slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | Upload | None
    timeouts: Timeouts
    limits: Limits = DEFAULT_LIMITS
    egress: Egress = DEFAULT_EGRESS


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


class TooLarge(UpstreamError):
    """The answer broke a bound; ``bound`` names the ``upstreamLimits`` field (never a header value)."""

    def __init__(self, bound: str, limit: int) -> None:
        super().__init__(f"the answer exceeds {bound} ({limit})")
        self.bound = bound
        self.limit = limit


class PoolBusy(UpstreamError):
    """No connection to the provider came free within ``pool_wait``: the sidecar is at its own limit."""

    def __init__(self, size: int) -> None:
        super().__init__(f"all {size} pooled connections stayed busy")
        self.size = size


class TlsFailed(ConnectFailed):
    """TLS to the provider failed: ``reason`` is the verifier's (no header, no key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"TLS with the provider failed: {reason}")
        self.reason = reason


class ProxyFailed(ConnectFailed):
    """The forward proxy refused or broke the tunnel; ``reason`` names the proxy by address only."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the egress proxy failed: {reason}")
        self.reason = reason
