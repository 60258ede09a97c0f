"""Token limits hold across concurrent Responses and Anthropic Messages streams.

Each stream reserves its input estimate plus its output budget before it is
sent, so however many run at once, what the admitted ones use stays within
the bucket plus at most one reservation. The providers stop at the budget
(as real ones do) and stream slowly, so every stream is admitted or refused
while the others are still running.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import TYPE_CHECKING

import anthropic
import openai

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import StartProxy

    from apis.conftest import Fakes, MakeAnthropic

TOKENS_PER_MINUTE = 500
BUDGET = 100  # output tokens each stream may use, and does (the reply is longer)
STREAMS = 12  # per family; a dozen reservations of ~110 tokens would be ~2.6 buckets
LONG_REPLY = " ".join(f"word{i}" for i in range(3 * BUDGET))


async def test_concurrent_responses_and_messages_streams_stay_within_one_reservation_of_the_limit(
    start_proxy: StartProxy, fakes: Fakes, key_file: pathlib.Path, make_anthropic: MakeAnthropic
) -> None:
    # A loaded test machine must not time a stream out: the limits are the subject here.
    limit = {"rateLimit": {"tokensPerMinute": TOKENS_PER_MINUTE}, "timeouts": {"firstByte": 30, "total": 60}}
    routes = [
        {"model": "gpt-x", "targets": [{"provider": "openai"}]},
        {"model": "claude-x", "targets": [{"provider": "claude"}]},
    ]
    proxy = await start_proxy(fakes.doc(key_file, routes, {"openai": limit, "claude": limit}))
    for name in ("openai", "claude"):
        fakes.fakes[name].reply = LONG_REPLY
        fakes.fakes[name].plan(fake_provider.Fault(chunk_delay=0.005, times=0))
    openai_client = proxy.async_client()
    claude = make_anthropic(proxy.url)

    async def responses_stream() -> int | None:
        try:
            stream = await openai_client.responses.create(
                model="gpt-x", input="say hello", max_output_tokens=BUDGET, stream=True
            )
            events = [event async for event in stream]
        except openai.RateLimitError:
            return None
        final = events[-1]
        assert final.type == "response.incomplete"
        assert final.response.usage is not None
        total: int = final.response.usage.total_tokens
        return total

    async def messages_stream() -> int | None:
        try:
            async with claude.messages.stream(
                model="claude-x", max_tokens=BUDGET, messages=[{"role": "user", "content": "say hello"}]
            ) as stream:
                message = await stream.get_final_message()
        except anthropic.RateLimitError:
            return None
        assert message.stop_reason == "max_tokens"
        used: int = message.usage.input_tokens + message.usage.output_tokens
        return used

    used = await asyncio.gather(
        *(responses_stream() for _ in range(STREAMS)), *(messages_stream() for _ in range(STREAMS))
    )
    for family, results in (("responses", used[:STREAMS]), ("messages", used[STREAMS:])):
        served = [u for u in results if u is not None]
        reservation = 3 + 4 + 3 + BUDGET  # priming, one message or input, "say hello", the budget
        assert served, f"{family}: no stream was admitted"
        assert len(served) < STREAMS, f"{family}: the limit refused nothing"
        assert sum(served) <= TOKENS_PER_MINUTE + reservation, family
