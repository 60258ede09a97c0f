"""The config rewritten every 100 ms under load, through a real ``llmgw-proxy`` process.

Concurrent ``openai`` callers (plain and streamed) run against an unchanged
provider while the config file is replaced every 100 ms and the sidecar polls
it every 50 ms. No request may fail. Providers left unchanged keep their
state across every reload: ``broken``'s breaker stays open since the same
moment, ``limited``'s request bucket stays as drained as it was. ``changed``,
whose breaker settings differ in every config, gets a fresh (closed) breaker.

The figures of the full 60 s run come from ``make soak`` (``llmgw_dev.soak``).
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
from typing import Any

import aiohttp
import openai
import pytest

from llmgw_dev import fake_provider, loadkit
from llmgw_proxy import config

RELOAD_EVERY = 0.1
POLL_EVERY = 0.05
RELOADS = 120  # about 12 s of reloads at 100 ms, longer on a loaded machine
CALLERS = 8
DRAINED = 5  # requests taken from `limited`'s bucket of BURST before the reloads
BURST = 10

pytestmark = pytest.mark.slow


def _doc(good: str, bad: str, round_: int) -> dict[str, Any]:
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


async def _status(http: aiohttp.ClientSession, sidecar: loadkit.Sidecar) -> dict[str, Any]:
    async with http.get(sidecar.admin_url + "/status") as r:
        body: dict[str, Any] = await r.json()
        return body


async def _caller(client: openai.AsyncOpenAI, stop: asyncio.Event, outcomes: list[str]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if n % 2:
                stream = await client.chat.completions.create(
                    model="steady", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            else:
                answer = await client.chat.completions.create(
                    model="steady", messages=[{"role": "user", "content": "hi"}]
                )
                text = answer.choices[0].message.content or ""
            outcomes.append("ok" if text == fake_provider.REPLY else f"short: {text!r}")
        except Exception as exc:  # every failure is recorded, whatever raised it
            outcomes.append(f"{type(exc).__name__}: {exc}")


async def test_reloads_every_100ms_fail_no_request_and_keep_unchanged_providers_state(
    tmp_path: pathlib.Path,
) -> None:
    good, bad = fake_provider.FakeProvider(record=False), fake_provider.FakeProvider(record=False)
    # Each answer takes a while, so requests are in flight across reloads.
    good.plan(fake_provider.Fault(latency=0.05, chunk_delay=0.01, times=0))
    bad.plan(fake_provider.Fault(status=500, times=0))
    path = tmp_path / "config.json"
    async with (
        loadkit.fake_server(good) as good_url,
        loadkit.fake_server(bad) as bad_url,
    ):
        loadkit.write_config(path, _doc(good_url, bad_url, 0))
        async with (
            loadkit.sidecar(path, tmp_path / "sidecar.log", reload_interval=POLL_EVERY) as sidecar,
            aiohttp.ClientSession() as http,
            openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="c", max_retries=0) as client,
        ):
            message: Any = [{"role": "user", "content": "hi"}]
            for model in ("broken", "broken", "changed", "changed"):
                with pytest.raises(openai.InternalServerError):
                    await client.chat.completions.create(model=model, messages=message)
            for _ in range(DRAINED):
                await client.chat.completions.create(model="limited", messages=message)
            before = (await _status(http, sidecar))["providers"]
            assert before["broken"]["breaker"] == before["changed"]["breaker"] == "open"
            assert before["limited"]["remainingShare"] == pytest.approx(0.5, abs=0.02)

            stop = asyncio.Event()
            outcomes: list[str] = []
            callers = [asyncio.create_task(_caller(client, stop, outcomes)) for _ in range(CALLERS)]
            last: dict[str, Any] = {}
            for round_ in range(1, RELOADS + 1):
                last = _doc(good_url, bad_url, round_)
                loadkit.write_config(path, last)
                await asyncio.sleep(RELOAD_EVERY)  # the cadence under test, not a wait for a condition
            wanted = config.digest(config.parse(last))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (after := await _status(http, sidecar))["configHash"] != wanted:
                assert loop.time() < deadline, "the last config was never served"
                await asyncio.sleep(POLL_EVERY)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*callers), timeout=60)

    failed = [o for o in outcomes if o != "ok"]
    assert not failed, failed[:10]
    assert len(outcomes) >= CALLERS
    assert after["generation"] > 10, after  # the reloads were served, not coalesced into a few
    assert "lastReloadError" not in after
    providers = after["providers"]
    assert providers["broken"]["breaker"] == "open"
    # The same moment (a report converts the monotonic clock to wall time, to within microseconds).
    since = [datetime.datetime.fromisoformat(p["broken"]["breakerSince"]) for p in (before, providers)]
    assert abs((since[1] - since[0]).total_seconds()) < 0.1, since
    # Refilled by at most a request a minute meanwhile; a fresh bucket would be full (1.0).
    assert providers["limited"]["remainingShare"] < 0.8
    assert providers["changed"]["breaker"] == "closed"
    assert "Traceback" not in sidecar.log_text()
