"""Coalescing, level-triggered work per key: at most one reconcile of a key runs at a time.

Many watch events (the gateway, its policies, their Secrets, its Deployment)
all mean "look at gateway X again". Triggers that arrive while X is being
reconciled collapse into one more pass. A failing pass is retried with
capped exponential backoff, and a new trigger cuts that wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable

from llmgw_operator import metrics as metrics_

logger = logging.getLogger(__name__)

Work = Callable[[Hashable], Awaitable[None]]
WORKERS = 16
"""Passes of one queue in flight at once; the others wait their turn, each key still at most once."""


class WorkQueue:
    """``name`` and ``metrics`` (both optional) make it report as controller-runtime's queues do:
    ``name`` is the ``controller`` and ``name`` label of its series."""

    def __init__(
        self,
        work: Work,
        *,
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        name: str = "",
        metrics: metrics_.Metrics | None = None,
        workers: int = WORKERS,
        min_interval: float = 0.0,
    ) -> None:
        self._work = work
        # Seconds from the start of a key's pass to the start of its next one; the triggers that
        # arrive meanwhile make that one pass. For work whose result is a summary read by nobody
        # in a hurry (a policy's status lists its gateways), while thousands of triggers arrive.
        self._min_interval = min_interval
        self._last_start: dict[Hashable, float] = {}  # only with a min_interval; dropped by forget()
        # Passes in flight at once (controller-runtime's MaxConcurrentReconciles). Unbounded, 5,000
        # new gateways started 5,000 passes at once: each held its rendered children while their
        # API calls queued behind one another, so none finished and memory grew past 400 MB.
        self._slots = asyncio.Semaphore(workers)
        self._base = base_delay
        self._max = max_delay
        self._dirty: dict[Hashable, asyncio.Event] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.name = name
        self.metrics = metrics
        self._queued_at: dict[Hashable, float] = {}  # when a waiting key was first triggered
        self.attempts: dict[Hashable, int] = {}  # passes tried per key, for ``attempted``
        self._progress = asyncio.Event()
        if metrics is not None:
            # Every series of this queue exists from the start, 0 until it happens (alerts need that).
            for result in ("success", "error"):
                metrics.reconciles.labels(name, result)
            metrics.reconcile_errors.labels(name)
            metrics.queue_retries.labels(name)
            metrics.queue_adds.labels(name)
            metrics.gauge(
                "workqueue_depth",
                "Keys waiting for a reconcile pass.",
                ["name"],
                lambda: [((name,), float(self.depth()))],
            )

    def depth(self) -> int:
        return sum(1 for event in self._dirty.values() if event.is_set())

    async def attempted(self, keys: Iterable[Hashable], since: dict[Hashable, int]) -> None:
        """Return once each of ``keys`` has had a pass tried since ``since`` (a copy of ``attempts``)."""
        waiting = set(keys)
        while True:
            waiting = {k for k in waiting if self.attempts.get(k, 0) <= since.get(k, 0) and k in self._dirty}
            if not waiting:
                return
            self._progress.clear()
            await self._progress.wait()

    def trigger(self, key: Hashable) -> None:
        event = self._dirty.setdefault(key, asyncio.Event())
        if not event.is_set():
            self._queued_at.setdefault(key, time.monotonic())
            if self.metrics is not None:
                self.metrics.queue_adds.labels(self.name).inc()
        event.set()
        if key not in self._tasks:
            self._idle.clear()
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile {key}")

    def forget(self, key: Hashable) -> None:
        """The object is gone: finish any pass in flight, then schedule no more."""
        event = self._dirty.pop(key, None)
        self.attempts.pop(key, None)
        self._last_start.pop(key, None)
        self._queued_at.pop(key, None)
        self._progress.set()  # ``attempted`` no longer waits for it
        if event is not None:
            # Wakes a retry backoff, which then finds the key gone and ends
            # (clearing it would leave the task asleep for up to max_delay).
            event.set()

    async def idle(self) -> None:
        await self._idle.wait()

    async def _run(self, key: Hashable) -> None:
        failures = 0
        try:
            while True:
                event = self._dirty.get(key)
                if event is None or not event.is_set():
                    return
                if self._min_interval:
                    last = self._last_start.get(key)
                    if last is not None and (wait := last + self._min_interval - time.monotonic()) > 0:
                        await asyncio.sleep(wait)  # holds no worker slot; forget() is seen after it
                        continue
                    self._last_start[key] = time.monotonic()
                error = await self._pass(key)
                if error is None:
                    failures = 0
                    continue
                failures += 1
                delay = min(self._max, self._base * 2 ** (failures - 1))
                logger.warning("reconcile of %s failed (%s); retrying in %.1fs", key, error, delay)
                # A fresh trigger ends the wait early; otherwise retry after the delay. The wait
                # holds no worker slot.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=delay)
                if key in self._dirty:
                    self._dirty[key].set()
                    if self.metrics is not None:
                        self.metrics.queue_retries.labels(self.name).inc()
        finally:
            self._tasks.pop(key, None)
            if not self._tasks:
                self._idle.set()

    async def _pass(self, key: Hashable) -> Exception | None:
        """One pass once a worker slot is free; the error it raised, if any.

        Triggers that arrive while the key waits for a slot coalesce into that
        pass: the key's event is cleared only when the pass starts.
        """
        async with self._slots:
            event = self._dirty.get(key)
            if event is None:
                return None  # forgotten while it waited
            event.clear()
            started = time.monotonic()
            waited = started - self._queued_at.pop(key, started)
            try:
                await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._note(key, waited, started, "error")
                return e
            self._note(key, waited, started, "success")
            return None

    def _note(self, key: Hashable, waited: float, started: float, result: str) -> None:
        """One pass tried: its metrics, and a wake-up for ``attempted``."""
        if key in self._dirty:
            self.attempts[key] = self.attempts.get(key, 0) + 1
        self._progress.set()
        m = self.metrics
        if m is not None:
            m.queue_wait.labels(self.name).observe(waited)
            m.reconcile_time.labels(self.name).observe(time.monotonic() - started)
            m.reconciles.labels(self.name, result).inc()
            if result == "error":
                m.reconcile_errors.labels(self.name).inc()

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
