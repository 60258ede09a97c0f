"""Benchmark the operator on its own local cluster: ``make bench-operator [BENCH_ARGS=--quick]``.

Three figures, each compared with its target:

- apply-to-Ready latency of one gateway, repeated with fresh names: from the
  start of ``kubectl apply`` until a ``kubectl get llmgw --watch`` stream shows
  the gateway's Ready condition True (p50 target: under 2 s);
- the time for many gateways (500; 1 replica each, all routing to the same two
  policies), applied in one ``kubectl apply`` of a List, to all read Ready on
  the same watch (target: within 120 s);
- the operator's resident memory after that (VmRSS, and the peak VmHWM) from
  /proc (target: under 250 MB).

API requests by verb and resource (from kube-apiserver's own metrics, during
the bulk phase) show where the operator's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import yaml

from llmgw_dev import binaries, cluster, processes

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
PROXY_IMAGE = "registry.example/llmgw-proxy:bench"
TARGET_P50 = 2.0
TARGET_BULK = 120.0
TARGET_MEMORY_MB = 250.0
# kwok nodes are fake and cheap, but each holds at most 110 pods.
PODS_PER_NODE = 110
WATCH_TEMPLATE = '{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
COUNTED = ("llmgateways", "providerpolicies", "configmaps", "secrets", "deployments", "events")


class ReadyWatch:
    """Follows ``kubectl get llmgw --watch`` and records when each gateway first reads Ready."""

    def __init__(self, c: cluster.Cluster) -> None:
        kubectl = binaries.ensure("kubectl")
        self._proc = subprocess.Popen(
            [str(kubectl), "--kubeconfig", str(c.kubeconfig), "-n", NAMESPACE, "get", "llmgateways",
             "--watch", "-o", f"jsonpath={WATCH_TEMPLATE}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.ready_at: dict[str, float] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            seen = time.monotonic()
            name, _, status = line.strip().partition(" ")
            if status == "True" and name not in self.ready_at:
                with self._changed:
                    self.ready_at[name] = seen
                    self._changed.notify_all()

    def wait(self, names: set[str], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: names <= self.ready_at.keys(), timeout=timeout)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()


def gateway(name: str, sample: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(sample)
    document["metadata"] = {"name": name, "namespace": NAMESPACE}
    document["spec"]["replicas"] = 1
    return document


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def request_counts(c: cluster.Cluster) -> dict[tuple[str, str, str], float]:
    """apiserver_request_total summed by (verb, resource, subresource) for the kinds the operator touches."""
    _, text = c.get("/metrics", timeout=30)
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("resource") in COUNTED:
            key = (labels.get("verb", ""), labels["resource"], labels.get("subresource", ""))
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


@contextlib.contextmanager
def operator(c: cluster.Cluster) -> Iterator[subprocess.Popen[bytes]]:
    log = c.data_dir / "logs" / "operator.log"
    env = os.environ | {"KUBECONFIG": str(c.kubeconfig), "LLMGW_PROXY_IMAGE": PROXY_IMAGE}
    argv = [sys.executable, "-m", "llmgw_operator.cli", "--standalone", "-n", NAMESPACE, "--metrics-port=0"]
    with processes.running(argv, log, env) as proc:
        deadline = time.monotonic() + 60
        while "llmgw-operator started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start; see {log}")
            time.sleep(0.05)  # polling a file another process writes
        yield proc


def run(args: argparse.Namespace) -> int:
    repeats, bulk = (5, 50) if args.quick else (args.repeats, args.gateways)
    nodes = max(args.nodes, math.ceil((bulk + repeats + 10) / PODS_PER_NODE))
    started = time.monotonic()
    c = cluster.up(name=f"bench-operator-{os.getpid()}", nodes=nodes)
    print(f"cluster up with {nodes} fake nodes in {time.monotonic() - started:.1f}s")
    try:
        c.kubectl("apply", "-f", str(ROOT / "crds"))
        c.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        c.kubectl("create", "namespace", NAMESPACE)
        samples = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "samples").glob("*.yaml")}
        shared = [samples[n] for n in ("secret", "providerpolicy-primary", "providerpolicy-fallback")]
        c.kubectl("apply", "-n", NAMESPACE, "-f", "-", input="\n---\n".join(json.dumps(d) for d in shared))
        with operator(c) as proc:
            watch = ReadyWatch(c)
            try:
                return measure(c, proc, watch, samples["llmgateway"], repeats, bulk)
            finally:
                watch.close()
    finally:
        cluster.down(c)


def measure(
    c: cluster.Cluster,
    proc: subprocess.Popen[bytes],
    watch: ReadyWatch,
    sample: dict[str, Any],
    repeats: int,
    bulk: int,
) -> int:
    latencies = []
    for i in range(repeats):
        name = f"latency-{i}"
        t0 = time.monotonic()
        c.kubectl("apply", "-f", "-", input=json.dumps(gateway(name, sample)))
        if not watch.wait({name}, timeout=60):
            print(f"FAIL {name} not Ready within 60s", file=sys.stderr)
            return 1
        latencies.append(watch.ready_at[name] - t0)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(
        f"(a) apply-to-Ready, {repeats} gateways one at a time (Ready seen on a kubectl watch): "
        f"p50 {p50:.2f}s  p95 {p95:.2f}s  max {max(latencies):.2f}s"
    )

    names = {f"bulk-{i:03d}" for i in range(bulk)}
    items = [gateway(n, sample) for n in sorted(names)]
    before = request_counts(c)
    t0 = time.monotonic()
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
              timeout=300)  # fmt: skip
    applied = time.monotonic() - t0
    converged = watch.wait(names, timeout=max(2 * TARGET_BULK, 300))
    total = max(watch.ready_at[n] for n in names) - t0 if converged else float("inf")
    after = request_counts(c)
    ready_times = sorted(watch.ready_at[n] - t0 for n in names if n in watch.ready_at)
    print(
        f"(b) {bulk} gateways in one apply (apply itself {applied:.1f}s): all Ready after {total:.1f}s; "
        f"half after {percentile(ready_times, 50):.1f}s"
        if ready_times
        else f"(b) {bulk} gateways: none Ready"
    )
    memory = memory_mb(proc.pid)
    rss, peak = memory["VmRSS"], memory["VmHWM"]
    print(f"(c) operator memory after convergence: VmRSS {rss:.0f} MB, peak VmHWM {peak:.0f} MB")

    print("API requests during (b), all clients (only the operator GETs or PATCHes the first two):")
    for (verb, resource, sub), count in sorted(after.items()):
        delta = count - before.get((verb, resource, sub), 0.0)
        if delta and verb in ("GET", "PATCH", "POST", "PUT", "DELETE", "APPLY"):
            label = f"{resource}/{sub}" if sub else resource
            print(f"  {verb:6s} {label:28s} {delta:7.0f}  ({delta / bulk:.1f} per gateway)")

    verdicts = [
        ("apply-to-Ready p50", p50 < TARGET_P50, f"{p50:.2f}s < {TARGET_P50:.0f}s"),
        (f"{bulk} converged", total <= TARGET_BULK, f"{total:.1f}s <= {TARGET_BULK:.0f}s"),
        ("operator memory", peak < TARGET_MEMORY_MB, f"peak {peak:.0f} MB < {TARGET_MEMORY_MB:.0f} MB"),
    ]
    for what, ok, detail in verdicts:
        print(f"{'PASS' if ok else 'MISS'} {what}: {detail}")
    return 0 if all(ok for _, ok, _ in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_operator", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="gateways for the latency figure (default 20)"
    )
    parser.add_argument("--gateways", type=int, default=500, help="gateways applied at once (default 500)")
    parser.add_argument("--nodes", type=int, default=6, help="fake nodes at least (default 6)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 repeats, 50 gateways")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
