"""The SSE readers stay bounded and linear whatever a provider streams, and split events as before."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy import upstream
from llmgw_proxy.upstream import sse

EVENTS = [
    b'data: {"choices": [{"delta": {"content": "a"}}]}',
    b": ping",
    b'data: {"usage": {"total_tokens": 3}}',
]


def whole(stream: bytes) -> bytes:
    f = sse.StreamFilter(strip=False, text=True, keep=True)
    return f.filter(stream) + f.finish()


@given(
    sep=st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\r\n\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
)
def test_any_split_of_a_stream_gives_the_events_and_usage_of_the_whole(sep: bytes, cuts: list[int]) -> None:
    stream = b"".join(e + sep for e in EVENTS) + b"data: [DONE]" + sep
    f = sse.StreamFilter(strip=False, text=True, keep=True)
    out, at = [], 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        out.append(f.filter(stream[at:cut]) if cut > at else b"")
        at = max(at, cut)
    out.append(f.finish())
    assert b"".join(out) == whole(stream)
    assert f.usage == {"total_tokens": 3} and f.text() == "a"

    reader = sse.UsageReader()
    at = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        if cut > at:
            reader.feed(stream[at:cut])
            at = cut
    assert reader.usage == {"total_tokens": 3}


def test_an_event_that_never_ends_fails_at_max_event_bytes() -> None:
    f = sse.StreamFilter(strip=False, text=False, keep=False, max_event_bytes=64 * 1024)
    with pytest.raises(upstream.TooLarge) as caught:
        for _ in range(1000):
            f.filter(b"data: " + b"x" * 1024)
    assert (caught.value.bound, caught.value.limit) == ("maxEventBytes", 64 * 1024)


def test_an_event_in_many_small_chunks_is_scanned_once_not_once_per_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Work is counted as the bytes handed to the splitting code: the old filter handed it the
    # whole buffer again with every chunk, n^2/2 bytes for an event of n chunks.
    handed: list[int] = []
    split = sse.split_events

    def counting(buffer: bytes) -> tuple[list[bytes], bytes]:
        handed.append(len(buffer))
        return split(buffer)

    monkeypatch.setattr(sse, "split_events", counting)
    chunks = [b"data: " + b"x" * 10] + [b"y" * 10] * 5000 + [b"\n\n"]
    size = sum(map(len, chunks))
    f = sse.StreamFilter(strip=False, text=False, keep=False)
    assert b"".join(f.filter(c) for c in chunks) == b"".join(chunks)
    assert sum(handed) <= 2 * size


def test_a_stream_too_long_to_keep_is_relayed_whole_but_not_kept() -> None:
    f = sse.StreamFilter(strip=False, text=True, keep=True, max_kept_bytes=1024)
    event = b'data: {"choices": [{"delta": {"content": "' + b"z" * 100 + b'"}}]}\n\n'
    out = b"".join(f.filter(event) for _ in range(50))
    assert out == event * 50
    assert f.kept is None
    assert 1024 <= len(f.text()) < 1024 + 200
