"""Typed event streams, read on the way through: the Responses API's and Anthropic's Messages'.

Both name each event (``event: response.output_text.delta``) and repeat the
name as the data's ``type``. What the sidecar needs sits in a few of them:

==========================  ==============================  =================================
Responses                   Anthropic Messages              The sidecar takes
==========================  ==============================  =================================
``response.created``        ``message_start``               the response id (pins, logs)
``response.completed``,     ``message_start`` (input),      ``usage``: settles the token
``.incomplete``, ``.failed``  ``message_delta`` (output)    reservation, metrics and logs
``response.output_text.     ``content_block_delta``         the text, to estimate usage when
delta``                     (``text_delta``)                the stream ends without any
==========================  ==============================  =================================

``EventReader`` is an ``sse.StreamFilter`` (the same bounds on one event and on
what is kept for the cache) whose per-event work is the table above; events go
out as they came, none is dropped or changed. An Anthropic stream's usage is
known only once ``message_delta`` came (``message_start``'s output count is a
placeholder): one that breaks before is settled on the estimate from its text,
like a chat stream without a usage chunk.
"""

from __future__ import annotations

import json
from typing import Any

from llmgw_proxy import upstream
from llmgw_proxy.apis import usage as usage_
from llmgw_proxy.upstream import sse

TYPED = frozenset({"responses", "messages"})
"""Endpoints whose streams are typed events, read by ``EventReader``."""
_USAGE = b'"usage"'
_DELTA = b"delta"
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class EventReader(sse.StreamFilter):
    """Reads a typed stream on the way through. Only events that mention ``"usage"`` are decoded
    as they pass; text deltas are kept as raw events (bounded like the text) and decoded only if
    the stream ended without usage, the one case the text is for."""

    __slots__ = ("_deltas", "_reported", "events", "response_id")

    def __init__(
        self,
        keep: bool,
        text: bool,
        max_event_bytes: int = upstream.DEFAULT_LIMITS.max_event_bytes,
        max_kept_bytes: int = upstream.DEFAULT_LIMITS.max_response_bytes,
    ) -> None:
        super().__init__(False, False, keep, max_event_bytes, max_kept_bytes)
        self.response_id = ""
        self.events = 0
        self._deltas: list[bytes] | None = [] if text else None
        self._reported: dict[str, Any] | None = None  # Anthropic's usage as sent, merged across events

    @property
    def last_sequence(self) -> int | None:
        """The Responses ``sequence_number`` of the last event relayed (they count from 0)."""
        return self.events - 1 if self.events else None

    def text(self) -> str:
        if self.usage is not None or not self._deltas:
            return ""  # the usage is known: no estimate needs the text
        return "".join(p for p in map(_piece, sse.iter_json(self._deltas)) if p)

    def _event(self, event: bytes) -> bytes:
        self.events += 1
        if _USAGE in event:
            for obj in sse.iter_json([event]):
                self._read(obj)
        elif self._deltas is not None and _DELTA in event and self._text_chars < self._max_kept:
            self._text_chars += len(event)
            self._deltas.append(event)
        return event + b"\n\n"

    def _read(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "response.created" or kind in _FINAL:
            response = obj.get("response")
            if isinstance(response, dict):
                if isinstance(response.get("id"), str) and not self.response_id:
                    self.response_id = response["id"]
                found = response.get("usage")
                if kind in _FINAL and isinstance(found, dict):
                    self.usage = usage_.normalized(found)
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("id"), str):
                    self.response_id = message["id"]
                if isinstance(message.get("usage"), dict):
                    # Its output count is a placeholder: the usage is known only with message_delta's.
                    self._reported = usage_.merged(self._reported, message["usage"])
        elif kind == "message_delta" and isinstance(obj.get("usage"), dict):
            self._reported = usage_.merged(self._reported, obj["usage"])
            self.usage = usage_.normalized(self._reported)


def _piece(obj: dict[str, Any]) -> str | None:
    """The text one delta event adds: Responses' output text, Anthropic's text or tool input."""
    kind = obj.get("type")
    piece: object = None
    if kind == "response.output_text.delta":
        piece = obj.get("delta")
    elif kind == "content_block_delta":
        delta = obj.get("delta")
        if isinstance(delta, dict):
            piece = delta.get("text") if delta.get("type") == "text_delta" else delta.get("partial_json")
    return piece if isinstance(piece, str) else None


def response_id(endpoint: str, data: bytes) -> str:
    """The id of a plain (JSON) answer to a typed endpoint, or ""."""
    if endpoint not in TYPED:
        return ""
    try:
        answer = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    found = answer.get("id") if isinstance(answer, dict) else None
    return found if isinstance(found, str) else ""
