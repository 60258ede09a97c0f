"""``runtime.drain``: when a shutdown ends what is left, telling its cancel from others, late requests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import openai
import pytest

from llmgw_proxy.runtime import drain

if TYPE_CHECKING:
    from conftest import Proxy


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


async def test_a_request_arriving_after_the_cut_gets_the_503_at_once(proxy: Proxy) -> None:
    proxy.live.drain.cut()  # a keep-alive connection may still bring one in
    client = proxy.async_client()
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert (raised.value.status_code, raised.value.code) == (503, "server_shutting_down")
