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
from collections.abc import Awaitable, Callable, Hashable

logger = logging.getLogger(__name__)

Work = Callable[[Hashable], Awaitable[None]]


class WorkQueue:
    def __init__(self, work: Work, *, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self._work = work
        self._base = base_delay
        self._max = max_delay
        self._dirty: dict[Hashable, asyncio.Event] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def trigger(self, key: Hashable) -> None:
        event = self._dirty.setdefault(key, asyncio.Event())
        event.set()
        if key not in self._tasks:
            self._idle.clear()
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile {key}")

    def forget(self, key: Hashable) -> None:
        """The object is gone: finish any pass in flight, then schedule no more."""
        event = self._dirty.pop(key, None)
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
                event.clear()
                try:
                    await self._work(key)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failures += 1
                    delay = min(self._max, self._base * 2 ** (failures - 1))
                    logger.warning("reconcile of %s failed (%s); retrying in %.1fs", key, e, delay)
                    # A fresh trigger ends the wait early; otherwise retry after the delay.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), timeout=delay)
                    if key in self._dirty:
                        self._dirty[key].set()
        finally:
            self._tasks.pop(key, None)
            if not self._tasks:
                self._idle.set()

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
