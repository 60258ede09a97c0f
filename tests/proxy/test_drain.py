"""``runtime.drain``: when a shutdown ends what is left, and telling its cancel from any other."""

from __future__ import annotations

import asyncio

import pytest

from llmgw_proxy.runtime import drain


@pytest.mark.parametrize(("grace", "at"), [(25.0, 24.0), (5.0, 4.0), (2.0, 1.6), (0.0, 0.0)])
def test_cut_comes_a_reserve_before_the_grace_ends(grace: float, at: float) -> None:
    assert drain.cut_at(grace) == pytest.approx(at)


async def test_a_cut_request_takes_its_cancel_back_and_goes_on() -> None:
    d = drain.Drain()
    entered = asyncio.Event()

    async def request() -> str:
        task = d.enter()
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not d.took_back():
                raise
            await asyncio.sleep(0)  # not cancelling any more: it can still write its error
            return "ended itself"
        finally:
            d.leave(task)
        return "unreachable"

    task = asyncio.create_task(request())
    await entered.wait()
    assert len(d) == 1
    d.cut()
    assert await task == "ended itself"
    assert len(d) == 0


async def test_another_cancel_is_not_taken_back() -> None:
    d = drain.Drain()
    entered = asyncio.Event()
    seen: list[bool] = []

    async def request() -> None:
        task = d.enter()
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(d.took_back())
            raise
        finally:
            d.leave(task)

    task = asyncio.create_task(request())
    await entered.wait()
    task.cancel()  # the caller went away, not a shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [False]
