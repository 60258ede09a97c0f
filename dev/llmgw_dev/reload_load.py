"""The config rewritten every 100 ms under load: ``python -m llmgw_dev.reload_load [--duration 60]``.

Concurrent ``openai`` callers (plain and streamed) run against an unchanged
provider while the config file is replaced every ``RELOAD_EVERY`` s and a real
``llmgw-proxy`` process polls it every ``POLL_EVERY`` s. Before the reloads,
``broken``'s breaker is opened, ``changed``'s too, and ``DRAINED`` requests
are taken from ``limited``'s bucket. Unchanged providers must keep that
state across every reload; ``changed``, whose breaker settings differ in
every config, must get a fresh (closed) breaker. No request may fail.

``tests/proxy/test_reload_under_load.py`` runs the same core for about 12 s;
``make soak`` runs it for 60 s and prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import pathlib
import sys
import tempfile
from typing import Any

import aiohttp
import openai

from llmgw_dev import fake_provider, loadkit
from llmgw_proxy import config

RELOAD_EVERY = 0.1
POLL_EVERY = 0.05
CALLERS = 8
DRAINED = 5  # requests taken from `limited`'s bucket of BURST before the reloads
BURST = 10
SERVED_WITHIN = 30.0
"""Seconds the sidecar has to serve the last config written (the machine may be loaded)."""


def config_doc(good: str, bad: str, round_: int) -> dict[str, Any]:
    def provider(url: str, **policy: Any) -> dict[str, Any]:
        timeouts = {"connect": 5, "firstByte": 30, "total": 60}
        return {"baseUrl": url, "timeouts": timeouts, "retry": {"attempts": 1}, **policy}

    breaker = {"consecutiveFailures": 2, "openDuration": 600, "maxOpenDuration": 600}
    changed_after = 2 if round_ == 0 else 3 + round_ % 2
    providers = {
        "steady": provider(good),
        "broken": provider(bad, circuitBreaker=breaker),
        "limited": provider(good, rateLimit={"requestsPerMinute": 1, "requestBurst": BURST}),
        # A different breaker in every config: a changed policy starts afresh.
        "changed": provider(bad, circuitBreaker={**breaker, "consecutiveFailures": changed_after}),
    }
    routes = [{"model": name, "targets": [{"provider": name}]} for name in providers]
    return {
        "version": 1,
        "providers": providers,
        "routes": routes,
        "maxPinnedResponses": 1000 + round_,  # a global setting changes too
    }


@dataclasses.dataclass
class Result:
    outcomes: list[str]  # "ok", or what went wrong
    before: dict[str, Any]  # /status's providers before the reloads
    after: dict[str, Any]  # /status once the last config is served
    written: int  # configs written
    seconds: float
    log: str

    @property
    def failed(self) -> list[str]:
        return [o for o in self.outcomes if o != "ok"]

    @property
    def breaker_moved(self) -> float:
        """Seconds between ``broken``'s ``breakerSince`` before and after (0: the same breaker)."""
        since = [
            datetime.datetime.fromisoformat(p["providers"]["broken"]["breakerSince"])
            for p in (self.before, self.after)
        ]
        return abs((since[1] - since[0]).total_seconds())

    def lines(self) -> list[str]:
        b, a = self.before["providers"], self.after["providers"]
        return [
            f"reload under load: {self.written} configs written in {self.seconds:.0f} s "
            f"(every {RELOAD_EVERY:g} s), "
            f"generation {self.before['generation']} -> {self.after['generation']}",
            f"  requests: {len(self.outcomes) - len(self.failed)} ok, {len(self.failed)} failed"
            + (f" (e.g. {self.failed[0]})" if self.failed else ""),
            f"  broken (unchanged): breaker {b['broken']['breaker']} -> {a['broken']['breaker']}, "
            f"since moved {self.breaker_moved * 1000:.1f} ms",
            f"  limited (unchanged): remaining share {b['limited']['remainingShare']:.3f} -> "
            f"{a['limited']['remainingShare']:.3f} (a fresh bucket: 1.0)",
            f"  changed: breaker {b['changed']['breaker']} -> {a['changed']['breaker']} (fresh: closed)",
            f"  last reload error: {a.get('lastReloadError')}",
        ]


async def _status(http: aiohttp.ClientSession, sidecar: loadkit.Sidecar) -> dict[str, Any]:
    async with http.get(sidecar.admin_url + "/status") as r:
        body: dict[str, Any] = await r.json()
        return body


async def _caller(client: openai.AsyncOpenAI, stop: asyncio.Event, outcomes: list[str]) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if n % 2:
                stream = await client.chat.completions.create(model="steady", messages=messages, stream=True)
                text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            else:
                answer = await client.chat.completions.create(model="steady", messages=messages)
                text = answer.choices[0].message.content or ""
            outcomes.append("ok" if text == fake_provider.REPLY else f"short: {text!r}")
        except Exception as exc:  # every failure is recorded, whatever raised it
            outcomes.append(f"{type(exc).__name__}: {exc}")


async def run(duration: float, workdir: pathlib.Path) -> Result:
    good, bad = fake_provider.FakeProvider(record=False), fake_provider.FakeProvider(record=False)
    # Each answer takes a while, so requests are in flight across reloads.
    good.plan(fake_provider.Fault(latency=0.05, chunk_delay=0.01, times=0))
    bad.plan(fake_provider.Fault(status=500, times=0))
    path = workdir / "config.json"
    loop = asyncio.get_running_loop()
    async with loadkit.fake_server(good) as good_url, loadkit.fake_server(bad) as bad_url:
        loadkit.write_config(path, config_doc(good_url, bad_url, 0))
        async with (
            loadkit.sidecar(path, workdir / "sidecar.log", reload_interval=POLL_EVERY) as sidecar,
            aiohttp.ClientSession() as http,
            # A request with no end in 60 s counts as a failure rather than holding the run.
            openai.AsyncOpenAI(
                base_url=sidecar.url + "/v1", api_key="c", max_retries=0, timeout=60
            ) as client,
        ):
            messages: Any = [{"role": "user", "content": "hi"}]
            for model in ("broken", "broken", "changed", "changed"):
                try:
                    await client.chat.completions.create(model=model, messages=messages)
                    raise RuntimeError(f"{model} answered; it should fail with a 500")
                except openai.InternalServerError:
                    pass
            for _ in range(DRAINED):
                await client.chat.completions.create(model="limited", messages=messages)
            before = await _status(http, sidecar)

            stop = asyncio.Event()
            outcomes: list[str] = []
            callers = [asyncio.create_task(_caller(client, stop, outcomes)) for _ in range(CALLERS)]
            started = loop.time()
            written = 0
            last: dict[str, Any] = {}
            while loop.time() < started + duration:
                written += 1
                last = config_doc(good_url, bad_url, written)
                loadkit.write_config(path, last)
                await asyncio.sleep(RELOAD_EVERY)  # the cadence under test, not a wait for a condition
            wanted = config.digest(config.parse(last))
            deadline = loop.time() + SERVED_WITHIN
            while (after := await _status(http, sidecar))["configHash"] != wanted:
                if loop.time() > deadline:
                    raise RuntimeError("the last config written was never served")
                await asyncio.sleep(POLL_EVERY)
            seconds = loop.time() - started
            stop.set()
            await asyncio.wait_for(asyncio.gather(*callers), timeout=60)
            log = sidecar.log_text()
    return Result(outcomes, before, after, written, seconds, log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmgw_dev.reload_load", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of reloads (default: %(default)s)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmgw-reload-") as tmp:
        result = asyncio.run(run(args.duration, pathlib.Path(tmp)))
    print("\n".join(result.lines()))
    a = result.after["providers"]
    kept = a["broken"]["breaker"] == "open" and result.breaker_moved < 0.1
    kept = kept and a["limited"]["remainingShare"] < 0.8 and a["changed"]["breaker"] == "closed"
    return 0 if kept and not result.failed and "Traceback" not in result.log else 1


if __name__ == "__main__":
    sys.exit(main())
