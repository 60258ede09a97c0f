"""The stream filter drops the usage-only chunk and keeps text and bytes, however the stream is cut."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.upstream import sse


def event(obj: object) -> bytes:
    return sse.encode(json.dumps(obj).encode())


WORDS = ["Hello", " there", ", friend", "."]
CONTENT = b"".join(
    event({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}], "usage": None})
    for w in WORDS
)
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
STREAM = CONTENT + event({"choices": [], "usage": USAGE}) + sse.encode(sse.DONE)


def run(stream: bytes, cuts: list[int], *, strip: bool) -> tuple[bytes, sse.StreamFilter]:
    f = sse.StreamFilter(strip=strip, text=True, keep=True)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    out = b"".join(f.filter(stream[a:b]) for a, b in itertools.pairwise(points))
    return out + f.finish(), f


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_strips_the_usage_only_chunk_wherever_the_stream_is_cut(cuts: list[int]) -> None:
    out, f = run(STREAM, cuts, strip=True)
    assert out == CONTENT + sse.encode(sse.DONE)
    assert f.usage == USAGE
    assert f.text() == "".join(WORDS)
    assert f.kept is not None and b"".join(f.kept) == out


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_keeps_the_stream_whole_when_the_caller_asked_for_usage(cuts: list[int]) -> None:
    out, f = run(STREAM, cuts, strip=False)
    assert out == STREAM
    assert f.usage == USAGE


def test_reads_crlf_streams_and_a_last_event_without_its_blank_line() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n").removesuffix(b"\r\n\r\n")
    out, f = run(crlf, [7, 100], strip=True)
    assert out == CONTENT + sse.encode(sse.DONE)
    assert f.usage == USAGE
