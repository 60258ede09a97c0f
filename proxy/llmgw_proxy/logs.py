"""Structured JSON log lines on stderr.

A request line carries ids, route, provider, model, status and timings: never
a header value, a key, a prompt or a completion. Request lines are written
to a buffer that ``flush_periodically`` empties a few times a second: one
write syscall per request would cost more than the rest of the request path.
Warnings and errors are flushed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
import time
from typing import Any

FLUSH_INTERVAL = 0.2
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime per line is measurable at thousands of lines a second
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            line.update(fields)  # the request path's one pre-built dict: no scan of the record
        else:
            for k, v in record.__dict__.items():
                if k not in _STANDARD:
                    line[k] = v
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(line, default=str)


class BufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines to a buffered stream; ``flush`` is a no-op so ``emit`` does not force a syscall."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.flush_now()

    def flush(self) -> None:
        pass

    def flush_now(self) -> None:
        # stderr closed at exit: nothing left to save.
        with self.lock or _NO_LOCK, contextlib.suppress(OSError, ValueError):
            self.stream.flush()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
_handler: BufferedHandler | None = None


def setup(level: str) -> None:
    global _handler
    stream = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(os.dup(sys.stderr.fileno()), "w"), 64 * 1024), encoding="utf-8"
    )
    _handler = BufferedHandler(stream)
    _handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate ours and print paths and agents.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


def flush() -> None:
    if _handler is not None:
        _handler.flush_now()


async def flush_periodically(interval: float = FLUSH_INTERVAL) -> None:
    try:
        while True:
            await asyncio.sleep(interval)
            flush()
    finally:
        flush()
