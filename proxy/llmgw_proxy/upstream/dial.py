"""Open one upstream connection the way an ``upstream.Egress`` asks: direct or through a proxy.

- the forward proxy comes from the egress settings, else from the sidecar's
  environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), read once when
  the pool is made; ``policies.egress.choose`` decides per origin;
- https through a proxy: ``CONNECT host:port``, then TLS with the provider
  inside the tunnel, so the proxy sees neither the key nor the body. The
  proxy's answer head is bounded by the request's ``maxHeaderBytes``; the
  whole dial (addresses, CONNECT, TLS handshake) by the ``connect`` timeout,
  which the caller applies;
- plain http through a proxy is sent in absolute form to the proxy
  (``Pool.send`` writes that head; ``Route`` tells it to);
- proxy credentials come from the egress's credentials file, else from the
  proxy URL's userinfo, and go out only in ``Proxy-Authorization``; errors and
  logs name the proxy by host and port alone;
- every TCP connection (to the proxy or to the provider) races the host's
  addresses RFC 8305-style: ordered by ``policies.egress.interleave`` and
  started ``egress.stagger`` seconds apart (or at once when the one before
  failed), so a black-holed address costs ``stagger``, not the timeout;
- TLS: the system trust store, or the egress's CA bundle instead of it, and
  the client certificate if set. Contexts are cached per files and their
  inodes, sizes and modification times, so a rotated bundle is used from the
  next connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from llmgw_proxy import upstream
from llmgw_proxy.policies import egress as egress_policy

MAX_CREDENTIALS_BYTES = 4096
"""Largest proxy credentials file read (``user:password``)."""

SockAddr = tuple[Any, ...]
Resolver = Callable[[str, int], Awaitable[Sequence[tuple[int, SockAddr]]]]
"""(host, port) -> (family, socket address) pairs, in the resolver's order."""


async def system_resolver(host: str, port: int) -> list[tuple[int, SockAddr]]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, tuple(addr)) for family, _, _, _, addr in infos]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """How one origin is reached: ``proxy`` None is direct."""

    proxy: egress_policy.ProxyAddress | None
    credentials_file: str | None = None

    def proxy_authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value, or None when the proxy has no credentials."""
        if self.proxy is None:
            return None
        if self.credentials_file is not None:
            pair = _read_credentials(self.credentials_file)
        elif self.proxy.username is not None:
            pair = f"{self.proxy.username}:{self.proxy.password or ''}"
        else:
            return None
        return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _read_credentials(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CREDENTIALS_BYTES + 1)
    except OSError as exc:
        raise upstream.ProxyFailed(
            f"the proxy credentials file {path} cannot be read ({type(exc).__name__})"
        ) from None
    if len(raw) > MAX_CREDENTIALS_BYTES:
        raise upstream.ProxyFailed(
            f"the proxy credentials file {path} is longer than {MAX_CREDENTIALS_BYTES} bytes"
        )
    text = raw.decode("utf-8", "replace").strip()
    if ":" not in text or any(c in text for c in "\r\n"):
        raise upstream.ProxyFailed(f"the proxy credentials file {path} does not hold one user:password line")
    return text


class Dialer:
    """Routes and opens connections; one per pool, holding the environment's proxy settings."""

    def __init__(self, environ: Mapping[str, str] | None = None, resolver: Resolver | None = None) -> None:
        self.environment = egress_policy.ProxySettings.from_environment(
            dict(os.environ if environ is None else environ)
        )
        self.resolve: Resolver = resolver or system_resolver

    def route(self, scheme: str, host: str, port: int, egress: upstream.Egress) -> Route:
        settings = (
            egress_policy.ProxySettings(*egress.proxy) if egress.proxy is not None else self.environment
        )
        return _route(settings, scheme, host, port, egress.proxy_credentials_file)

    async def open(
        self,
        factory: Callable[[], asyncio.Protocol],
        scheme: str,
        host: str,
        port: int,
        egress: upstream.Egress,
        route: Route,
        limits: upstream.Limits,
        default_tls: ssl.SSLContext | None,
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        """A connected transport and protocol; OSError and ssl errors come out as ``ConnectFailed``."""
        loop = asyncio.get_running_loop()
        tls = tls_context(egress, default_tls) if scheme == "https" else None
        proxy = route.proxy
        try:
            if proxy is None:
                sock = await connect(self.resolve, host, port, egress.stagger)
            else:
                try:
                    sock = await connect(self.resolve, proxy.host, proxy.port, egress.stagger)
                except OSError as exc:
                    raise upstream.ProxyFailed(
                        f"cannot connect to {proxy.shown} ({type(exc).__name__})"
                    ) from None
                if scheme == "https":
                    try:
                        await _tunnel(sock, host, port, route, limits.max_header_bytes)
                    except BaseException:
                        sock.close()
                        raise
            try:
                return await loop.create_connection(
                    factory, sock=sock, ssl=tls, server_hostname=host if tls else None
                )
            except BaseException:
                sock.close()
                raise
        except ssl.SSLCertVerificationError as exc:
            raise upstream.TlsFailed(f"certificate verification failed: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise upstream.TlsFailed(str(exc.reason or type(exc).__name__)) from None
        except OSError as exc:
            raise upstream.ConnectFailed(type(exc).__name__) from None


@functools.lru_cache(maxsize=1024)
def _route(
    settings: egress_policy.ProxySettings, scheme: str, host: str, port: int, credentials_file: str | None
) -> Route:
    """Asked per request, so cached: a sidecar sends to a handful of origins."""
    url = egress_policy.choose(settings, scheme, host, port)
    if url is None:
        return Route(None)
    try:
        return Route(egress_policy.parse_proxy(url), credentials_file)
    except egress_policy.ProxyUrlError as exc:
        raise upstream.ProxyFailed(str(exc)) from None


async def _tunnel(sock: socket.socket, host: str, port: int, route: Route, max_head: int) -> None:
    """CONNECT through the proxy; returns when it answered 2xx and the tunnel is open."""
    assert route.proxy is not None
    loop = asyncio.get_running_loop()
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    auth = route.proxy_authorization()
    if auth is not None:
        head += f"Proxy-Authorization: {auth}\r\n"
    await loop.sock_sendall(sock, (head + "\r\n").encode("utf-8"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        if len(answer) > max_head:
            raise upstream.ProxyFailed(
                f"{route.proxy.shown} sent a CONNECT answer longer than {max_head} bytes"
            )
        piece = await loop.sock_recv(sock, 4096)
        if not piece:
            raise upstream.ProxyFailed(f"{route.proxy.shown} closed the connection during CONNECT")
        answer += piece
    reply, _, rest = answer.partition(b"\r\n\r\n")
    if len(reply) > max_head:
        raise upstream.ProxyFailed(f"{route.proxy.shown} sent a CONNECT answer longer than {max_head} bytes")
    status_line = reply.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0
    if not fields[0].startswith("HTTP/1.") or status == 0:
        raise upstream.ProxyFailed(f"{route.proxy.shown} answered CONNECT with something not HTTP")
    if status == 407:
        raise upstream.ProxyFailed(f"{route.proxy.shown} requires proxy credentials (407)")
    if not 200 <= status < 300:
        raise upstream.ProxyFailed(f"{route.proxy.shown} refused to CONNECT to {authority} ({status})")
    if rest:
        raise upstream.ProxyFailed(f"{route.proxy.shown} sent bytes before the TLS handshake")


async def connect(resolve: Resolver, host: str, port: int, stagger: float) -> socket.socket:
    """A connected non-blocking socket to one of ``host``'s addresses, raced RFC 8305-style.

    Cancelled (the caller's connect timeout), it closes every socket it opened.
    """
    found = await resolve(host, port)
    ordered = egress_policy.interleave(list(found))
    if not ordered:
        raise OSError(f"no address for {host}")
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[socket.socket]] = set()
    last_error: BaseException | None = None
    pending = list(ordered)
    try:
        while pending or running:
            if pending:
                family, address = pending.pop(0)
                running.add(loop.create_task(_attempt(family, address)))
            done, _ = await asyncio.wait(
                running, timeout=stagger if pending else None, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                running.discard(task)
                error = task.exception()
                if error is None:
                    return task.result()
                last_error = error
        assert last_error is not None
        raise last_error if isinstance(last_error, OSError) else OSError(str(last_error))
    finally:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(BaseException):
                (await task).close()


async def _attempt(family: int, address: SockAddr) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def tls_context(egress: upstream.Egress, default: ssl.SSLContext | None) -> ssl.SSLContext:
    if egress.ca_file is None and egress.client_cert_file is None:
        return default or _system_context()
    files = (egress.ca_file, egress.client_cert_file, egress.client_key_file)
    stamps = tuple(_stamp(path) for path in files)
    return _context(files, stamps)


def _stamp(path: str | None) -> tuple[int, ...]:
    """What tells a changed file: kubelet swaps a symlink (a new inode), an editor may keep it."""
    if path is None:
        return ()
    try:
        st = os.stat(path)  # follows symlinks, as kubelet's ..data swap needs
    except OSError:
        return (-1,)  # _context reports the file
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _context(
    files: tuple[str | None, str | None, str | None], stamps: tuple[tuple[int, ...], ...]
) -> ssl.SSLContext:
    ca_file, cert_file, key_file = files
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise upstream.TlsFailed(f"the CA bundle {ca_file} cannot be loaded ({_why(exc)})") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise upstream.TlsFailed(
                f"the client certificate {cert_file} cannot be loaded ({_why(exc)})"
            ) from None
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__


@functools.cache
def _system_context() -> ssl.SSLContext:
    return ssl.create_default_context()
