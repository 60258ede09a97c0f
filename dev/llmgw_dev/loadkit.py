"""A real ``llmgw-proxy`` process and in-process fake providers, for the load and fault runs.

The soak (``llmgw_dev.soak``), the concurrent-streams benchmark and the
reload-under-load test drive the sidecar as it runs in a pod: a child process
reading a config file, with its log in a file (a pipe left unread would stall
it once full). Its ports come from the ``listening`` line it logs; it is
stopped with SIGTERM and, if that does not end it in time, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import resource
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from llmgw_dev import fake_provider

START_TIMEOUT = 60.0
"""Seconds for the sidecar's ``listening`` line: generous, the machine may be loaded."""
STOP_TIMEOUT = 60.0


@dataclasses.dataclass
class Sidecar:
    proc: asyncio.subprocess.Process
    api: str  # host:port
    admin: str
    log: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://{self.api}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def rss_kb(pid: int) -> int:
    """The process's resident set (``VmRSS``) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _listening(log: pathlib.Path) -> dict[str, str] | None:
    for raw in log.read_bytes().splitlines():
        if raw.startswith(b"{"):
            line = json.loads(raw)
            if "api" in line and "admin" in line:
                return {"api": line["api"], "admin": line["admin"]}
    return None


def _tail(log: pathlib.Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def sidecar(
    config_path: pathlib.Path,
    log: pathlib.Path,
    reload_interval: float = 1.0,
    open_files: int | None = None,
) -> AsyncIterator[Sidecar]:
    """Run ``llmgw-proxy`` on loopback ports of its choosing until the block ends.

    ``open_files`` starts it with that soft open-file limit, as a container runtime may.
    """

    def limit() -> None:
        if open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmgw_proxy.cli", "--config", str(config_path),
            "--host", "127.0.0.1", "--port", "0", "--admin-host", "127.0.0.1", "--admin-port", "0",
            "--reload-interval", str(reload_interval),
            stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL, preexec_fn=limit,
        )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while (ports := _listening(log)) is None:
            if proc.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"the sidecar did not start:\n{_tail(log)}")
            await asyncio.sleep(0.05)  # a file has no event to await; the child writes it
        yield Sidecar(proc, ports["api"], ports["admin"], log)
    finally:
        await stop(proc)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def fake_server(fake: fake_provider.FakeProvider) -> AsyncIterator[str]:
    """Serve ``fake`` on a free loopback port; yields its base URL (up to ``/v1``)."""
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)  # a burst of streams is not dropped
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()


def write_config(path: pathlib.Path, doc: dict[str, object]) -> None:
    """Replace ``path`` atomically, as kubelet's ``..data`` swap does: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
