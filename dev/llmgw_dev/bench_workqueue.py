"""The work queue's cost per waiting key: ``python -m llmgw_dev.bench_workqueue [--baseline REV]``.

Two figures per queue, from tracemalloc (live Python objects the queue allocated,
divided by the keys), each with the asyncio tasks alive at that moment:

- waiting for a worker: ``--keys`` keys triggered behind ``--workers`` passes
  that hold every worker until released (5,000 gateways created at once);
- in a retry backoff: ``--keys`` keys whose one pass failed, each waiting out
  an hour's backoff.

This tree's ``workqueue.py`` and the one at ``--baseline`` (a git revision,
``main`` by default; '' for none), loaded from ``git show`` into this process,
run one after the other in one run. No verdict (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import pathlib
import subprocess
import sys
import tempfile
import tracemalloc
import types
from collections.abc import Hashable

from llmgw_operator import workqueue

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = "operator/llmgw_operator/workqueue.py"


def _baseline(rev: str, into: pathlib.Path) -> types.ModuleType | None:
    """``workqueue.py`` as it is at ``rev``, as a module of its own; None when git cannot show it."""
    show = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{SOURCE}"], capture_output=True)
    if show.returncode != 0:
        return None
    path = into / "workqueue_baseline.py"
    path.write_bytes(show.stdout)
    spec = importlib.util.spec_from_file_location("workqueue_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _turns(n: int = 5) -> None:
    for _ in range(n):  # each new task takes a step or two to reach where it waits
        await asyncio.sleep(0)


async def waiting(module: types.ModuleType, keys: int, workers: int) -> tuple[float, int]:
    """Bytes per key waiting for a worker, and the tasks alive meanwhile."""
    names = [("default", f"gateway-{i}") for i in range(keys + workers)]
    release = asyncio.Event()
    inside = 0
    all_inside = asyncio.Event()

    async def work(key: Hashable) -> None:
        nonlocal inside
        inside += 1
        if inside == workers:
            all_inside.set()
        await release.wait()

    queue = module.WorkQueue(work, workers=workers)
    for key in names[:workers]:
        queue.trigger(key)
    await asyncio.wait_for(all_inside.wait(), 30)
    before = _traced()
    for key in names[workers:]:
        queue.trigger(key)
    await _turns()
    per_key = (_traced() - before) / keys
    tasks = len(asyncio.all_tasks()) - 1
    release.set()
    await asyncio.wait_for(queue.idle(), 60)
    await queue.stop()
    return per_key, tasks


async def backing_off(module: types.ModuleType, keys: int, workers: int) -> tuple[float, int]:
    """Bytes per key waiting out a retry backoff after its pass failed, and the tasks alive meanwhile."""
    names = [("default", f"gateway-{i}") for i in range(keys)]
    failed = 0
    all_failed = asyncio.Event()

    async def work(key: Hashable) -> None:
        nonlocal failed
        failed += 1
        if failed == keys:
            all_failed.set()
        raise RuntimeError("no")

    queue = module.WorkQueue(work, workers=workers, base_delay=3600, max_delay=3600)
    before = _traced()
    for key in names:
        queue.trigger(key)
    await asyncio.wait_for(all_failed.wait(), 60)
    await _turns()
    per_key = (_traced() - before) / keys
    tasks = len(asyncio.all_tasks()) - 1
    await queue.stop()
    return per_key, tasks


async def measure(module: types.ModuleType, keys: int, workers: int) -> tuple[float, int, float, int]:
    """``waiting`` and ``backing_off`` of ``module``'s ``WorkQueue``, tracemalloc on meanwhile."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        return (*await waiting(module, keys, workers), *await backing_off(module, keys, workers))
    finally:
        if not tracing:
            tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=5000)
    p.add_argument("--workers", type=int, default=workqueue.WORKERS)
    p.add_argument("--baseline", default="main", help="git revision to compare with ('' for none)")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # a warning per failed pass is not what is measured
    with tempfile.TemporaryDirectory() as tmp:
        queues: list[tuple[str, types.ModuleType]] = [("this tree", workqueue)]
        if args.baseline:
            module = _baseline(args.baseline, pathlib.Path(tmp))
            if module is None:
                print(f"cannot show {SOURCE} at {args.baseline!r}: the baseline is left out")
            else:
                queues.append((f"baseline {args.baseline}", module))
        print(f"{args.keys} keys, {args.workers} workers; bytes per key (tracemalloc), tasks alive")
        print(f"{'':<24} {'waiting B/key':>14} {'tasks':>7} {'backoff B/key':>14} {'tasks':>7}")
        for label, module in queues:
            asyncio.run(measure(module, 100, args.workers))  # first-use allocations: not the keys'
            w, wt, b, bt = asyncio.run(measure(module, args.keys, args.workers))
            print(f"{label:<24} {w:>14.0f} {wt:>7} {b:>14.0f} {bt:>7}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
