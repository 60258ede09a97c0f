"""SIGTERM to a real ``llmgw-proxy`` with streams open: each ends whole or with an in-band error.

``FAST`` streams can finish inside ``shutdownGrace``; ``SLOW`` ones cannot. After
SIGTERM the fast ones must complete and every slow one must end with the
OpenAI error event ``server_shutting_down`` (which the ``openai`` client raises
as ``APIError``), never a connection closed mid-body; a plain request whose
answer would come after the grace gets a 503 with that code. The process exits 0;
its exit is awaited with a bound, not timed.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sys
from typing import TYPE_CHECKING

import openai
import yaml

from llmgw_dev import fake_provider

if TYPE_CHECKING:
    from conftest import Eventually, MakeDoc

FAST, SLOW = 25, 25
WAITING = 5  # plain requests whose answer would come after the grace
GRACE = 10.0  # the fast streams take about 3 s (12 chunks, 0.25 s apart), the slow ones 24 s


async def _stream(client: openai.AsyncOpenAI, opened: list[int], all_open: asyncio.Event) -> str:
    """How one stream ended: "completed", "in-band" (the shutdown's error event) or what cut it."""
    parts: list[str] = []
    first = True
    try:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            if first:
                first = False
                opened.append(1)
                if len(opened) == FAST + SLOW:
                    all_open.set()
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
    except openai.APIConnectionError as exc:
        return f"cut: {type(exc).__name__} {exc}"
    except openai.APIError as exc:
        if getattr(exc, "code", None) == "server_shutting_down":
            return "in-band"
        return f"other error: {type(exc).__name__} {exc}"
    except Exception as exc:  # a cut connection shows as the HTTP client's own error
        return f"cut: {type(exc).__name__} {exc}"
    return "completed" if "".join(parts) == fake_provider.REPLY else f"short: {''.join(parts)!r}"


async def _plain(client: openai.AsyncOpenAI) -> str:
    try:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as exc:
        return f"{exc.status_code} {getattr(exc, 'code', None)}"
    except openai.APIConnectionError as exc:
        return f"cut: {type(exc).__name__} {exc}"
    return "completed"


async def test_sigterm_ends_every_open_stream_whole_or_with_an_in_band_error_and_exits_0(
    make_doc: MakeDoc,
    upstream: str,
    key_file: pathlib.Path,
    tmp_path: pathlib.Path,
    fake: fake_provider.FakeProvider,
    eventually: Eventually,
) -> None:
    doc = make_doc(upstream, key_file, shutdownGrace=GRACE)
    doc["providers"]["fake"]["timeouts"] = {"connect": 2, "firstByte": 10, "total": 120, "streamIdle": 30}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    fake.plan(
        fake_provider.Fault(chunk_delay=0.25, times=FAST),
        fake_provider.Fault(chunk_delay=2.0, times=SLOW),
        fake_provider.Fault(latency=60, times=WAITING),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmgw_proxy.cli", "--config", str(config),
        "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[bytes] = []
    try:
        api = None
        async for raw in proc.stderr:
            lines.append(raw)
            line = json.loads(raw) if raw.startswith(b"{") else {}
            if "api" in line:
                api = line["api"]
                break
        assert api is not None, lines
        rest = asyncio.create_task(proc.stderr.read())
        opened: list[int] = []
        all_open = asyncio.Event()
        async with openai.AsyncOpenAI(base_url=f"http://{api}/v1", api_key="c", max_retries=0) as client:
            streams = [asyncio.create_task(_stream(client, opened, all_open)) for _ in range(FAST + SLOW)]
            await asyncio.wait_for(all_open.wait(), timeout=60)
            plain = [asyncio.create_task(_plain(client)) for _ in range(WAITING)]
            await eventually(lambda: len(fake.requests) == FAST + SLOW + WAITING, within=30)
            proc.send_signal(signal.SIGTERM)
            ends = await asyncio.wait_for(asyncio.gather(*streams), timeout=GRACE + 60)
            answers = await asyncio.wait_for(asyncio.gather(*plain), timeout=GRACE + 60)
        code = await asyncio.wait_for(proc.wait(), timeout=GRACE + 60)
        log = (await rest).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert sorted(ends) == ["completed"] * FAST + ["in-band"] * SLOW, ends
    assert answers == ["503 server_shutting_down"] * WAITING
    assert code == 0
    assert "Traceback" not in log
    # Counted as the gateway's 503, not as callers that went away (499).
    statuses = sorted(
        json.loads(line)["status"]
        for line in log.splitlines()
        if '"request_id"' in line and '"status"' in line
    )
    assert statuses == [200] * FAST + [503] * (SLOW + WAITING)
    assert fake.finished_streams == FAST
