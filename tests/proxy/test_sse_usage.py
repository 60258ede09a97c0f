"""Reading token usage from a relayed SSE stream, however the bytes are cut."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.upstream import sse

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def stream_bytes(newline: bytes = b"\n") -> bytes:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": None},
        {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}], "usage": None},
        {"choices": [], "usage": USAGE},
    ]
    events = [b"data: " + json.dumps(c).encode() for c in chunks] + [b": keep-alive", b"data: [DONE]"]
    return b"".join(e + newline + newline for e in events)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@given(points=st.lists(st.integers(min_value=0), max_size=40), crlf=st.booleans())
def test_finds_the_usage_wherever_the_stream_is_cut(points: list[int], crlf: bool) -> None:
    reader = sse.UsageReader()
    for piece in cut(stream_bytes(b"\r\n" if crlf else b"\n"), points):
        reader.feed(piece)
    assert reader.usage == USAGE


def test_finds_no_usage_in_a_stream_without_it() -> None:
    reader = sse.UsageReader()
    reader.feed(b'data: {"choices": [{"delta": {"content": "x"}}]}\n\ndata: [DONE]\n\n')
    assert reader.usage is None


@pytest.mark.parametrize(
    ("chunk", "usage_only"),
    [
        pytest.param({"choices": [], "usage": USAGE}, True, id="final-usage-chunk"),
        pytest.param({"choices": [{"delta": {}}], "usage": None}, False, id="content-chunk"),
        pytest.param({"choices": [{"delta": {}}], "usage": USAGE}, False, id="content-with-usage"),
        pytest.param({"choices": []}, False, id="empty-chunk"),
    ],
)
def test_tells_a_usage_only_chunk_apart(chunk: dict[str, object], usage_only: bool) -> None:
    assert sse.is_usage_only(chunk) is usage_only


def test_splits_complete_events_and_keeps_the_rest() -> None:
    events, rest = sse.split_events(b"data: 1\n\ndata: 2\r\n\r\ndata: 3")
    assert events == [b"data: 1", b"data: 2"]
    assert rest == b"data: 3"
    assert [sse.data_of(e) for e in events] == [b"1", b"2"]
    assert sse.data_of(b": comment") is None


def test_encodes_an_error_event_the_openai_client_raises() -> None:
    event = sse.error_event("boom", "server_error", "upstream_timeout")
    assert json.loads(sse.data_of(event.strip()) or b"") == {
        "error": {"message": "boom", "type": "server_error", "code": "upstream_timeout"}
    }
