"""Benchmark the sidecar against its floor: ``make bench-proxy [BENCH_ARGS=--quick]``.

One run on loopback with one load generator (wrk, POST bodies from a Lua
script) measures four targets, each its own process:

- ``direct``: the fake provider itself (what an application would get without a sidecar)
- ``passthrough``: a bare aiohttp forwarder, the floor for this stack
- ``pass-http1``: the same forwarder calling upstream through the sidecar's
  own HTTP client (``llmgw_proxy.upstream.http1``); the sidecar against it is the cost
  of the sidecar's request path alone, with the client's gain taken out
- ``sidecar``: ``llmgw-proxy`` in quick mode

at 1 and 32 connections (targets interleaved in rounds, medians reported,
with each process's CPU time per request as a steadier second view), then
the sidecar's resident memory after 100,000 requests and its time from
start to ``/readyz`` ok, and compares them with the targets (>= 0.9x
passthrough at 32 connections; <= 0.35 ms added to the direct p50 at 1
connection; < 60 MB; ready < 1 s).

A fourth process, ``policies``, is the sidecar with every policy on (rate
limits too high to refuse, a circuit breaker, retries, the cache). At 32
connections it is measured on cache misses (every body unique, so each is
looked up, forwarded and stored), side by side in the same rounds with the
policy-free sidecar and the pass-through on the same unique bodies:

- the CPU the policies add to a request: the ``policies`` process's CPU time
  per request minus the policy-free sidecar's in the same round, the median
  over ``MISS_ROUNDS`` rounds (target: <= 15 us);
- its throughput against the bare pass-through's (target: >= 1.2x).

The first figure is a difference of two busy processes' CPU times and swings
by tens of microseconds on a shared machine; ``llmgw_dev.bench_policies``,
which ``make bench-proxy`` runs next, measures it on the request path in one
process, with an instruction count that does not swing at all.

Then on cache hits (one repeated temperature-0 body) against a fake provider
that answers in 20 ms, called directly (>= 1.5x). Real models take hundreds
of milliseconds; the 0 ms fake is also shown, but it is cheaper per request
than any HTTP server that reads the body, so it is a floor for the stack
rather than an upstream.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from llmgw_dev import processes

BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in one short sentence, please."},
        ],
        "max_tokens": 32,
        "temperature": 0,
    }
)

WRK_SCRIPT = """
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer caller-key"
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, errors, latency:percentile(50), latency:percentile(99)))
end
"""

# Every request a different body: the Lua side fills in a per-run random number and a counter.
UNIQUE_REQUESTS = """
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
local run = math.random(1, 1073741824)
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format(wrk.body, run, counter))
end
"""
SLOW_UPSTREAM_S = 0.02  # far below any real model's answer time, so the hit comparison is conservative
UNIQUE_BODY = BODY.replace("please.", "please. #%d-%d")

MISS_ROUNDS = 8

POLICIES_CONFIG = """
version: 1
providers:
  upstream:
    baseUrl: %s
    apiKeyFile: %s
    rateLimit: {requestsPerMinute: 1000000000, tokensPerMinute: 1000000000000}
    circuitBreaker: {consecutiveFailures: 5}
    retry: {attempts: 2}
    cache: {enabled: true, ttl: 300, mode: deterministic}
routes:
  - model: "*"
    targets: [{provider: upstream}]
cache: {maxEntries: 1000}
"""


@dataclasses.dataclass
class Result:
    """Medians over the rounds of one target at one load."""

    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float  # the target process's CPU time per request: steadier than req/s on a shared machine
    cpu_runs: list[float]  # the same, per round, in the order the rounds ran


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed; installing it with apt-get (Debian package 'wrk')...", flush=True)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"could not install wrk ({exc}); install it yourself: apt-get install -y wrk")
    return shutil.which("wrk") or sys.exit("wrk still not found after apt-get install")


def wait_for_line(path: pathlib.Path, key: str, proc: subprocess.Popen[bytes], timeout: float = 10) -> str:
    """The value of ``key`` in the first JSON log line that has it (the bound address)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and key in record:
                    return str(record[key])
        if proc.poll() is not None:
            sys.exit(f"{proc.args!r} exited early:\n{path.read_text()}")
        time.sleep(0.005)
    sys.exit(f"{proc.args!r} did not report {key!r} in {timeout}s:\n{path.read_text()}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
            return bool(resp.status == 200)
    except OSError:
        return False


def run_wrk(wrk: str, script: pathlib.Path, url: str, connections: int, seconds: float) -> dict[str, int]:
    # wrk takes whole seconds only.
    args = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"wrk failed: {done.stderr or done.stdout}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_rounds(
    wrk: str,
    script: pathlib.Path,
    targets: list[tuple[str, str, int]],
    connections: int,
    seconds: float,
    rounds: int | None = None,
) -> list[Result]:
    """Interleave the targets in short rounds, so background load on a shared machine hits each alike."""
    rounds = rounds or max(1, min(3, round(seconds / 2)))
    per_round = max(1.0, seconds / rounds)
    raw: dict[str, list[tuple[dict[str, int], float]]] = {name: [] for name, _, _ in targets}
    for _name, url, _pid in targets:
        run_wrk(wrk, script, url, connections, 1)  # warm up connections and caches
    for _ in range(rounds):
        for name, url, pid in targets:
            before = cpu_seconds(pid)
            out = run_wrk(wrk, script, url, connections, per_round)
            raw[name].append((out, (cpu_seconds(pid) - before) / max(1, out["requests"]) * 1e6))
    results = []
    for name, _, _ in targets:
        runs = raw[name]
        results.append(
            Result(
                name,
                connections,
                statistics.median(o["requests"] / (o["duration_us"] / 1e6) for o, _ in runs),
                statistics.median(o["p50_us"] for o, _ in runs) / 1000,
                statistics.median(o["p99_us"] for o, _ in runs) / 1000,
                sum(o["requests"] for o, _ in runs),
                sum(o["errors"] for o, _ in runs),
                statistics.median(c for _, c in runs),
                [c for _, c in runs],
            )
        )
    return results


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs for a smoke check")
    parser.add_argument("--seconds", type=float, help="measurement time per target and load")
    parser.add_argument("--memory-requests", type=int, help="requests sent to the sidecar before reading RSS")
    args = parser.parse_args(argv)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    memory_requests = args.memory_requests or (20_000 if args.quick else 100_000)
    wrk = ensure_wrk()
    py = sys.executable

    with tempfile.TemporaryDirectory(prefix="llmgw-bench-") as tmp:
        work = pathlib.Path(tmp)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % BODY)
        unique = work / "unique.lua"
        unique.write_text(WRK_SCRIPT % UNIQUE_BODY + UNIQUE_REQUESTS)
        key = work / "key"
        key.write_text("sk-bench-key\n")
        fake_cmd = [py, "-m", "llmgw_dev.fake_provider", "--port", "0", "--no-record"]
        with processes.running(fake_cmd, work / "fake.log", grace=10) as fake:
            direct = "http://" + wait_for_line(work / "fake.log", "address", fake)
            pass_cmd = [py, "-m", "llmgw_dev.bench_passthrough", "--upstream", direct]
            with (
                processes.running(pass_cmd, work / "pass.log", grace=10) as passthrough,
                processes.running([*pass_cmd, "--client", "http1"], work / "pass1.log", grace=10) as pass_h1,
            ):
                floor = "http://" + wait_for_line(work / "pass.log", "address", passthrough)
                floor_h1 = "http://" + wait_for_line(work / "pass1.log", "address", pass_h1)
                started = time.monotonic()
                sidecar_cmd = [
                    py, "-m", "llmgw_proxy.cli", "--upstream", direct + "/v1", "--api-key-file", str(key),
                    "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1",
                ]  # fmt: skip
                with processes.running(sidecar_cmd, work / "sidecar.log", grace=10) as sidecar:
                    admin = "http://" + wait_for_line(work / "sidecar.log", "admin", sidecar)
                    while not http_ok(admin + "/readyz"):
                        time.sleep(0.002)
                    ready_s = time.monotonic() - started
                    api = "http://" + wait_for_line(work / "sidecar.log", "api", sidecar)
                    targets = [
                        ("direct", direct, fake.pid),
                        ("passthrough", floor, passthrough.pid),
                        ("pass-http1", floor_h1, pass_h1.pid),
                        ("sidecar", api, sidecar.pid),
                    ]
                    results = []
                    for connections in (1, 32):
                        for result in measure_rounds(wrk, script, targets, connections, seconds):
                            results.append(result)
                            print(_row(result), flush=True)
                    sent = sum(r.requests for r in results if r.target == "sidecar")
                    extra_rps = max(r.rps for r in results if r.target == "sidecar")
                    while sent < memory_requests:  # top up to the memory sample size
                        more = run_wrk(wrk, script, api, 32, max(1.0, (memory_requests - sent) / extra_rps))
                        sent += more["requests"]
                    rss = rss_mb(sidecar.pid)
                    policy_results = _measure_policies(
                        wrk,
                        work,
                        py,
                        (direct, fake.pid),
                        (floor, passthrough.pid),
                        (api, sidecar.pid),
                        script,
                        unique,
                        seconds,
                    )
    _report(results, ready_s, rss, sent)
    _report_policies(policy_results)
    return 0


def _measure_policies(
    wrk: str,
    work: pathlib.Path,
    py: str,
    direct_at: tuple[str, int],
    floor_at: tuple[str, int],
    sidecar_at: tuple[str, int],
    script: pathlib.Path,
    unique: pathlib.Path,
    seconds: float,
) -> dict[str, Result]:
    """The policies sidecar on cache misses and hits; each target is a (url, pid) pair."""
    (direct, fake_pid), (floor, floor_pid), (api, sidecar_pid) = direct_at, floor_at, sidecar_at
    cfg = work / "policies.yaml"
    cfg.write_text(POLICIES_CONFIG % (direct + "/v1", work / "key"))
    cmd = [py, "-m", "llmgw_proxy.cli", "--config", str(cfg), "--port", "0", "--admin-port", "0"]
    cmd += ["--admin-host", "127.0.0.1"]
    with processes.running(cmd, work / "policies.log", grace=10) as policies:
        admin = "http://" + wait_for_line(work / "policies.log", "admin", policies)
        while not http_ok(admin + "/readyz"):
            time.sleep(0.002)
        papi = "http://" + wait_for_line(work / "policies.log", "api", policies)
        out: dict[str, Result] = {}
        misses = [
            ("pass-miss", floor, floor_pid),
            ("sidecar-miss", api, sidecar_pid),
            ("policies-miss", papi, policies.pid),
        ]
        # More, shorter rounds than elsewhere: the figure is a difference of two CPU times, and
        # pairing the two sidecars round by round cancels the drift of a shared machine.
        for result in measure_rounds(wrk, unique, misses, 32, 2 * seconds, rounds=MISS_ROUNDS):
            out[result.target] = result
            print(_row(result), flush=True)
        slow_cmd = [py, "-m", "llmgw_dev.fake_provider", "--port", "0", "--no-record"]
        with processes.running(slow_cmd, work / "slow.log", grace=10) as slow_fake:
            slow = "http://" + wait_for_line(work / "slow.log", "address", slow_fake)
            faults = json.dumps({"faults": [{"latency": SLOW_UPSTREAM_S, "times": 0}]}).encode()
            control = urllib.request.Request(slow + "/_control", data=faults, method="POST")  # noqa: S310
            control.add_header("Content-Type", "application/json")
            urllib.request.urlopen(control, timeout=5).close()  # noqa: S310 - loopback
            hits = [
                ("direct", direct, fake_pid),
                ("direct-20ms", slow, slow_fake.pid),
                ("cache-hit", papi, policies.pid),
            ]
            for result in measure_rounds(wrk, script, hits, 32, seconds):
                out[result.target] = result
                print(_row(result), flush=True)
        with urllib.request.urlopen(admin + "/metrics", timeout=5) as resp:  # noqa: S310 - loopback
            scrape = resp.read().decode()
    lookups = [line for line in scrape.splitlines() if line.startswith("llmgw_cache_lookups_total")]
    print("policies sidecar: " + "; ".join(lookups), flush=True)
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def _report_policies(r: dict[str, Result]) -> None:
    policies, plain, floor = r["policies-miss"], r["sidecar-miss"], r["pass-miss"]
    added_cpu = statistics.median(p - s for p, s in zip(policies.cpu_runs, plain.cpu_runs, strict=True))
    vs_floor = policies.rps / floor.rps
    hit = r["cache-hit"].rps / r["direct-20ms"].rps
    raw_hit = r["cache-hit"].rps / r["direct"].rps
    print()
    print("every policy on, 32 connections                     figure      target")
    print(
        f"CPU added per cache miss vs policy-free sidecar   {added_cpu:6.1f} us   <= 15 us   "
        f"{_verdict(added_cpu <= 15)}  (median of {len(plain.cpu_runs)} paired rounds; medians "
        f"{policies.cpu_us:.1f} against {plain.cpu_us:.1f} us CPU/req)"
    )
    print(
        f"req/s on cache misses vs bare pass-through        {vs_floor:6.2f}x     >= 1.20x   "
        f"{_verdict(vs_floor >= 1.2)}"
    )
    print(
        f"cache hits vs the upstream directly               {hit:6.2f}x     >= 1.50x   "
        f"{_verdict(hit >= 1.5)}  (answering in 20 ms)"
    )
    print(f"cache hits vs a 0 ms fake upstream                {raw_hit:6.2f}x     (a floor, not a model)")


def _row(r: Result) -> str:
    errors = f"  errors={r.errors}" if r.errors else ""
    return (
        f"{r.target:<12} c={r.connections:<3} {r.rps:>9.0f} req/s   p50 {r.p50_ms:7.3f} ms"
        f"   p99 {r.p99_ms:7.3f} ms   {r.cpu_us:6.0f} us CPU/req{errors}"
    )


def _report(results: list[Result], ready_s: float, rss: float, sent: int) -> None:
    by = {(r.target, r.connections): r for r in results}
    ratio32 = by["sidecar", 32].rps / by["passthrough", 32].rps
    ratio1 = by["sidecar", 1].rps / by["passthrough", 1].rps
    cpu_ratio = by["passthrough", 32].cpu_us / by["sidecar", 32].cpu_us
    own32 = by["sidecar", 32].rps / by["pass-http1", 32].rps
    own_cpu = by["sidecar", 32].cpu_us - by["pass-http1", 32].cpu_us
    added_p50 = by["sidecar", 1].p50_ms - by["direct", 1].p50_ms
    floor_p50 = by["passthrough", 1].p50_ms - by["direct", 1].p50_ms

    print()
    print("                          sidecar   passthrough   target")
    ratio_ok = _verdict(ratio32 >= 0.9)
    print(f"req/s ratio at 32 conns   {ratio32:7.2f}x  {1.0:7.2f}x       >= 0.90x  {ratio_ok}")
    print(f"req/s ratio at 1 conn     {ratio1:7.2f}x  {1.0:7.2f}x")
    print(f"CPU/req ratio at 32 conns {cpu_ratio:7.2f}x  {1.0:7.2f}x       (passthrough CPU / sidecar CPU)")
    print(f"vs pass-http1 at 32 conns {own32:7.2f}x  {own_cpu:7.0f} us CPU/req of the sidecar's own path")
    p50_ok = _verdict(added_p50 <= 0.35)
    print(f"p50 added at 1 conn       {added_p50:7.3f}   {floor_p50:7.3f} ms    <= 0.35 ms {p50_ok}")
    print(f"RSS after {sent} requests {rss:7.1f} MB                 < 60 MB   {_verdict(rss < 60)}")
    print(f"start to /readyz ok       {ready_s:7.3f} s                  < 1 s     {_verdict(ready_s < 1)}")


if __name__ == "__main__":
    sys.exit(main())
