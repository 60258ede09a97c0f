"""Benchmark the operator on its own local cluster: ``make bench-operator [BENCH_ARGS=--quick]``.

Figures, each compared with its target:

- apply-to-Ready latency of one gateway, repeated with fresh names: from the
  start of ``kubectl apply`` until a ``kubectl get llmgw --watch`` stream shows
  the gateway's Ready condition True (p50 target: under 2 s);
- the time for many gateways (``--gateways``, 5,000 by default; 1 replica
  each, all routing to the same two policies), created with ``kubectl create``
  in lists of 500, to all read Ready on the same watch (target: within 180 s);
- the operator's resident memory after that (VmRSS, and the peak VmHWM) from
  /proc (target: peak under 300 MB);
- the operator's API reads (GET and LIST, from its own
  ``llmgw_operator_api_reads_total``) and writes per reconcile pass during the
  bulk phase (target: at most one read per pass on average). The data-plane
  poller's LISTs of pods are per poll round, not per pass, and are shown apart.

API requests by verb and resource (from kube-apiserver's own metrics, all
clients, during the bulk phase) show where the time goes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
import urllib.request
from collections.abc import Iterator
from typing import Any

import yaml

from llmgw_dev import binaries, cluster, processes
from llmgw_operator.render import names as child_names

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "bench"
PROXY_IMAGE = "registry.example/llmgw-proxy:bench"
TARGET_P50 = 2.0
TARGET_BULK = 180.0
TARGET_MEMORY_MB = 300.0
TARGET_READS_PER_PASS = 1.0
PROGRESS_EVERY = 30.0  # seconds between the bulk phase's progress lines
CREATE_CHUNK = 500  # gateways per ``kubectl create``
# kwok nodes are fake and cheap, but each holds at most 110 pods.
PODS_PER_NODE = 110
WATCH_TEMPLATE = '{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
COUNTED = (
    "llmgateways",
    "providerpolicies",
    "configmaps",
    "secrets",
    "deployments",
    "horizontalpodautoscalers",
    "pods",
    "events",
)


class ReadyWatch:
    """Follows ``kubectl get llmgw --watch`` and records when each gateway first reads Ready
    (or, given ``resource`` and ``template``, when each object's template line first ends in True)."""

    def __init__(
        self, c: cluster.Cluster, resource: str = "llmgateways", template: str = WATCH_TEMPLATE
    ) -> None:
        kubectl = binaries.ensure("kubectl")
        self._proc = subprocess.Popen(
            [str(kubectl), "--kubeconfig", str(c.kubeconfig), "-n", NAMESPACE, "get", resource,
             "--watch", "-o", f"jsonpath={template}"],
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (/proc/PID/stat utime, stime)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def operator_counters(port: int) -> dict[tuple[str, ...], float]:
    """The operator's own counters: reconcile passes, API reads and writes, by their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    counts: dict[tuple[str, ...], float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        name = name.split(" ", 1)[0]  # a series without labels: "name value"
        if name in CACHE_GAUGES:
            counts[(name,)] = float(line.rsplit(" ", 1)[1])
            continue
        if name not in ("controller_runtime_reconcile_total", *OPERATOR_COUNTERS):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        key = (labels.get("controller", ""),) if "controller" in labels else (labels["verb"], labels["kind"])
        # Summed: passes come as one series per result (success, error).
        counts[(name, *key)] = counts.get((name, *key), 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


OPERATOR_COUNTERS = ("llmgw_operator_api_reads_total", "llmgw_operator_api_writes_total")
CACHE_GAUGES = ("llmgw_operator_cache_objects", "llmgw_operator_cache_bytes")


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


@contextlib.contextmanager
def operator(
    c: cluster.Cluster, metrics_port: int, python: str = sys.executable
) -> Iterator[subprocess.Popen[bytes]]:
    log = c.data_dir / "logs" / "operator.log"
    env = os.environ | {"KUBECONFIG": str(c.kubeconfig), "LLMGW_PROXY_IMAGE": PROXY_IMAGE}
    argv = [python, "-m", "llmgw_operator.cli", "--standalone", "-n", NAMESPACE,
            f"--metrics-port={metrics_port}"]  # fmt: skip
    with processes.running(argv, log, env) as proc:
        deadline = time.monotonic() + 60
        while "llmgw-operator started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start; see {log}")
            time.sleep(0.05)  # polling a file another process writes
        yield proc


def run(args: argparse.Namespace) -> int:
    repeats, bulk = (5, min(args.gateways, 50)) if args.quick else (args.repeats, args.gateways)
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
        port = cluster.free_port()
        with operator(c, port, args.python) as proc:
            watch = ReadyWatch(c)
            try:
                if args.floor:
                    latency(c, watch, samples["llmgateway"], 1)
                    templates = children_of(c, "latency-0")
                else:
                    return measure(
                        c,
                        proc,
                        port,
                        watch,
                        samples["llmgateway"],
                        repeats,
                        bulk,
                        args.timeout,
                        args.creators,
                    )
            finally:
                watch.close()
        return floor(c, samples["llmgateway"], templates, bulk, args.timeout, args.creators)
    finally:
        cluster.down(c)


DEPLOYMENT_AVAILABLE = '{.metadata.name}{" "}{.status.conditions[?(@.type=="Available")].status}{"\\n"}'
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "ownerReferences",
)


def children_of(c: cluster.Cluster, gateway_name: str) -> list[dict[str, Any]]:
    """The children the operator made for one gateway, as manifests to create again under other names."""
    found = []
    for kind, name in (
        ("configmap", child_names.config_map(gateway_name)),
        ("secret", child_names.secret(gateway_name)),
        ("deployment", child_names.deployment(gateway_name)),
    ):
        live = json.loads(c.kubectl("get", "-n", NAMESPACE, kind, name, "-o", "json").stdout)
        for field in SERVER_FIELDS:
            live["metadata"].pop(field, None)
        live.pop("status", None)
        found.append(live)
    return found


def create_lists(c: cluster.Cluster, items: list[dict[str, Any]], creators: int) -> float:
    """``kubectl create`` of ``items`` in lists of CREATE_CHUNK, ``creators`` at once; the seconds it took."""
    t0 = time.monotonic()
    chunks = [
        json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start : start + CREATE_CHUNK]})
        for start in range(0, len(items), CREATE_CHUNK)
    ]
    # create, not apply: apply GETs every object first, which would count as reads here. The lists
    # go at once, one kubectl each: one kubectl creates its objects one after another, so 5,000 in
    # one row took the rig 5 to 10 minutes before the operator had seen the last of them.
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(chunks), creators))) as pool:
        list(pool.map(lambda text: c.kubectl("create", "-f", "-", input=text, timeout=900), chunks))
    return time.monotonic() - t0


def floor(
    c: cluster.Cluster,
    sample: dict[str, Any],
    templates: list[dict[str, Any]],
    bulk: int,
    timeout: float | None,
    creators: int,
) -> int:
    """The control plane's part alone: no operator runs. The bulk phase's gateways are created as
    in ``measure``, and with each the children the operator made for one gateway (its ConfigMap,
    keys Secret and Deployment), renamed; the time until every Deployment is Available is what
    the same control plane needs on this machine however fast an operator were."""
    watch = ReadyWatch(c, "deployments", DEPLOYMENT_AVAILABLE)
    try:
        names = {f"bulk-{i:05d}" for i in range(bulk)}
        text = json.dumps(templates)
        items: list[dict[str, Any]] = []
        for n in sorted(names):
            items.append(gateway(n, sample))
            items += json.loads(text.replace("latency-0", n))
        before = request_counts(c)
        t0 = time.monotonic()
        applied = create_lists(c, items, creators)
        limit = timeout if timeout is not None else max(3 * TARGET_BULK, bulk / 2)
        converged = watch.wait(names, timeout=max(0.0, limit - (time.monotonic() - t0)))
        done = sorted(watch.ready_at[n] - t0 for n in names if n in watch.ready_at)
        total = done[-1] if converged else float("inf")
        print(
            f"(floor) {bulk} gateways and their children created without an operator "
            f"(kubectl itself {applied:.1f}s): all Deployments Available after {total:.1f}s"
            + (f"; half after {percentile(done, 50):.1f}s" if done else "")
            + f"; {len(done)} of {bulk} within the limit; load average at the end "
            + " ".join(f"{x:.1f}" for x in os.getloadavg())
        )
        print_requests(before, request_counts(c), bulk)
        return 0 if converged else 1
    finally:
        watch.close()


def latency(
    c: cluster.Cluster, watch: ReadyWatch, sample: dict[str, Any], repeats: int
) -> list[float] | None:
    """Apply-to-Ready of ``repeats`` gateways one at a time; None if one is not Ready within 60 s."""
    latencies = []
    for i in range(repeats):
        name = f"latency-{i}"
        t0 = time.monotonic()
        c.kubectl("apply", "-f", "-", input=json.dumps(gateway(name, sample)))
        if not watch.wait({name}, timeout=60):
            print(f"FAIL {name} not Ready within 60s", file=sys.stderr)
            return None
        latencies.append(watch.ready_at[name] - t0)
    return latencies


def print_requests(before: dict[Any, float], after: dict[Any, float], bulk: int) -> None:
    print("API requests during (b), all clients (only the operator GETs or PATCHes the first two):")
    for (verb, resource, sub), count in sorted(after.items()):
        d = count - before.get((verb, resource, sub), 0.0)
        if d and verb in ("GET", "LIST", "PATCH", "POST", "PUT", "DELETE", "APPLY"):
            label = f"{resource}/{sub}" if sub else resource
            print(f"  {verb:6s} {label:28s} {d:7.0f}  ({d / bulk:.1f} per gateway)")


def measure(
    c: cluster.Cluster,
    proc: subprocess.Popen[bytes],
    port: int,
    watch: ReadyWatch,
    sample: dict[str, Any],
    repeats: int,
    bulk: int,
    timeout: float | None = None,
    creators: int = 1,
) -> int:
    latencies = latency(c, watch, sample, repeats)
    if latencies is None:
        return 1
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(
        f"(a) apply-to-Ready, {repeats} gateways one at a time (Ready seen on a kubectl watch): "
        f"p50 {p50:.2f}s  p95 {p95:.2f}s  max {max(latencies):.2f}s"
    )

    names = {f"bulk-{i:05d}" for i in range(bulk)}
    items = [gateway(n, sample) for n in sorted(names)]
    before, ours_before = request_counts(c), operator_counters(port)
    cpu_before = cpu_seconds(proc.pid)
    t0 = time.monotonic()
    applied = create_lists(c, items, creators)
    limit = timeout if timeout is not None else max(3 * TARGET_BULK, bulk / 2)
    converged = False
    while not converged and time.monotonic() - t0 < limit:
        # A line every 30 s: how the Ready count grows shows where a slow run loses its time.
        converged = watch.wait(names, timeout=min(PROGRESS_EVERY, max(0.0, limit - (time.monotonic() - t0))))
        done = len(names & watch.ready_at.keys())
        print(f"    {time.monotonic() - t0:6.0f}s: {done} of {bulk} Ready; load {os.getloadavg()[0]:.1f}")
    total = max(watch.ready_at[n] for n in names) - t0 if converged else float("inf")
    now = operator_counters(port)
    cpu = cpu_seconds(proc.pid) - cpu_before
    after, ours = request_counts(c), delta(now, ours_before)
    ready_times = sorted(watch.ready_at[n] - t0 for n in names if n in watch.ready_at)
    print(
        f"(b) {bulk} gateways created (kubectl itself {applied:.1f}s): all Ready after {total:.1f}s; "
        f"half after {percentile(ready_times, 50):.1f}s"
        if ready_times
        else f"(b) {bulk} gateways: none Ready"
    )
    print(
        f"    operator CPU during (b) {cpu:.1f}s; load average at the end "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
    memory = memory_mb(proc.pid)
    rss, peak = memory["VmRSS"], memory["VmHWM"]
    print(f"(c) operator memory after convergence: VmRSS {rss:.0f} MB, peak VmHWM {peak:.0f} MB")
    if ("llmgw_operator_cache_objects",) in now:
        held, size = now[("llmgw_operator_cache_objects",)], now[("llmgw_operator_cache_bytes",)]
        print(f"    the watches' copy: {held:.0f} objects, {size / 2**20:.1f} MB as held (compressed JSON)")

    passes = {k[1]: v for k, v in ours.items() if k[0] == "controller_runtime_reconcile_total"}
    reads = {k[1:]: v for k, v in ours.items() if k[0] == "llmgw_operator_api_reads_total"}
    writes = {k[1:]: v for k, v in ours.items() if k[0] == "llmgw_operator_api_writes_total"}
    n_passes = sum(passes.values())
    poller = sum(v for (verb, kind), v in reads.items() if kind == "Pod")
    pass_reads = sum(reads.values()) - poller
    object_writes = sum(v for (verb, kind), v in writes.items() if kind != "Event")
    per = (lambda x: x / n_passes) if n_passes else (lambda x: float("inf"))
    print(
        f"(d) reconcile passes during (b): {n_passes:.0f} "
        f"({', '.join(f'{k} {v:.0f}' for k, v in sorted(passes.items()))}); "
        f"{n_passes / bulk:.1f} per gateway"
    )
    print(
        f"    operator reads {pass_reads:.0f} = {per(pass_reads):.2f} per pass; "
        f"writes {object_writes:.0f} = {per(object_writes):.2f} per pass "
        f"(+ {sum(writes.values()) - object_writes:.0f} Events); the poller's pod LISTs {poller:.0f}"
    )
    for label, counted in (("reads", reads), ("writes", writes)):
        print(
            f"    {label}: "
            + ", ".join(f"{verb} {kind} {v:.0f}" for (verb, kind), v in sorted(counted.items()))
        )

    print_requests(before, after, bulk)

    verdicts = [
        ("apply-to-Ready p50", p50 < TARGET_P50, f"{p50:.2f}s < {TARGET_P50:.0f}s"),
        (f"{bulk} converged", total <= TARGET_BULK, f"{total:.1f}s <= {TARGET_BULK:.0f}s"),
        ("operator memory", peak < TARGET_MEMORY_MB, f"peak {peak:.0f} MB < {TARGET_MEMORY_MB:.0f} MB"),
        (
            "reads per pass",
            per(pass_reads) <= TARGET_READS_PER_PASS,
            f"{per(pass_reads):.2f} <= {TARGET_READS_PER_PASS:.0f}",
        ),
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
    parser.add_argument("--gateways", type=int, default=5000, help="gateways created at once (default 5000)")
    parser.add_argument("--nodes", type=int, default=6, help="fake nodes at least (default 6)")
    parser.add_argument(
        "--creators",
        type=int,
        default=10,
        help=f"kubectl processes creating the lists of {CREATE_CHUNK} gateways at once "
        "(default 10; 1: one list after another)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds the bulk phase may take before it counts as not converged "
        "(default: the larger of 3 x 180 s and 0.5 s per gateway)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="no operator in the bulk phase: the gateways and one gateway's children, renamed, created "
        "directly; prints the time until every Deployment is Available (the control plane's part)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the operator (default: this one). The dev venv also holds "
        "pytest-kind's pykube-ng, which kopf imports when it can (6.4 MB); a venv with only "
        "`pip install '.[operator]'`, as Dockerfile.operator makes, runs what the image runs",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 repeats, at most 50 gateways")
    args = parser.parse_args(argv)
    processes.stop_on_term()  # a TERM takes its cluster down too, not only Ctrl-C
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
