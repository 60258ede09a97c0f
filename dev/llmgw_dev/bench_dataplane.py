"""What polling the data plane costs at scale: ``python -m llmgw_dev.bench_dataplane [--pods 1000]``.

A server process answers ``GET /status`` on ``--pods`` loopback addresses
(127.0.101.0 onwards, one listening socket each, the admin port), every answer
a realistic report made with the sidecar's own model (three providers, one of
them with its breaker open). The operator's production poller
(``poll.Poller`` with ``sidecars.Fetcher``, default concurrency and timeout)
then polls them as one gateway's ready pods, several rounds. Only the pod list
and the ConfigMap come from a stand-in for the API client: the cost measured
is the one that grows with pods.

Printed: the time of one round (median and worst) against the default period
(15 s), the poller's CPU seconds per round, and its process's resident memory
(VmRSS, VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import yaml

from llmgw_operator import poll, sidecars
from llmgw_operator.render import dataplane, names
from llmgw_proxy import config, status

FIRST = ipaddress.ip_address("127.0.101.0")
PORT = 19090
DOC = {
    "version": 1,
    "providers": {
        "primary": {"baseUrl": "http://127.0.0.1:1/v1"},
        "fallback": {"baseUrl": "http://127.0.0.1:2/v1"},
    },
    "routes": [{"model": "*", "targets": [{"provider": "primary"}, {"provider": "fallback"}]}],
}


def addresses(n: int) -> list[str]:
    return [str(FIRST + i) for i in range(n)]


def report() -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    document = status.SidecarStatus(
        ready=True,
        generation=3,
        config_hash=config.digest(config.parse(DOC)),
        providers={
            "primary": status.ProviderReport(
                breaker=status.BreakerState.OPEN,
                breaker_since=now,
                consecutive_failures=0,
                last_failure_kind="5xx",
                last_failure_at=now,
                remaining_share=0.8,
            ),
            "fallback": status.ProviderReport(breaker=status.BreakerState.CLOSED, breaker_since=now),
            "local": status.ProviderReport(paused_until=now, remaining_share=0.0),
        },
        cache=status.CacheReport(entries=120, bytes=480_000),
    )
    return document.model_dump_json(by_alias=True, exclude_none=True).encode()


async def serve(n: int) -> None:
    """One asyncio server per address, each answering every request with the same report."""
    body = report()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    answer = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, ip, PORT, backlog=128) for ip in addresses(n)]
    print(json.dumps({"msg": "listening", "servers": len(servers)}), flush=True)
    await asyncio.Event().wait()


class _PodsClient:
    """The two API reads the poller makes, answered from memory (the API is not what is measured)."""

    def __init__(self, n: int) -> None:
        ready = [{"type": "Ready", "status": "True"}]
        labels = {names.GATEWAY_LABEL: "chat"}
        self.pods = [
            {
                "metadata": {"name": f"chat-{i}", "labels": labels},
                "status": {"podIP": ip, "conditions": ready},
            }
            for i, ip in enumerate(addresses(n))
        ]
        self.config_map = {
            "metadata": {"resourceVersion": "1"},
            "data": {names.CONFIG_KEY: yaml.safe_dump(DOC)},
        }

    async def list_pages(
        self, kind: str, namespace: str, label_selector: str | None = None, limit: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A round's LIST of the namespace's gateway pods, ``limit`` a page."""
        for start in range(0, len(self.pods), limit):
            yield self.pods[start : start + limit]

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.config_map

    async def peek(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The operator's cached client answers the ConfigMap from its watch copy."""
        return self.config_map


def _memory() -> dict[str, int]:
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) // 1024
    return out


async def measure(n: int, rounds: int) -> dict[str, Any]:
    settings = poll.Settings()
    fetcher = sidecars.Fetcher(timeout=settings.timeout, concurrency=settings.concurrency)
    store = dataplane.Store()
    changes: list[dataplane.Key] = []
    poller = poll.Poller(
        _PodsClient(n),  # type: ignore[arg-type]  # a stand-in with the two reads the poller makes
        fetcher,
        store,
        period=settings.period,
        on_change=changes.append,
    )
    key = ("bench", "chat")
    poller.track(key, PORT)
    before = _memory()
    times, cpu = [], []
    for _ in range(rounds):
        started, cpu_started = time.perf_counter(), time.process_time()
        await poller.poll([key])
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    await fetcher.close()
    observation = store.observations[key]
    return {
        "pods": n,
        "reporting": observation.reporting,
        "unreporting": observation.unreporting,
        "round_median_s": round(statistics.median(times), 3),
        "round_max_s": round(max(times), 3),
        "cpu_per_round_s": round(statistics.median(cpu), 3),
        "period_s": settings.period,
        "concurrency": settings.concurrency,
        "memory_mb_before": before,
        "memory_mb_after": _memory(),
        "status_writes": len(changes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_dataplane", description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000, choices=range(1, 4097), metavar="N")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.pods * 2 + 256)), hard))
    if args.serve:
        asyncio.run(serve(args.pods))
        return 0
    server = subprocess.Popen(
        [sys.executable, "-m", "llmgw_dev.bench_dataplane", "--serve", "--pods", str(args.pods)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        assert server.stdout is not None
        json.loads(server.stdout.readline())  # listening on every address
        figures = asyncio.run(measure(args.pods, args.rounds))
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
    print(json.dumps(figures, indent=2))
    verdict = "within" if figures["round_max_s"] < figures["period_s"] else "NOT within"
    print(
        f"{figures['pods']} pods: one round takes {figures['round_median_s']} s "
        f"(max {figures['round_max_s']} s), "
        f"{verdict} the {figures['period_s']:g} s period; {figures['cpu_per_round_s']} CPU s per round "
        f"({figures['cpu_per_round_s'] / figures['period_s']:.1%} of a core at the default period); "
        f"poller RSS {figures['memory_mb_after']['VmRSS']} MB (peak {figures['memory_mb_after']['VmHWM']} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
