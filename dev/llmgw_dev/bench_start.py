"""Sidecar start time and idle memory: ``python -m llmgw_dev.bench_start [--baseline REV]``.

Starts ``llmgw-proxy`` in quick mode (``--runs`` times per tree), times from the
process's spawn to its first 200 on ``/readyz``, then reads its ``VmRSS`` after
``--idle`` seconds. The tree at ``--baseline`` (a git revision, ``main`` by
default) runs the same way from an exported copy put first on ``PYTHONPATH``,
so both columns come from one run on one machine. Prints medians and the
ratios; no verdict (the targets are 45 MB and 0.5 s, docs/reliability.md).

Bytecode is cached under a temporary ``PYTHONPYCACHEPREFIX`` and one start per
tree warms it, uncounted: an installed sidecar runs from the ``.pyc`` files pip
wrote, while an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would
compile its sources at every start (about 0.1 s, not the sidecar's own cost).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

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


def one(pythonpath: str | None, key: pathlib.Path, idle: float, pycache: str) -> tuple[float, float]:
    """(seconds from spawn to ready, idle RSS in MB) of one sidecar."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [sys.executable, "-m", "llmgw_proxy.cli", "--upstream", "http://127.0.0.1:9/v1"]
    args += ["--api-key-file", str(key), "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1"]
    started = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        admin = None
        for raw in proc.stderr:
            line = json.loads(raw) if raw.startswith(b"{") else {}
            if "admin" in line:
                admin = str(line["admin"])
                break
        if admin is None:
            raise RuntimeError(f"the sidecar exited with {proc.wait()} before listening")
        while not _ready(admin):
            if time.monotonic() - started > 30:
                raise RuntimeError("not ready within 30 s")
            time.sleep(0.002)
        ready = time.monotonic() - started
        time.sleep(idle)
        return ready, _rss_kb(proc.pid) / 1024
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS")
    p.add_argument("--baseline", default="main", help="git revision to compare with ('' for none)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        key = pathlib.Path(tmp) / "key"
        key.write_text("sk-bench\n")
        trees: list[tuple[str, str | None]] = []
        if args.baseline:
            exported = _export(args.baseline, pathlib.Path(tmp))
            if exported is None:
                print(f"cannot export {args.baseline!r}: the baseline is left out")
            else:
                trees.append((f"baseline {args.baseline}", exported))
        trees.append(("this tree", None))
        results: dict[str, tuple[float, float]] = {}
        for name, path in trees:
            pycache = str(pathlib.Path(tmp) / "pycache" / str(len(results)))
            one(path, key, 0, pycache)  # writes the bytecode the counted runs read
            runs = [one(path, key, args.idle, pycache) for _ in range(args.runs)]
            results[name] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
            )
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"sidecar start to /readyz and idle RSS, median of {args.runs} (HEAD {head or '?'})")
    print(f"{'tree':<24} {'start s':>8} {'idle RSS MB':>12}")
    for name, (ready, rss) in results.items():
        print(f"{name:<24} {ready:>8.3f} {rss:>12.1f}")
    if len(results) == 2:
        (b_ready, b_rss), (a_ready, a_rss) = results.values()
        print(f"{'ratio this/baseline':<24} {a_ready / b_ready:>8.2f} {a_rss / b_rss:>12.2f}")


if __name__ == "__main__":
    main()
