"""A re-split limit (the operator changed this pod's share after a scale event) keeps each bucket's fill."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def admitted(client: openai.AsyncOpenAI, tries: int) -> int:
    count = 0
    for _ in range(tries):
        try:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        except openai.RateLimitError:
            continue
        count += 1
    return count


async def test_a_scale_down_resplit_does_not_hand_out_a_fresh_full_bucket(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["rateLimit"] = {"requestsPerMinute": 5}  # one pod's share of 10 on two
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    assert await admitted(client, 6) == 5  # the pod used its share

    doc["providers"]["fake"]["rateLimit"] = {"requestsPerMinute": 10}  # scaled to one pod
    proxy.config_path.write_text(yaml.safe_dump(doc))
    proxy.watcher.load()
    limiter = proxy.live.snapshot.providers["fake"].limiter  # type: ignore[union-attr]
    assert limiter is not None and limiter.remaining_share() == pytest.approx(0.0, abs=0.01)
    # Before the fix the new bucket started full and admitted 10 more within the same minute.
    assert await admitted(client, 3) == 0
