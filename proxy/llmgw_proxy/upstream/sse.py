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

DONE = b"[DONE]"
_USAGE = b'"usage"'


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
        except ValueError:
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
        self._pending = b""
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data if len(data) <= self._MAX_PENDING else b""
            return
        complete, self._pending = data[:cut], data[cut + 2 :]
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
    """

    __slots__ = ("_pending", "_strip", "_texts", "kept", "usage")

    def __init__(self, strip: bool, text: bool, keep: bool) -> None:
        self._pending = b""
        self._strip = strip
        self._texts: list[str] | None = [] if text else None
        self.kept: list[bytes] | None = [] if keep else None
        self.usage: dict[str, Any] | None = None

    def filter(self, chunk: bytes) -> bytes:
        events, self._pending = split_events(self._pending + chunk)
        out = [self._event(e) for e in events]
        data = b"".join(out)
        if self.kept is not None and data:
            self.kept.append(data)
        return data

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        if not rest.strip():
            return b""
        data = self._event(rest)
        if self.kept is not None and data:
            self.kept.append(data)
        return data

    def text(self) -> str:
        return "".join(self._texts or ())

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
                            if isinstance(piece, str):
                                self._texts.append(piece)
        return event + b"\n\n"
