"""Watching a relayed event stream: until its first event, and for silences after it.

A stream's try may still fall back while the caller has seen nothing, so the
sidecar holds what comes before the first event with data (comments and
pings included) and sends it only once that event is complete.
``FirstEvent`` finds that event in whatever chunks arrive, for any API
family (it only needs SSE framing), and notes an error the provider put
there instead of content. ``first_event`` reads a stream up to it within
``timeouts.firstEvent``.

After the first event the stream is the caller's; ``IdleWatch`` ends the
wait for the next chunk once the provider has been silent for
``timeouts.streamIdle``. It costs one timer per stream, re-armed lazily (at
most once per idle period), instead of a timer per chunk: per chunk the relay
only notes the time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from llmgw_proxy import upstream
from llmgw_proxy.upstream import sse

_ERROR = b'"error"'


class FirstEvent:
    """Holds a stream's bytes until the first event with a ``data:`` line is complete.

    ``feed`` is linear in what arrives: only bytes after the last event end
    found are searched. More than ``max_bytes`` held breaks ``maxEventBytes``.
    """

    __slots__ = ("_event_start", "_max", "_scanned", "data", "held")

    def __init__(self, max_bytes: int) -> None:
        self.held = bytearray()
        self._max = max_bytes
        self._scanned = 0  # bytes before this hold no event end
        self._event_start = 0  # where the event being read starts
        self.data: bytes | None = None  # the first event's data, once found

    def feed(self, chunk: bytes) -> bool:
        """Add ``chunk``; True once the first data event is complete in ``held``."""
        held = self.held
        held += chunk
        while True:
            end, size = _event_end(held, self._scanned)
            if end < 0:
                break
            event = bytes(held[self._event_start : end]).removesuffix(b"\r").replace(b"\r\n", b"\n")
            self._event_start = self._scanned = end + size
            data = sse.data_of(event)
            if data is not None:
                self.data = data
                return True
        self._scanned = max(self._event_start, len(held) - 2)
        if len(held) > self._max:
            raise upstream.TooLarge("maxEventBytes", self._max)
        return False

    def error(self) -> dict[str, Any] | None:
        """The error object the first event carries instead of content, if it does."""
        data = self.data
        if data is None or _ERROR not in data:
            return None
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        error = obj.get("error")
        if isinstance(error, dict):
            return error
        # Anthropic's shape: {"type": "error", "error": {...}} is covered above; a bare string too.
        return {"message": error} if isinstance(error, str) else None


def _event_end(buffer: bytearray, start: int) -> tuple[int, int]:
    """(index, length) of the first blank line at or after ``start``, or (-1, 0)."""
    lf = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\n\r\n", start)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 3
    return lf, (2 if lf >= 0 else 0)


async def first_event(chunks: AsyncIterator[bytes], within: float, max_bytes: int) -> FirstEvent:
    """Read ``chunks`` until the first data event; ``TimedOut("first_event")`` past ``within`` seconds.

    A stream that ends first fails as ``ConnectFailed``: it never delivered content.
    """
    found = FirstEvent(max_bytes)
    try:
        async with asyncio.timeout(within):
            async for chunk in chunks:
                if found.feed(chunk):
                    return found
    except TimeoutError:
        raise upstream.TimedOut("first_event") from None
    raise upstream.ConnectFailed("the stream ended before its first event")


class IdleWatch:
    """Cancels the relaying task when the provider stays silent for ``idle`` seconds.

    The relay calls ``busy`` when a chunk arrived and ``waiting`` when it waits
    for the next one again; time spent writing to the caller (a slow reader)
    is never the provider's silence. After a cancel it caused, ``fired`` is
    True and the relay takes the cancellation back (``timed_out``).
    """

    __slots__ = ("_idle", "_loop", "_since", "_task", "_timer", "fired")

    def __init__(self, idle: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._idle = idle
        self._since: float | None = self._loop.time()
        self.fired = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._since + idle, self._check)

    def busy(self) -> None:
        self._since = None

    def waiting(self) -> None:
        self._since = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        since = self._since
        if since is None:
            at = now + self._idle  # writing to the caller: its pace, not the provider's silence
        elif now - since >= self._idle:
            self._timer = None
            if self._task is not None:
                self.fired = True
                self._task.cancel()
            return
        else:
            at = since + self._idle
        self._timer = self._loop.call_at(at, self._check)

    def timed_out(self) -> bool:
        """After a CancelledError: True (and the cancellation taken back) when this watch caused it."""
        if not self.fired or self._task is None:
            return False
        self._task.uncancel()
        return True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
