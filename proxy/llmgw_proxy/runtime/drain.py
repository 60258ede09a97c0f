"""The requests in flight, so that a shutdown can end those its grace cannot wait for.

On SIGTERM the sidecar waits up to ``shutdownGrace`` for in-flight requests;
past it aiohttp cancels their handlers and closes their connections, which a
caller reads as a connection cut mid-body. So at ``cut_at(grace)`` seconds
``Drain.cut`` cancels every request still in flight itself, and each ends in
the time left as an error the caller can read: a stream with an in-band error
event, a request whose answer has not started with a 503 (``server_shutting_down``).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

RESERVE = 1.0
"""Seconds before the end of ``shutdownGrace`` at which requests still in flight are ended
(at most a fifth of the grace): the time they have to write their error."""


ANSWERING = web.RequestKey("llmgw_answering", bool)
"""Set on a request once its response is prepared: its status line may be out, so a shutdown's
503 can no longer be sent in its place."""


async def note_answering(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The API app's ``on_response_prepare`` hook, which sets ``ANSWERING``."""
    request[ANSWERING] = True


def cut_at(grace: float) -> float:
    return max(grace - min(RESERVE, grace / 5), 0.0)


class Drain:
    __slots__ = ("_tasks", "cutting")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.cutting = False  # set once by ``cut``; a request started after it is ended at once too

    def enter(self) -> asyncio.Task[object] | None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._tasks.discard(task)

    def __len__(self) -> int:
        return len(self._tasks)

    def cut(self) -> None:
        self.cutting = True
        for task in self._tasks:
            task.cancel()

    def took_back(self) -> bool:
        """After a CancelledError: True, with the cancellation taken back, when ``cut`` caused it
        (the request then ends itself with its error instead of being cut)."""
        task = asyncio.current_task()
        if not self.cutting or task is None or task not in self._tasks:
            return False
        task.uncancel()
        return True
