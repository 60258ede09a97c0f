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

import orjson

FLUSH_INTERVAL = 0.2
REQUEST_LOGGER = "llmgw.request"
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime per line is measurable at thousands of lines a second
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
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
_request_log = logging.getLogger(REQUEST_LOGGER)


def _request_via_logging(fields: dict[str, Any]) -> None:
    # makeRecord + handle skips Logger.info's caller lookup, a stack walk per request.
    record = _request_log.makeRecord(
        REQUEST_LOGGER, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}
    )
    _request_log.handle(record)


_emit_request: Any = _request_via_logging


def request(fields: dict[str, Any]) -> None:
    """The one info line per request. In the sidecar process it skips the logging module
    (a LogRecord and handler chain cost more than the rest of the line); embedded in
    tests it goes through logging, where pytest's caplog sees it."""
    if _request_log.isEnabledFor(logging.INFO):
        _emit_request(fields)


def setup(level: str) -> None:
    global _handler
    stream = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(os.dup(sys.stderr.fileno()), "w"), 64 * 1024), encoding="utf-8"
    )
    _handler = BufferedHandler(stream)
    _handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    _install_direct_request_lines(_handler, stream)
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate ours and print paths and agents.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _install_direct_request_lines(handler: BufferedHandler, stream: io.TextIOWrapper) -> None:
    global _emit_request
    formatter = JsonFormatter()
    dumps = json.JSONEncoder(default=str).encode
    lock = handler.lock or _NO_LOCK

    def direct(fields: dict[str, Any]) -> None:
        line = {"ts": formatter.timestamp(time.time()), "level": "info", "logger": REQUEST_LOGGER}
        line["msg"] = "request"
        line.update(fields)
        try:
            # A tenth of the json module's time; it refuses lone surrogates and huge integers.
            text = orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE).decode()
        except orjson.JSONEncodeError:
            text = dumps(line) + "\n"
        with lock:
            stream.write(text)

    _emit_request = direct


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
