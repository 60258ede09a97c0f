"""A fault soak of a real sidecar: ``python -m llmgw_dev.soak [--duration 600]``.

Two providers behind one route (a fallback), both served by one in-process
fake whose every answer draws a fault from a fixed mix: 5xx, connection
resets, stalls before the headers, in a stream before the first event and
after it, streams cut after their first chunk, in-band error events and
streams slower than the deadline. ``CALLERS`` ``openai`` clients send plain
and streamed chat requests through a real ``llmgw-proxy`` process without
pause for ``--duration`` seconds, with the config's config file hot-reloaded
every ``RELOAD_EVERY`` s (each config changes a setting no provider's state
hangs on, so the breakers and buckets carry over).

Each request must end as a complete answer, an OpenAI-shaped error answer or,
for a stream, an OpenAI-shaped in-band error event, within its deadline
(``timeouts.total`` from its arrival) plus a small bound. Anything else is
counted by what it was: ``cut`` (the connection closed without an error),
``short`` (a stream that ended early without one), ``shapeless`` (an error
body without an OpenAI ``error``), ``hang`` (no end within ``HANG_AFTER`` s
past the deadline).

Printed: requests by outcome, the largest overshoot past the deadline, the
sidecar's RSS (``VmRSS``) after the warm-up and at the end, and its growth.
``tests/proxy/test_soak.py`` runs the same core for 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import logging
import os
import pathlib
import random
import sys
import tempfile
import time
from typing import Any

import openai

from llmgw_dev import fake_provider, loadkit

DEADLINE = 3.0
"""``timeouts.total`` of both providers: the bound every request must end within."""
HANG_AFTER = 30.0
"""Seconds past the deadline after which the client gives up on a request: a hang."""
CALLERS = 32
RELOAD_EVERY = 1.0
WARM_UP_SHARE = 1 / 3
"""Part of the run before the first RSS reading (at most ``WARM_UP_MAX`` s)."""
WARM_UP_MAX = 60.0
RSS_SAMPLE_EVERY = 1.0

OK = "ok"
ERROR_ANSWER = "error answer"
IN_BAND = "in-band error"
FAILURES = ("cut", "short", "shapeless", "hang")

MIX: tuple[tuple[float, fake_provider.Fault], ...] = (
    (50, fake_provider.Fault()),
    (4, fake_provider.Fault(status=500)),
    (3, fake_provider.Fault(status=502)),
    (3, fake_provider.Fault(status=503, retry_after=1)),
    (6, fake_provider.Fault(reset=True)),
    (4, fake_provider.Fault(stall=10)),  # past firstByte: a timeout, retried
    (4, fake_provider.Fault(stall_first_event=10)),  # past firstEvent
    (5, fake_provider.Fault(stall_mid_stream=10)),  # past streamIdle, after the caller saw a chunk
    (6, fake_provider.Fault(cut_mid_stream=True)),
    (4, fake_provider.Fault(reset_first_event=True)),
    (4, fake_provider.Fault(error_event=True)),
    (3, fake_provider.Fault(chunk_delay=0.4)),  # about 5 s of chunks: cut at the deadline
    (4, fake_provider.Fault(latency=0.5, chunk_delay=0.05)),  # slow but inside it
)


class MixedFaults(fake_provider.FakeProvider):
    """A fake whose every request draws its fault from ``MIX`` (seeded: a run can be repeated)."""

    def __init__(self, seed: int) -> None:
        super().__init__(record=False)
        self._random = random.Random(seed)
        self._weights = [w for w, _ in MIX]

    def next_fault(self) -> fake_provider.Fault | None:
        (fault,) = self._random.choices([f for _, f in MIX], self._weights)
        return dataclasses.replace(fault)


def config_doc(url: str, round_: int) -> dict[str, Any]:
    def provider() -> dict[str, Any]:
        return {
            "baseUrl": url,
            "timeouts": {"connect": 1, "firstByte": 1, "firstEvent": 1, "streamIdle": 1, "total": DEADLINE},
            "retry": {"attempts": 2, "baseBackoff": 0.05, "maxBackoff": 0.2},
            # Trips on a run of failures the mix makes rarely (0.45^10): open breakers'
            # fast 503s would otherwise crowd out the faults the soak is about.
            "circuitBreaker": {"consecutiveFailures": 10, "openDuration": 1, "maxOpenDuration": 2},
        }

    return {
        "version": 1,
        "providers": {"a": provider(), "b": provider()},
        "routes": [{"model": "*", "targets": [{"provider": "a"}, {"provider": "b"}]}],
        "maxPinnedResponses": 1000 + round_ % 2,  # a change, so each write is a real reload
    }


# Issue 19's bound on the sidecar's memory growth over a soak; a figure this module prints,
# not an assertion of the test that runs it (memory targets are benchmark output).
TARGET_RSS_GROWTH = 0.05


@dataclasses.dataclass
class Figures:
    outcomes: collections.Counter[str]
    examples: dict[str, str]  # one message per outcome that is a failure
    max_overshoot: dict[str, float]  # by outcome: seconds past the deadline, at least 0
    rss_start_kb: int
    rss_end_kb: int
    rss_peak_kb: int
    reloads: int
    seconds: float
    sidecar_overshoot: float  # the largest duration_ms the sidecar logged, past the deadline, in s
    rss_trend: list[int]  # VmRSS in KiB, one reading per tenth of the run
    fds: tuple[int, int]  # the sidecar's open files (sockets mostly): least and most seen

    @property
    def failed(self) -> int:
        return sum(self.outcomes[f] for f in FAILURES)

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_kb - self.rss_start_kb) / self.rss_start_kb

    def lines(self) -> list[str]:
        total = sum(self.outcomes.values())
        out = [f"soak: {total} requests in {self.seconds:.0f} s, {self.reloads} reloads"]
        for name in (OK, ERROR_ANSWER, IN_BAND, *FAILURES):
            out.append(f"  {name:<14} {self.outcomes[name]:>7}")
        worst = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(self.max_overshoot.items()))
        out.append(f"  max overshoot past the deadline ({DEADLINE:g} s): {worst}")
        out.append(
            f"  sidecar RSS: {self.rss_start_kb / 1024:.1f} MB after warm-up, "
            f"{self.rss_end_kb / 1024:.1f} MB at the end ({self.rss_growth * 100:+.2f} %, target under "
            f"{TARGET_RSS_GROWTH * 100:g} %: {'met' if self.rss_growth < TARGET_RSS_GROWTH else 'MISSED'}), "
            f"peak {self.rss_peak_kb / 1024:.1f} MB"
        )
        out.append(
            f"  the same as the sidecar logged it (arrival to end): {self.sidecar_overshoot * 1000:.0f} ms"
        )
        out.append(
            "  RSS every tenth of the run (MB): " + " ".join(f"{k / 1024:.1f}" for k in self.rss_trend)
        )
        out.append(f"  sidecar open files: {self.fds[0]} to {self.fds[1]}")
        out += [f"  e.g. {name}: {text}" for name, text in self.examples.items()]
        return out


def _openai_shaped(body: object) -> bool:
    """The ``openai`` client hands over the ``error`` object of an OpenAI error body."""
    return isinstance(body, dict) and isinstance(body.get("message"), str) and "type" in body


async def one(client: openai.AsyncOpenAI, stream: bool) -> str:
    """How one request ended (``OK``, ``ERROR_ANSWER``, ``IN_BAND`` or a failure's name)."""
    messages: Any = [{"role": "user", "content": "hi"}]
    try:
        if stream:
            parts = []
            events = await client.chat.completions.create(model="m", messages=messages, stream=True)
            async for chunk in events:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
            text = "".join(parts)
        else:
            answer = await client.chat.completions.create(model="m", messages=messages)
            text = answer.choices[0].message.content or ""
    except openai.APITimeoutError:
        return "hang"
    except openai.APIConnectionError:
        return "cut"
    except openai.APIStatusError as exc:
        return ERROR_ANSWER if _openai_shaped(exc.body) else "shapeless"
    except openai.APIError as exc:  # an error event inside a stream
        return IN_BAND if _openai_shaped(exc.body) else "shapeless"
    return OK if text == fake_provider.REPLY else "short"


async def soak(duration: float, workdir: pathlib.Path, seed: int = 19) -> Figures:
    """Run the soak for ``duration`` seconds in ``workdir``; the figures of the run."""
    # The fake's server logs every connection the sidecar drops (a deadline, a cut) with a
    # traceback: that is the fault mix working, and would bury the figures.
    server_log = logging.getLogger("aiohttp.server")
    level = server_log.level
    server_log.setLevel(logging.CRITICAL)
    try:
        return await _soak(duration, workdir, seed)
    finally:
        server_log.setLevel(level)


async def _soak(duration: float, workdir: pathlib.Path, seed: int) -> Figures:
    fake = MixedFaults(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    overshoot: dict[str, float] = collections.defaultdict(float)
    reloads = 0
    path = workdir / "config.json"
    loop = asyncio.get_running_loop()
    async with loadkit.fake_server(fake) as url:
        loadkit.write_config(path, config_doc(url, 0))
        async with (
            loadkit.sidecar(path, workdir / "sidecar.log", reload_interval=0.1) as sidecar,
            openai.AsyncOpenAI(
                base_url=sidecar.url + "/v1", api_key="c", max_retries=0, timeout=DEADLINE + HANG_AFTER
            ) as client,
        ):
            started = loop.time()
            end = started + duration
            warm_until = started + min(duration * WARM_UP_SHARE, WARM_UP_MAX)

            async def caller(i: int) -> None:
                n = i
                while loop.time() < end:
                    n += 1
                    sent = loop.time()
                    outcome = await one(client, stream=n % 2 == 0)
                    outcomes[outcome] += 1
                    overshoot[outcome] = max(overshoot[outcome], loop.time() - sent - DEADLINE)
                    if outcome in FAILURES:
                        examples.setdefault(outcome, f"{'stream' if n % 2 == 0 else 'plain'} request")

            callers = [asyncio.create_task(caller(i)) for i in range(CALLERS)]
            rss_start = peak = 0
            samples: list[int] = []
            fds: list[int] = []
            while loop.time() < end:
                await asyncio.sleep(min(RELOAD_EVERY, RSS_SAMPLE_EVERY))
                reloads += 1
                loadkit.write_config(path, config_doc(url, reloads))
                rss = sidecar.rss_kb()
                peak = max(peak, rss)
                samples.append(rss)
                fds.append(len(os.listdir(f"/proc/{sidecar.proc.pid}/fd")))
                if not rss_start and loop.time() >= warm_until:
                    rss_start = rss
            await asyncio.wait_for(asyncio.gather(*callers), timeout=DEADLINE + HANG_AFTER + 30)
            seconds = loop.time() - started
            rss_end = sidecar.rss_kb()
            log = sidecar.log_text()
    durations = [
        json.loads(line).get("duration_ms", 0) / 1000 for line in log.splitlines() if '"duration_ms"' in line
    ]
    trend = samples[:: max(1, len(samples) // 10)]
    if "Traceback" in log:
        outcomes["traceback in the sidecar's log"] += 1
    return Figures(
        outcomes,
        examples,
        dict(overshoot),
        rss_start or rss_end,
        rss_end,
        peak,
        reloads,
        seconds,
        max(0.0, max(durations, default=0.0) - DEADLINE),
        trend,
        (min(fds, default=0), max(fds, default=0)),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmgw_dev.soak", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600, help="seconds of load (default: %(default)s)")
    p.add_argument("--seed", type=int, default=19, help="the fault mix's random seed")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmgw-soak-") as tmp:
        t0 = time.monotonic()
        figures = asyncio.run(soak(args.duration, pathlib.Path(tmp), args.seed))
        print("\n".join(figures.lines()))
        if args.json:
            # Not dataclasses.asdict: it rebuilds the Counter from (key, value) pairs, counting them.
            fields = {f.name: getattr(figures, f.name) for f in dataclasses.fields(figures)}
            print(json.dumps({**fields, "elapsed": time.monotonic() - t0}))
    return 1 if figures.failed else 0


if __name__ == "__main__":
    sys.exit(main())
