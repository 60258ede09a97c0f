"""Coalescing, level-triggered work per key: at most one reconcile of a key runs at a time.

Many watch events (the gateway, its policies, their Secrets, its Deployment)
all mean "look at gateway X again". Triggers that arrive while X is being
reconciled collapse into one more pass. A failing pass is retried with
capped exponential backoff, and a new trigger cuts that wait short.

As client-go's workqueue: a FIFO of keys waiting for a worker, a dirty map
(keys that need a pass) and a processing set (keys in a pass), worked by at
most ``workers`` tasks. A waiting key costs its entries in those, and a key
waiting out a backoff or ``min_interval`` one timer handle: no task of its own.
"""

from __future__ import annotations

import asyncio
import collections
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
        # Workers start as keys are queued and end when none waits; with a task per waiting key
        # instead, 5,000 waiting keys held 14 MB (2.9 KB each).
        self._max_workers = workers
        self._workers: set[asyncio.Task[None]] = set()
        self._base = base_delay
        self._max = max_delay
        self._known: set[Hashable] = set()  # triggered and not forgotten since
        # Keys needing a pass (triggered since their last pass started), and when each was first
        # triggered since then: its wait in the queue, for ``queue_wait``.
        self._dirty: dict[Hashable, float] = {}
        self._fifo: collections.deque[Hashable] = collections.deque()  # waiting for a worker, oldest first
        self._queued: set[Hashable] = set()  # the keys in _fifo, each once (forgotten ones linger)
        self._processing: set[Hashable] = set()
        self._backoff: dict[Hashable, asyncio.TimerHandle] = {}  # after a failure; a trigger ends it
        self._spacing: dict[Hashable, asyncio.TimerHandle] = {}  # waiting out min_interval
        self._failures: dict[Hashable, int] = {}  # failed passes in a row
        self._idle = asyncio.Event()
        self._idle.set()
        self.name = name
        self.metrics = metrics
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
        return len(self._dirty)

    async def attempted(self, keys: Iterable[Hashable], since: dict[Hashable, int]) -> None:
        """Return once each of ``keys`` has had a pass tried since ``since`` (a copy of ``attempts``)."""
        waiting = set(keys)
        while True:
            waiting = {k for k in waiting if self.attempts.get(k, 0) <= since.get(k, 0) and k in self._known}
            if not waiting:
                return
            self._progress.clear()
            await self._progress.wait()

    def trigger(self, key: Hashable) -> None:
        self._known.add(key)
        if key in self._dirty:
            return  # joins the pass it already waits for
        self._dirty[key] = time.monotonic()
        self._idle.clear()
        if self.metrics is not None:
            self.metrics.queue_adds.labels(self.name).inc()
        if key in self._processing:
            return  # queued again when its pass ends
        backoff = self._backoff.pop(key, None)
        if backoff is not None:  # a fresh trigger ends a retry's wait early
            backoff.cancel()
            self._count_retry()
        self._enqueue(key)

    def forget(self, key: Hashable) -> None:
        """The object is gone: finish any pass in flight, then schedule no more."""
        self._known.discard(key)
        self._dirty.pop(key, None)  # a worker that takes it from the FIFO skips it
        for timers in (self._backoff, self._spacing):
            handle = timers.pop(key, None)
            if handle is not None:
                handle.cancel()  # nothing sleeps on until max_delay for a key that is gone
        self._failures.pop(key, None)
        self.attempts.pop(key, None)
        self._last_start.pop(key, None)
        self._progress.set()  # ``attempted`` no longer waits for it
        self._check_idle()

    async def idle(self) -> None:
        await self._idle.wait()

    def _enqueue(self, key: Hashable) -> None:
        """A dirty key, in no pass and no timer: to the FIFO, or to wait out its ``min_interval``."""
        if self._min_interval:
            last = self._last_start.get(key)
            if last is not None and (wait := last + self._min_interval - time.monotonic()) > 0:
                self._spacing[key] = asyncio.get_running_loop().call_later(wait, self._spaced, key)
                return
        if key not in self._queued:  # a forgotten key's place is still in the FIFO: it keeps it
            self._queued.add(key)
            self._fifo.append(key)
        starting = len(self._workers) - len(self._processing)  # started, yet to take a key
        if len(self._workers) < self._max_workers and len(self._fifo) > starting:
            self._start_worker()

    def _spaced(self, key: Hashable) -> None:
        del self._spacing[key]
        self._enqueue(key)  # checks again: a timer may fire a clock tick early

    def _retry(self, key: Hashable) -> None:
        del self._backoff[key]
        self._dirty[key] = time.monotonic()  # its wait in the queue starts when the backoff ends
        self._count_retry()
        self._enqueue(key)

    def _count_retry(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_retries.labels(self.name).inc()

    def _start_worker(self) -> None:
        task = asyncio.create_task(self._worker(), name=f"workqueue {self.name} worker")
        self._workers.add(task)

    async def _worker(self) -> None:
        """Take keys from the FIFO until none waits."""
        try:
            while self._fifo:
                key = self._fifo.popleft()
                self._queued.discard(key)
                # Triggers that arrived while it waited coalesce into this pass: the key stops
                # being dirty only now.
                queued_at = self._dirty.pop(key, None)
                if queued_at is None:
                    continue  # forgotten while it waited
                self._processing.add(key)
                try:
                    error = await self._pass(key, queued_at)
                finally:
                    self._processing.discard(key)
                self._after(key, error)
        except asyncio.CancelledError:
            raise
        except BaseException:
            if self._fifo:  # an error no pass catches: the keys behind it still get a worker
                self._start_worker()
            raise
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._workers.discard(task)
            self._check_idle()

    async def _pass(self, key: Hashable, queued_at: float) -> Exception | None:
        """One pass of ``key``; the error it raised, if any."""
        started = time.monotonic()
        if self._min_interval:
            self._last_start[key] = started
        waited = started - queued_at
        try:
            await self._work(key)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._note(key, waited, started, "error")
            return e
        self._note(key, waited, started, "success")
        return None

    def _after(self, key: Hashable, error: Exception | None) -> None:
        """A pass of ``key`` ended: queue it again if it is dirty, or retry it after a backoff."""
        if key in self._known:
            if error is None:
                self._failures.pop(key, None)
                if key in self._dirty:
                    self._enqueue(key)
            else:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self._max, self._base * 2 ** (failures - 1))
                logger.warning("reconcile of %s failed (%s); retrying in %.1fs", key, error, delay)
                if key in self._dirty:  # triggered during the failed pass: retry at once
                    self._count_retry()
                    self._enqueue(key)
                else:  # the wait holds no worker
                    self._backoff[key] = asyncio.get_running_loop().call_later(delay, self._retry, key)
        self._check_idle()

    def _check_idle(self) -> None:
        if not (self._dirty or self._processing or self._backoff or self._spacing):
            self._idle.set()

    def _note(self, key: Hashable, waited: float, started: float, result: str) -> None:
        """One pass tried: its metrics, and a wake-up for ``attempted``."""
        if key in self._known:
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
        """Cancel the passes in flight and every wait; the queue is then empty and idle."""
        try:
            for timers in (self._backoff, self._spacing):
                for handle in timers.values():
                    handle.cancel()
                timers.clear()
            workers = list(self._workers)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            self._workers.clear()  # one cancelled before it ever ran never got to its finally
            self._fifo.clear()
            self._queued.clear()
            self._dirty.clear()
            self._processing.clear()
            self._failures.clear()
            self._idle.set()
