"""Sidecar start time and idle memory: ``python -m llmgw_dev.bench_start [--baseline REV]``.

Starts ``llmgw-proxy`` in quick mode (``--runs`` times per tree), times from the
process's spawn to its first 200 on ``/readyz``, then reads its ``VmRSS`` after
``--idle`` seconds. The tree at ``--baseline`` (a git revision, ``main`` by
default) runs the same way from an exported copy put first on ``PYTHONPATH``,
so both columns come from one run on one machine. Then each sidecar serves
``--requests`` calls (chat completions, every other one streamed) from the fake
provider, one at a time, and its RSS is read again: what start-up did not load
but the first requests do shows there. Prints medians and the ratios; no
verdict (the targets are 45 MB and 0.5 s, docs/reliability.md).
Each tree runs with the ``PYTHONOPTIMIZE`` its ``Dockerfile.proxy`` sets (the
image's and the rendered container's interpreter flags), none when it sets none.

Bytecode is cached under a temporary ``PYTHONPYCACHEPREFIX`` and one start per
tree warms it, uncounted: an installed sidecar runs from the ``.pyc`` files pip
wrote, while an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would
compile its sources at every start (about 0.1 s, not the sidecar's own cost).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from llmgw_dev import dockerfile_check

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ready(admin: str) -> bool:
    host, port = admin.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1) as s:
            s.sendall(f"GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextlib.contextmanager
def _provider() -> Iterator[str]:
    """The fake provider in a process of its own; yields its base URL."""
    args = [sys.executable, "-m", "llmgw_dev.fake_provider", "--port", "0", "--no-record"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline() or b"{}")
        if "address" not in line:
            raise RuntimeError("the fake provider did not start")
        yield f"http://{line['address']}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _serve(api: str, count: int) -> None:
    """``count`` chat completions through the sidecar on one connection, every other one streamed."""
    host, port = api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for i in range(count):
            body = {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}], "stream": i % 2 == 1}
            headers = {"Content-Type": "application/json", "Authorization": "Bearer c"}
            conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"request {i} through the sidecar: {response.status}")
    finally:
        conn.close()


def one(
    pythonpath: str | None,
    key: pathlib.Path,
    upstream: str,
    idle: float,
    requests: int,
    pycache: str,
    optimize: str,
) -> tuple[float, float, float, float]:
    """(seconds from spawn to ready, CPU seconds until then, idle RSS and RSS after ``requests``
    calls, in MB) of one sidecar."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONOPTIMIZE")}
    env["PYTHONPYCACHEPREFIX"] = pycache
    if optimize:
        env["PYTHONOPTIMIZE"] = optimize
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [sys.executable, "-m", "llmgw_proxy.cli", "--upstream", upstream]
    args += ["--api-key-file", str(key), "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1"]
    started = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        admin = api = None
        for raw in proc.stderr:
            line = json.loads(raw) if raw.startswith(b"{") else {}
            if "admin" in line:
                admin, api = str(line["admin"]), str(line["api"])
                break
        if admin is None or api is None:
            raise RuntimeError(f"the sidecar exited with {proc.wait()} before listening")
        # Whatever it logs next must not fill the pipe and stall it.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        while not _ready(admin):
            if time.monotonic() - started > 30:
                raise RuntimeError("not ready within 30 s")
            time.sleep(0.002)
        ready = time.monotonic() - started
        cpu = _cpu_seconds(proc.pid)
        time.sleep(idle)
        idle_rss = _rss_kb(proc.pid) / 1024
        _serve(api, requests)
        return ready, cpu, idle_rss, _rss_kb(proc.pid) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _export(rev: str, into: pathlib.Path) -> str | None:
    """The proxy package at ``rev``, exported under ``into``; None when git cannot."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "proxy"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return str(into / "proxy")


def _optimize(rev: str | None) -> str:
    """The PYTHONOPTIMIZE the image of ``rev`` (None: this tree) runs the sidecar with, or ''."""
    if rev is None:
        text = (ROOT / "Dockerfile.proxy").read_text()
    else:
        show = ["git", "-C", str(ROOT), "show", f"{rev}:Dockerfile.proxy"]
        text = subprocess.run(show, capture_output=True, text=True).stdout
    return dockerfile_check.final_env(text).get("PYTHONOPTIMIZE", "") if text else ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS")
    p.add_argument("--requests", type=int, default=200, help="calls served before the last RSS")
    p.add_argument("--baseline", default="main", help="git revision to compare with ('' for none)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, _provider() as upstream:
        key = pathlib.Path(tmp) / "key"
        key.write_text("sk-bench\n")
        trees: list[tuple[str, str | None, str]] = []
        if args.baseline:
            exported = _export(args.baseline, pathlib.Path(tmp))
            if exported is None:
                print(f"cannot export {args.baseline!r}: the baseline is left out")
            else:
                trees.append((f"baseline {args.baseline}", exported, _optimize(args.baseline)))
        trees.append(("this tree", None, _optimize(None)))
        pycaches = [str(pathlib.Path(tmp) / "pycache" / str(i)) for i in range(len(trees))]
        for (_, path, optimize), pycache in zip(trees, pycaches, strict=True):
            one(path, key, upstream, 0, 1, pycache, optimize)  # writes the bytecode the runs read
        # Interleaved, so load from elsewhere on the machine weighs on both trees alike.
        measured: list[list[tuple[float, float, float, float]]] = [[] for _ in trees]
        for _ in range(args.runs):
            for i, (_, path, optimize) in enumerate(trees):
                measured[i].append(one(path, key, upstream, args.idle, args.requests, pycaches[i], optimize))
        results: dict[str, tuple[float, ...]] = {}
        for (name, _, optimize), runs in zip(trees, measured, strict=True):
            name += f" (-{'O' * int(optimize)})" if optimize else ""
            results[name] = tuple(statistics.median(r[i] for r in runs) for i in range(4))
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"sidecar start to /readyz and idle RSS, median of {args.runs} (HEAD {head or '?'})")
    # CPU seconds to ready: what the start costs, less swayed than the wall clock by other load.
    served = f"RSS MB after {args.requests}"
    print(f"{'tree':<28} {'start s':>8} {'start CPU s':>12} {'idle RSS MB':>12} {served:>18}")
    for name, (ready, cpu, rss, after_rss) in results.items():
        print(f"{name:<28} {ready:>8.3f} {cpu:>12.2f} {rss:>12.1f} {after_rss:>18.1f}")
    if len(results) == 2:
        before, after = results.values()
        r = [a / b if b else float("nan") for a, b in zip(after, before, strict=True)]
        print(f"{'ratio this/baseline':<28} {r[0]:>8.2f} {r[1]:>12.2f} {r[2]:>12.2f} {r[3]:>18.2f}")


if __name__ == "__main__":
    main()
