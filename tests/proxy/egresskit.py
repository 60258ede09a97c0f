"""Real egress parts for the sidecar's tests: a test PKI, a tinyproxy forward proxy, a black hole.

- ``Pki``: a test CA (openssl), a server certificate for localhost and
  127.0.0.1 signed by it, a client certificate for mTLS, and a second CA that
  signed none of them;
- ``Tinyproxy``: Debian's tinyproxy on a free loopback port, with its log in
  the test's tmp directory (started in the foreground, stopped by its pid);
- ``black_hole``: an IPv6 loopback address and port that never answers a
  connect: its listen backlog is full and nothing accepts, so the kernel
  drops every further SYN, as a firewall that black-holes IPv6 would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: pathlib.Path
    other_ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(self.ca))
        return ctx


def _ca(d: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = d / f"{name}.pem", d / f"{name}-key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=llmgw test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return cert, key


def _leaf(
    d: pathlib.Path, name: str, ca: tuple[pathlib.Path, pathlib.Path], extensions: str
) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key, csr, ext = d / f"{name}.pem", d / f"{name}-key.pem", d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key),
             "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


def make_pki(d: pathlib.Path) -> Pki:
    ca = _ca(d, "ca")
    other = _ca(d, "other-ca")
    server = _leaf(
        d, "server", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    client = _leaf(d, "client", ca, "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], other[0], server[0], server[1], client[0], client[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Tinyproxy:
    port: int
    log: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connects_to(self, authority: str) -> int:
        """How many CONNECT requests for ``authority`` (host:port) the proxy logged."""
        return self.log_text().count(f"CONNECT {authority} ")


def tinyproxy_binary() -> str:
    found = shutil.which("tinyproxy") or shutil.which("tinyproxy", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("tinyproxy is not installed: apt-get install -y tinyproxy (.ci/run installs it)")
    return found


@contextlib.asynccontextmanager
async def tinyproxy(
    directory: pathlib.Path, *, basic_auth: tuple[str, str] | None = None
) -> AsyncIterator[Tinyproxy]:
    """A tinyproxy on 127.0.0.1; ``basic_auth`` makes it ask for proxy credentials."""
    port = free_port()
    log = directory / "tinyproxy.log"
    conf = directory / "tinyproxy.conf"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        f'LogFile "{log}"',
        "LogLevel Info",
        "MaxClients 32",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    conf.write_text("\n".join(lines) + "\n")
    with (directory / "tinyproxy.stderr").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            tinyproxy_binary(), "-d", "-c", str(conf), stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        await _until_listening(port, process)
        yield Tinyproxy(port, log)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _until_listening(port: int, process: asyncio.subprocess.Process, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"tinyproxy exited with {process.returncode} before it listened")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise RuntimeError("tinyproxy did not listen in time") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


@contextlib.contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """(address, port) on ::1 where a connect never completes while the context is open."""
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        server.bind(("::1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler.connect(("::1", port))  # fills the backlog of one; nothing ever accepts it
        yield "::1", port
    finally:
        filler.close()
        server.close()


@dataclasses.dataclass
class Tap:
    """A TCP relay that keeps every byte the client sent: what a forward proxy gets to see."""

    port: int
    sent: bytearray

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def tap(to_port: int) -> AsyncIterator[Tap]:
    """Relay loopback connections to ``to_port`` (the real proxy), recording the client's bytes."""
    sent = bytearray()
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    sent.extend(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", to_port)
        both = [
            asyncio.ensure_future(pipe(client_r, upstream_w, True)),
            asyncio.ensure_future(pipe(upstream_r, client_w, False)),
        ]
        tasks.update(both)
        await asyncio.gather(*both)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield Tap(server.sockets[0].getsockname()[1], sent)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
