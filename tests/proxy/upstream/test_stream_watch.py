"""Finding a stream's first event in any split of its bytes, and ending silent streams."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy import config, upstream
from llmgw_proxy.upstream import stream_watch

PINGS = b": keep-alive\n\n: processing\r\n\r\nevent: ping\n\n"
FIRST = b'event: message\ndata: {"id":"c1","choices":[]}\n\n'
REST = b'data: {"id":"c1","choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@given(st.lists(st.integers(min_value=0), max_size=12), st.booleans())
def test_the_first_data_event_completes_exactly_where_its_blank_line_arrives(
    cuts: list[int], crlf: bool
) -> None:
    head = PINGS + (FIRST.replace(b"\n", b"\r\n") if crlf else FIRST)
    stream = head + REST
    watch = stream_watch.FirstEvent(config.UpstreamLimits().max_event_bytes)
    fed = 0
    for chunk in split(stream, cuts):
        fed += len(chunk)
        if watch.feed(chunk):
            break
    assert fed >= len(head)
    assert fed - len(chunk) < len(head)  # not one chunk later than the event's end
    assert bytes(watch.held) == stream[:fed]  # everything held, pings included, to be relayed
    assert watch.data == b'{"id":"c1","choices":[]}'
    assert watch.error() is None


def test_an_error_in_place_of_the_first_event_is_seen() -> None:
    watch = stream_watch.FirstEvent(1024)
    assert watch.feed(b'data: {"error": {"message": "overloaded", "code": "overloaded"}}\n\n')
    assert watch.error() == {"message": "overloaded", "code": "overloaded"}


def test_pings_without_an_event_are_bounded() -> None:
    watch = stream_watch.FirstEvent(1024)
    with pytest.raises(upstream.TooLarge):
        for _ in range(200):
            watch.feed(b": ping\n\n")


async def chunks_then_silence(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    await asyncio.Event().wait()


async def test_a_stream_silent_before_its_first_event_times_out_as_first_event() -> None:
    with pytest.raises(upstream.TimedOut) as caught:
        await stream_watch.first_event(chunks_then_silence(b": ping\n\n"), 0.05, 1024)
    assert caught.value.phase == "first_event"


async def test_a_stream_that_ends_before_its_first_event_failed() -> None:
    async def ended() -> AsyncIterator[bytes]:
        yield b": ping\n\n"

    with pytest.raises(upstream.ConnectFailed):
        await stream_watch.first_event(ended(), 5, 1024)


async def test_the_idle_watch_cancels_a_wait_for_the_provider_but_not_a_write_to_the_caller() -> None:
    watch = stream_watch.IdleWatch(0.05)
    try:
        watch.busy()  # writing to a slow caller for longer than the idle time
        await asyncio.sleep(0.15)
        watch.waiting()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.Event().wait()  # the provider stays silent
        assert watch.timed_out()
    finally:
        watch.close()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
