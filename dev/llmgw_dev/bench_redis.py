"""Benchmark the Redis path of global limits against the in-memory one: ``make bench-proxy``.

Two sidecars in front of one fake provider, with the same limits (too high to
refuse): ``in-memory`` enforces them in its own buckets (``scope: local``),
``redis`` in a real redis-server on loopback (``scope: global``: one Lua round
trip per admission, which also carries the settles of earlier answers). Measured in
interleaved rounds with ``bench_proxy``'s tools: the p50 added at 1 connection
(target: <= 0.3 ms) and the throughput at 32 connections, side by side.
``--budget`` adds a monthly token budget to the Redis sidecar (counted in the
same script and round trip).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from llmgw_dev import processes
from llmgw_dev.bench_proxy import (
    BODY,
    WRK_SCRIPT,
    Result,
    _row,
    ensure_wrk,
    http_ok,
    measure_rounds,
    wait_for_line,
)

CONFIG = """
version: 1
providers:
  upstream:
    baseUrl: {upstream}
    apiKeyFile: {key}
    sharedId: bench/upstream
    rateLimit: {{requestsPerMinute: 1000000000, tokensPerMinute: 1000000000000, scope: {scope}}}
{budget}
routes:
  - model: "*"
    targets: [{{provider: upstream}}]
sharedStore: {{url: "redis://127.0.0.1:{port}/0"}}
"""
BUDGET = "    budget: {tokensPerMonth: 1000000000000000}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_redis() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    print("redis-server is not installed; installing it with apt-get (Debian package 'redis-server')...")
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("redis-server") or sys.exit("redis-server still not found after apt-get install")


def _sidecar(py: str, cfg: pathlib.Path, log: pathlib.Path) -> list[str]:
    return [py, "-m", "llmgw_proxy.cli", "--config", str(cfg), "--port", "0", "--admin-port", "0",
            "--admin-host", "127.0.0.1"]  # fmt: skip


def _started(log: pathlib.Path, proc: subprocess.Popen[bytes]) -> str:
    admin = "http://" + wait_for_line(log, "admin", proc)
    while not http_ok(admin + "/readyz"):
        time.sleep(0.002)
    return "http://" + wait_for_line(log, "api", proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs for a smoke check")
    parser.add_argument("--seconds", type=float, help="measurement time per target and load")
    parser.add_argument("--budget", action="store_true", help="add a token budget to the Redis sidecar")
    args = parser.parse_args(argv)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    wrk, redis_server, py = ensure_wrk(), ensure_redis(), sys.executable
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-redis-") as tmp:
        work = pathlib.Path(tmp)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % BODY)
        key = work / "key"
        key.write_text("sk-bench-key\n")
        redis_cmd = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", tmp]  # fmt: skip
        fake_cmd = [py, "-m", "llmgw_dev.fake_provider", "--port", "0", "--no-record"]
        with (
            processes.running(redis_cmd, work / "redis.log", grace=10),
            processes.running(fake_cmd, work / "fake.log", grace=10) as fake,
        ):
            upstream = "http://" + wait_for_line(work / "fake.log", "address", fake) + "/v1"
            configs = {}
            for name, scope, budget in (
                ("in-memory", "local", ""),
                ("redis", "global", BUDGET if args.budget else ""),
            ):
                cfg = work / f"{name}.yaml"
                cfg.write_text(
                    CONFIG.format(upstream=upstream, key=key, scope=scope, budget=budget, port=port)
                )
                configs[name] = cfg
            with (
                processes.running(
                    _sidecar(py, configs["in-memory"], work / "mem.log"), work / "mem.log"
                ) as mem,
                processes.running(
                    _sidecar(py, configs["redis"], work / "redis-sc.log"), work / "redis-sc.log"
                ) as red,
            ):
                targets = [
                    ("in-memory", _started(work / "mem.log", mem), mem.pid),
                    ("redis", _started(work / "redis-sc.log", red), red.pid),
                ]
                results: list[Result] = []
                for connections in (1, 32):
                    for result in measure_rounds(wrk, script, targets, connections, seconds):
                        results.append(result)
                        print(_row(result), flush=True)
                fallbacks = [
                    line for line in (work / "redis-sc.log").read_text().splitlines() if "unreachable" in line
                ]
    by = {(r.target, r.connections): r for r in results}
    added = by["redis", 1].p50_ms - by["in-memory", 1].p50_ms
    ratio = by["redis", 32].rps / by["in-memory", 32].rps
    cpu = by["redis", 32].cpu_us - by["in-memory", 32].cpu_us
    print()
    print("global limits in Redis vs in memory                figure     target")
    ok = "PASS" if added <= 0.3 else "MISSED"
    print(f"p50 added at 1 conn                              {added:7.3f} ms  <= 0.3 ms  {ok}")
    print(f"req/s at 32 conns                                {ratio:7.2f}x   ({by['redis', 32].rps:.0f} vs "
          f"{by['in-memory', 32].rps:.0f})")  # fmt: skip
    print(f"sidecar CPU added per request at 32 conns        {cpu:7.1f} us")
    if fallbacks:
        print(f"WARNING: the Redis sidecar fell back during the run ({len(fallbacks)} log lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
