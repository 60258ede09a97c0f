"""Many long-lived streams through one sidecar: ``python -m llmgw_dev.bench_concurrent_streams``.

``--streams`` (2,000) chat streams of ``CHUNKS`` (20) chunks ``--chunk-delay``
(0.5 s) apart, opened over ``--ramp`` seconds, first sent straight to a fake
provider, then the same through a real ``llmgw-proxy`` process. The fake
runs in this process; the streams are sent from a child process (aiohttp on
uvloop, its open-file limit raised) so that neither the fake nor the caller
shares a core's event loop with the other.

Printed for each run: streams completed, p50/p99/max duration (from a
stream's request to its ``[DONE]``), and for the sidecar its RSS idle, with
every stream open and at its peak, and the RSS per open stream; then the p99
ratio sidecar / direct (the target is within 5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

from llmgw_dev import fake_provider, loadkit

CHUNKS = 20
REPLY = " ".join(f"word{i}" for i in range(CHUNKS))
OPEN = "open"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_files(needed: int) -> int:
    """Raise the soft open-file limit to ``needed`` (at most the hard limit); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


# -- the caller, in its own process ------------------------------------------------------------


async def _one(session: Any, url: str, delay: float, opened: list[int], step: int) -> tuple[float, str]:
    await asyncio.sleep(delay)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.monotonic()
    chunks = 0
    try:
        async with session.post(url + "/chat/completions", json=body) as r:
            if r.status != 200:
                return time.monotonic() - started, f"status {r.status}"
            async for line in r.content:
                if not line.startswith(b"data: "):
                    continue
                if line.startswith(b"data: [DONE]"):
                    return time.monotonic() - started, "ok" if chunks == CHUNKS else f"{chunks} chunks"
                chunks += 1
                if chunks == 1:
                    opened[0] += 1
                    if opened[0] % step == 0:
                        print(f"{OPEN} {opened[0]}", flush=True)
    except Exception as exc:  # counted by kind, whatever the client raised
        return time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:120]
    finally:
        if chunks:
            opened[0] -= 1
    return time.monotonic() - started, f"no [DONE] after {chunks} chunks"


async def _client(url: str, streams: int, ramp: float) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=120)
    opened = [0]  # streams open now (their first chunk came, their [DONE] not yet)
    step = max(1, streams // 20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(
            *(_one(session, url, ramp * i / streams, opened, step) for i in range(streams))
        )
    print(json.dumps({"durations": [d for d, _ in results], "outcomes": [o for _, o in results]}), flush=True)


def client_main(url: str, streams: int, ramp: float) -> None:
    soft = raise_open_files(streams + 256)
    if soft < streams + 64:
        sys.exit(f"open-file limit {soft} is too low for {streams} streams (raise the hard limit)")
    import uvloop

    uvloop.run(_client(url, streams, ramp))


# -- the run --------------------------------------------------------------------------------


async def _send(url: str, streams: int, ramp: float, on_open: Any = None) -> tuple[list[float], list[str]]:
    """Run the caller process against ``url``; ``on_open(n)`` hears how many streams are open."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmgw_dev.bench_concurrent_streams", "--client", url,
        "--streams", str(streams), "--ramp", str(ramp),
        stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
    )  # fmt: skip
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    async for line in proc.stdout:
        if line.startswith(OPEN.encode()):
            if on_open:
                on_open(int(line.split()[1]))
        elif line.startswith(b"{"):
            result = json.loads(line)
    if await proc.wait() != 0 or not result:
        raise RuntimeError(f"the caller process failed ({proc.returncode})")
    return result["durations"], result["outcomes"]


def _summary(name: str, durations: list[float], outcomes: list[str]) -> tuple[str, float]:
    ok = sum(o == "ok" for o in outcomes)
    ds = sorted(durations)
    p99 = ds[max(0, int(len(ds) * 0.99) - 1)] if ds else 0.0
    line = (
        f"{name:<8} completed {ok}/{len(outcomes)}  p50 {statistics.median(ds):.3f} s  "
        f"p99 {p99:.3f} s  max {ds[-1]:.3f} s"
    )
    failures: dict[str, int] = {}
    for o in outcomes:
        if o != "ok":
            kind = o.split(":")[0]
            failures[kind] = failures.get(kind, 0) + 1
    if failures:
        first = next(o for o in outcomes if o != "ok")
        line += f"  failures {failures}, e.g. {first}"
    return line, p99


async def bench(streams: int, chunk_delay: float, ramp: float, workdir: pathlib.Path) -> int:
    fake = fake_provider.FakeProvider(reply=REPLY, record=False)
    fake.plan(fake_provider.Fault(chunk_delay=chunk_delay, times=0))
    print(
        f"{streams} streams of {CHUNKS} chunks {chunk_delay:g} s apart, opened over {ramp:g} s "
        f"(open-file limit here {raise_open_files(streams + 256)})"
    )
    async with loadkit.fake_server(fake) as url:
        direct, direct_outcomes = await _send(url, streams, ramp)
        line, direct_p99 = _summary("direct", direct, direct_outcomes)
        print(line, flush=True)
        doc = {
            "version": 1,
            "providers": {
                "fake": {
                    "baseUrl": url,
                    "timeouts": {"total": 600, "streamIdle": 60},
                    "retry": {"attempts": 1},
                    "upstreamLimits": {"poolSize": streams + 100},
                }
            },
            "routes": [{"model": "*", "targets": [{"provider": "fake"}]}],
            "listen": {"maxConnections": streams + 100},
        }
        path = workdir / "config.json"
        loadkit.write_config(path, doc)
        async with loadkit.sidecar(path, workdir / "sidecar.log") as sidecar:
            idle = sidecar.rss_kb()
            readings = {"open": 0, "open_rss": 0, "peak": idle}
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    readings["peak"] = max(readings["peak"], sidecar.rss_kb())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.25)

            def on_open(n: int) -> None:
                if n > readings["open"]:
                    readings["open"], readings["open_rss"] = n, sidecar.rss_kb()

            cpu = cpu_seconds(sidecar.proc.pid)
            sampler = asyncio.create_task(sample())
            proxied, proxied_outcomes = await _send(sidecar.url + "/v1", streams, ramp, on_open)
            stop.set()
            await sampler
            readings["peak"] = max(readings["peak"], sidecar.rss_kb())
            cpu = cpu_seconds(sidecar.proc.pid) - cpu
        line, proxied_p99 = _summary("sidecar", proxied, proxied_outcomes)
        print(line)
    most = readings["open"]
    per_stream = (readings["open_rss"] - idle) / most if most else float("nan")
    print(
        f"sidecar RSS: idle {idle / 1024:.1f} MB, {most} streams open {readings['open_rss'] / 1024:.1f} MB, "
        f"peak {readings['peak'] / 1024:.1f} MB; {per_stream:.1f} KiB per open stream"
    )
    chunks = streams * (CHUNKS + 1)
    print(f"sidecar CPU: {cpu:.1f} s for {chunks} relayed events, {cpu / chunks * 1e6:.0f} us each")
    ratio = proxied_p99 / direct_p99 if direct_p99 else float("nan")
    print(f"p99 sidecar / direct: {ratio:.3f} (target at most 1.05)")
    failed = sum(o != "ok" for o in direct_outcomes + proxied_outcomes)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m llmgw_dev.bench_concurrent_streams", description=__doc__.splitlines()[0]
    )
    p.add_argument("--streams", type=int, default=2000, help="concurrent streams (default: %(default)s)")
    p.add_argument("--chunk-delay", type=float, default=0.5, help="seconds between chunks (%(default)s)")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds to open them all over (%(default)s)")
    p.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the caller process's mode
    args = p.parse_args(argv)
    if args.client:
        client_main(args.client, args.streams, args.ramp)
        return 0
    import uvloop

    with tempfile.TemporaryDirectory(prefix="llmgw-streams-") as tmp:
        return uvloop.run(bench(args.streams, args.chunk_delay, args.ramp, pathlib.Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
