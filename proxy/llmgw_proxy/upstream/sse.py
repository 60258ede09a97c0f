"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` ... ``data: [DONE]\\n\\n``.

The proxy relays the provider's bytes untouched; ``UsageReader`` watches them
on the side to learn the token usage the final chunk carries (when the caller
asked for ``stream_options.include_usage``). Policies that must change the
stream (e.g. drop a usage-only chunk the caller did not ask for) use
``split_events`` / ``is_usage_only`` / ``encode``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from llmgw_proxy import upstream

DONE = b"[DONE]"
EVENT_ENDS = (b"\n\n", b"\r\n\r\n")  # how a chunk that ends with a whole event ends
_USAGE = b'"usage"'
_MAX_BOUNDARY = 3  # the longest form of an event's end, ``\n\r\n`` (what ``\r\n\r\n`` ends with)


def _has_boundary(buffer: bytearray | bytes, start: int) -> bool:
    """An event ends in ``buffer`` at or after ``start``: a line break, an optional CR, a line break."""
    return buffer.find(b"\n\n", start) >= 0 or buffer.find(b"\n\r\n", start) >= 0


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete events in ``buffer`` (raw, without the blank line) and the incomplete rest."""
    normalized = buffer.replace(b"\r\n", b"\n")
    *events, rest = normalized.split(b"\n\n")
    return [e for e in events if e], rest


def data_of(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one event, or None when it has none (a comment, a ping)."""
    parts = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


def iter_json(events: list[bytes]) -> Iterator[dict[str, Any]]:
    for event in events:
        data = data_of(event)
        if data is None or data == DONE:
            continue
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):  # a provider's nesting past the parser's depth is not JSON to us
            continue
        if isinstance(obj, dict):
            yield obj


def asks_for_usage(body: dict[str, Any]) -> bool:
    """The request asked for the final usage-only chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def is_usage_only(chunk: dict[str, Any]) -> bool:
    """The extra final chunk ``include_usage`` adds: no choices, only usage."""
    return not chunk.get("choices") and isinstance(chunk.get("usage"), dict)


def encode(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def error_event(message: str, type: str = "server_error", code: str = "upstream_error") -> bytes:
    body = {"error": {"message": message, "type": type, "code": code}}
    return encode(json.dumps(body).encode())


class UsageReader:
    """Follows a relayed stream and keeps the last ``usage`` object seen in it.

    Cheap on the hot path: only complete events that mention ``"usage"`` are
    decoded, which in OpenAI streams is the last one.
    """

    __slots__ = ("_pending", "usage")

    _MAX_PENDING = 1024 * 1024  # a stream with no event boundary in a MiB is not SSE; stop buffering it

    def __init__(self) -> None:
        self._pending = bytearray()
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        pending = self._pending
        if pending:
            # Only the new bytes (and the few before them an event's end may span) are searched,
            # so an event that takes many chunks costs linear, not quadratic, work.
            start = max(0, len(pending) - _MAX_BOUNDARY + 1)
            pending += chunk
            if not _has_boundary(pending, start):
                if len(pending) > self._MAX_PENDING:
                    pending.clear()
                return
            data = bytes(pending)
            pending.clear()
        else:
            data = chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            if len(data) <= self._MAX_PENDING:
                self._pending += data
            return
        complete, rest = data[:cut], data[cut + 2 :]
        if len(rest) <= self._MAX_PENDING:
            self._pending += rest
        if _USAGE not in complete:
            return
        for obj in iter_json(complete.split(b"\n\n")):
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.usage = usage


class StreamFilter:
    """Relays a stream event by event when the sidecar must look inside it.

    ``strip``: drop the usage-only chunk (the sidecar asked for it, the caller
    did not) after noting its usage. ``text``: keep the completion text, to
    estimate usage a provider did not report. ``keep``: keep the bytes sent,
    for the cache. Events go out whole; an incomplete one waits for the rest.

    Bounded by ``max_event_bytes``: an event longer than that fails the stream
    with ``upstream.TooLarge`` (an event that never ends cannot fill memory),
    and only new bytes are searched for an event's end, so the work stays
    linear. What is kept is bounded by ``max_kept_bytes``: a longer answer is
    not kept (the cache skips it) and its text stops growing (the estimate
    then counts the text up to there).
    """

    __slots__ = (
        "_kept_bytes",
        "_max_event",
        "_max_kept",
        "_pending",
        "_strip",
        "_text_chars",
        "_texts",
        "kept",
        "usage",
    )

    def __init__(
        self,
        strip: bool,
        text: bool,
        keep: bool,
        max_event_bytes: int = upstream.DEFAULT_LIMITS.max_event_bytes,
        max_kept_bytes: int = upstream.DEFAULT_LIMITS.max_response_bytes,
    ) -> None:
        self._pending = bytearray()
        self._strip = strip
        self._texts: list[str] | None = [] if text else None
        self._text_chars = 0
        self.kept: list[bytes] | None = [] if keep else None
        self._kept_bytes = 0
        self._max_event = max_event_bytes
        self._max_kept = max_kept_bytes
        self.usage: dict[str, Any] | None = None

    def filter(self, chunk: bytes) -> bytes:
        pending = self._pending
        if pending:
            start = max(0, len(pending) - _MAX_BOUNDARY + 1)
            pending += chunk
            if not _has_boundary(pending, start):
                self._check(len(pending))
                return b""
            data = bytes(pending)
            pending.clear()
        else:
            data = chunk  # the usual case: a chunk of whole events, split as it came
        events, rest = split_events(data)
        if rest:
            pending += rest
            self._check(len(rest))
        return self._keep(b"".join([self._event(e) for e in events]))

    def finish(self) -> bytes:
        rest = bytes(self._pending)
        self._pending.clear()
        if not rest.strip():
            return b""
        return self._keep(self._event(rest))

    def text(self) -> str:
        return "".join(self._texts or ())

    def _check(self, pending: int) -> None:
        if pending > self._max_event:
            raise upstream.TooLarge("maxEventBytes", self._max_event)

    def _keep(self, data: bytes) -> bytes:
        if self.kept is not None and data:
            self._kept_bytes += len(data)
            if self._kept_bytes > self._max_kept:
                self.kept = None  # too long to cache; the caller still gets all of it
            else:
                self.kept.append(data)
        return data

    def _event(self, event: bytes) -> bytes:
        if _USAGE in event or (self._texts is not None and b"choices" in event):
            for obj in iter_json([event]):
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
                    if self._strip and is_usage_only(obj):
                        return b""
                if self._texts is not None:
                    for choice in obj.get("choices") or ():
                        if isinstance(choice, dict):
                            delta = choice.get("delta")
                            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                            if isinstance(piece, str) and self._text_chars < self._max_kept:
                                self._text_chars += len(piece)
                                self._texts.append(piece)
        return event + b"\n\n"
