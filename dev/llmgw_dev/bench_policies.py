"""What the policies add to a request, counted rather than timed: ``make bench-proxy`` runs it last.

The socket benchmark's CPU figures swing by tens of microseconds between runs
on a shared two-core machine, more than the policies cost. This one runs the
sidecar's request path in one process, on uvloop like the sidecar
(``pipeline.STEPS`` on an aiohttp request, ``memory.Transport`` as the
provider, every body unique so every request is a cache miss), with the
benchmark's every-policy-on config and with the policy-free one:

- timed: eight interleaved rounds of each, the fastest round's CPU time per
  request; the difference is the CPU the policies add (target: <= 15 us);
- counted: the instructions a request takes under valgrind's callgrind, the
  same figure on every run of the same code however busy the machine, for
  telling whether a change made the policies cheaper. A request's count is
  the difference between a run of N requests and a run of none, so start-up
  drops out. Instructions are no stand-in for time across kinds of code (the
  policies touch more memory per instruction), so no verdict rests on them.

    python -m llmgw_dev.bench_policies [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import typing
from typing import Any

from llmgw_proxy.server import run

TARGET_US = 15.0
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
    }
).encode()
PROVIDER = {"baseUrl": "http://provider.invalid/v1"}
POLICIES = {
    **PROVIDER,
    "rateLimit": {"requestsPerMinute": 10**9, "tokensPerMinute": 10**12},
    "circuitBreaker": {"consecutiveFailures": 5},
    "retry": {"attempts": 2},
    "cache": {"enabled": True, "ttl": 300, "mode": "deterministic"},
}
CONFIGS: dict[str, dict[str, Any]] = {
    name: {
        "version": 1,
        "providers": {"upstream": provider},
        "routes": [{"model": "*", "targets": [{"provider": "upstream"}]}],
        "cache": {"maxEntries": 1000},
    }
    for name, provider in (("plain", PROVIDER), ("policies", POLICIES))
}


def body(i: int) -> bytes:
    """A typical chat request, unique by ``i`` and always the same length."""
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Say hello in one short sentence, please. {i:09d}"},
            ],
            "temperature": 0,
        }
    ).encode()


async def serve(mode: str, count: int, first: int) -> tuple[float, int]:
    """Run ``count`` requests through the request path: the CPU seconds they took, and the
    cache's entries after them (one per request when the policies are on: all misses)."""
    from aiohttp import streams, test_utils

    from llmgw_proxy import config, pipeline
    from llmgw_proxy.runtime import state
    from llmgw_proxy.steps import call as call_
    from llmgw_proxy.telemetry import metrics, tracing
    from llmgw_proxy.upstream import memory

    live = state.Live(asyncio.get_running_loop().time)
    cfg = config.parse(CONFIGS[mode])
    live.serve(cfg, {name: None for name in cfg.providers})

    async def provider(request: object) -> memory.Answer:
        return memory.Answer(200, {"Content-Type": "application/json"}, ANSWER)

    services = call_.Services(live, memory.Transport(provider), metrics.Metrics(live), tracing.Tracing(None))
    chain = pipeline.compose(pipeline.STEPS)
    content = _Content()
    length = str(len(body(0)))
    request = test_utils.make_mocked_request(
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "application/json", "Content-Length": length},
        payload=typing.cast(streams.StreamReader, content),
    )
    bodies = [body(first + i) for i in range(count)]
    now = asyncio.get_running_loop().time  # as pipeline.handler stamps a request: its deadline counts from it
    started = time.process_time()
    for data in bodies:
        content.data = data
        assert live.snapshot is not None
        call = call_.Call(request, "chat/completions", services, live.snapshot, "bench", now())
        answer = await chain(call)
        if answer.status != 200:
            sys.exit(f"bench_policies: the request path answered {answer.status}")
    return time.process_time() - started, live.cache.stats.entries


class _Content:
    """The request body stream, as much of it as ``parse_body`` reads."""

    data = b""

    @property
    def total_bytes(self) -> int:
        return len(self.data)

    def exception(self) -> None:
        return None

    def read_nowait(self, n: int) -> bytes:
        return self.data

    async def readexactly(self, n: int) -> bytes:
        return self.data


def _run(main: typing.Coroutine[None, None, None]) -> None:
    """On uvloop when it is there, as ``llmgw-proxy`` runs: the policies read its clock."""
    # The request log line is the same in both modes; writing it would only add noise.
    logging.getLogger().setLevel(logging.WARNING)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        asyncio.run(main)
        return
    uvloop.run(main)


def _child(mode: str, count: int) -> None:
    async def main() -> None:
        await serve(mode, 50, 10**8)  # imports, first-use caches, the store's first entries
        run.settle_gc()  # the collector as the sidecar tunes it once it listens
        if count:
            await serve(mode, count, 0)

    _run(main())


def _instructions(mode: str, count: int) -> int:
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "llmgw_dev.bench_policies", "--child", mode, "--requests", str(count),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"bench_policies: callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def _timed(count: int, rounds: int) -> dict[str, float]:
    """The fastest round's CPU microseconds per request, for each mode, rounds interleaved."""
    best = {mode: float("inf") for mode in CONFIGS}

    async def main() -> None:
        await serve("plain", 200, 10**8)
        await serve("policies", 200, 10**8)
        run.settle_gc()
        for r in range(rounds):
            for mode in CONFIGS:
                seconds, _ = await serve(mode, count, (r + 1) * 10**6)
                best[mode] = min(best[mode], seconds / count * 1e6)

    _run(main())
    return best


def _have_valgrind() -> bool:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed; installing it with apt-get (Debian package 'valgrind')...")
        subprocess.run(["apt-get", "install", "-y", "-q", "valgrind"], stdout=subprocess.DEVNULL, check=False)
    return shutil.which("valgrind") is not None


def _row(label: str, first: str, second: str) -> None:
    print(f"{label:<56}{first:>14}  {second}")


def _verdict(added: float) -> str:
    return f"<= {TARGET_US:.0f} us  {'PASS' if added <= TARGET_US else 'MISSED'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per counted run")
    parser.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.requests)
        return 0
    timed = _timed(2000, 8)
    added = timed["policies"] - timed["plain"]
    print()
    _row("request path in one process, every body a cache miss", "policy-free", "policies on")
    _row("CPU per request (fastest of 8 rounds)", f"{timed['plain']:.1f} us", f"{timed['policies']:.1f} us")
    _row("CPU added by the policies", f"{added:.1f} us", _verdict(added))
    if not _have_valgrind():
        print("(valgrind is missing: no instruction counts)")
        return 0
    counted = {mode: _instructions(mode, args.requests) - _instructions(mode, 0) for mode in CONFIGS}
    plain, policies = (counted[mode] / args.requests for mode in ("plain", "policies"))
    _row("instructions per request (callgrind)", f"{plain:.0f}", f"{policies:.0f}")
    _row("instructions added by the policies", f"{policies - plain:.0f}", "(steady: compare code with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
