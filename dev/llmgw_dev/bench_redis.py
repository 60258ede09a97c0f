"""Benchmark the Redis path of global limits against the in-memory one: ``make bench-proxy``.

Two sidecars in front of one fake provider, with the same limits (too high to
refuse): ``in-memory`` enforces them in its own buckets (``scope: local``),
``redis`` in a real redis-server on loopback (``scope: global``: one Lua round
trip per admission, which also carries the settles of earlier answers). Measured in
interleaved rounds with ``bench_proxy``'s tools: the p50 added at 1 connection
(target: <= 0.3 ms) and the throughput at 32 connections, side by side.
``--budget`` adds a monthly token budget to the Redis sidecar (counted in the
same script and round trip). ``--baseline REV`` adds a third sidecar, the Redis
path of the proxy package at git revision REV, measured in the same rounds:
what a change to the Redis path gained, side by side on the same load.
Children inherit the scheduling policy: run it under ``chrt -f 10`` to keep
other load on the machine off the measured processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def export_proxy(rev: str, into: pathlib.Path) -> str | None:
    """The proxy package at git revision ``rev``, exported under ``into``; None when git cannot."""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", rev, "proxy"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return str(into / "proxy")


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
    parser.add_argument("--baseline", help="git revision whose Redis path runs beside this tree's")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per load (default: up to 3)")
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
            sidecars: list[tuple[str, str, dict[str, str] | None]] = [
                ("in-memory", "in-memory", None),
                ("redis", "redis", None),
            ]
            if args.baseline:
                tree = export_proxy(args.baseline, work)
                if tree is None:
                    sys.exit(f"cannot export {args.baseline!r} with git archive")
                sidecars.append((f"redis@{args.baseline}"[:12], "redis", {**os.environ, "PYTHONPATH": tree}))
            with contextlib.ExitStack() as stack:
                targets = []
                for name, cfg_name, env in sidecars:
                    log = work / f"{name}.log"
                    proc = stack.enter_context(
                        processes.running(_sidecar(py, configs[cfg_name], log), log, env)
                    )
                    targets.append((name, log, proc))
                started = [(name, _started(log, proc), proc.pid) for name, log, proc in targets]
                results: list[Result] = []
                for connections in (1, 32):
                    for result in measure_rounds(wrk, script, started, connections, seconds, args.rounds):
                        results.append(result)
                        print(_row(result), flush=True)
                fallbacks = [
                    line
                    for name, log, _ in targets[1:]
                    for line in log.read_text().splitlines()
                    if "unreachable" in line
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
    if args.baseline:
        base = sidecars[2][0]
        print(f"p50 added at 1 conn by {base:<25} {by[base, 1].p50_ms - by['in-memory', 1].p50_ms:7.3f} ms")
        print(f"sidecar CPU per request at 1 conn: redis {by['redis', 1].cpu_us:.0f} us, {base} "
              f"{by[base, 1].cpu_us:.0f} us, in-memory {by['in-memory', 1].cpu_us:.0f} us")  # fmt: skip
    if fallbacks:
        print(f"WARNING: the Redis sidecar fell back during the run ({len(fallbacks)} log lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
