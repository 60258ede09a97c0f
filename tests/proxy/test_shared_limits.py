"""Global limits through a real redis-server: exact across sidecars, and a per-pod fallback when it fails.

Every sidecar here is a real server on loopback; the shared store is a real Redis
(tests/rediskit.py). Sidecars with the same ``sharedId`` share one set of buckets,
whichever gateway they belong to.
"""

from __future__ import annotations

import asyncio
import math
import os
import pathlib
import random
import signal
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import redis.asyncio as aioredis
import rediskit
import yaml
from openai.types.chat import ChatCompletionMessageParam

if TYPE_CHECKING:
    from conftest import Eventually, MakeDoc, Proxy, StartProxy
    from rediskit import RedisServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
SHARED_ID = "team-a/openai"


def shared_doc(
    make_doc: MakeDoc,
    upstream: str,
    key_file: pathlib.Path,
    redis_url: str,
    rate_limit: dict[str, Any],
    **provider: Any,
) -> dict[str, Any]:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(sharedId=SHARED_ID, rateLimit=rate_limit, **provider)
    doc["sharedStore"] = {
        "url": redis_url,
        "timeout": 2,  # a busy test machine is not a slow Redis
        "reconnectBackoff": 0.05,
        "maxReconnectBackoff": 0.2,
    }
    return doc


async def ask(client: openai.AsyncOpenAI) -> int:
    """The status the caller sees for one chat completion."""
    try:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


async def test_one_global_limit_holds_across_sidecars_of_two_gateways(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
) -> None:
    # Two gateways use the policy: one has 3 replicas, the other 1; their fallbacks differ.
    limit = {"requestsPerMinute": 10, "scope": "global"}
    a = await start_proxy(
        shared_doc(make_doc, upstream, key_file, redis_server.url, {**limit, "fallbackShare": 3})
    )
    b = await start_proxy(shared_doc(make_doc, upstream, key_file, redis_server.url, limit))
    statuses = [await ask(p.async_client()) for p in [a, b] * 8]
    assert statuses.count(200) == 10  # one quota, not two (or the 20 of two gateways' splits)
    assert set(statuses[10:]) == {429}
    # Keys name the policy, never a provider key.
    async with aioredis.Redis.from_url(redis_server.url) as r:
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await r.keys("*"))
    assert keys == ["llmgw:{team-a/openai}:p:rq"]


async def test_refusal_says_when_the_global_bucket_has_room(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
) -> None:
    doc = shared_doc(
        make_doc, upstream, key_file, redis_server.url, {"requestsPerMinute": 6, "scope": "global"}
    )
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    for _ in range(6):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    try:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    except openai.RateLimitError as exc:
        assert exc.code == "rate_limit_exceeded"
        assert 1 <= float(exc.response.headers["retry-after-ms"]) <= 10_000  # 1 per 10 s refills
    else:
        raise AssertionError("the 7th request within the minute was admitted")


async def test_tokens_reserved_globally_are_settled_to_the_usage(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
) -> None:
    # A 1000-token budget per minute; each request reserves ~300 (256 completion default) but uses ~3.
    doc = shared_doc(
        make_doc, upstream, key_file, redis_server.url, {"tokensPerMinute": 1000, "scope": "global"}
    )
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    shared = proxy.live.shared
    assert shared is not None
    for _ in range(3):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    # Settles run after the answers: wait for them, then the bucket holds the usage, not the estimates.
    await asyncio.wait_for(_settled(shared), 5)
    for _ in range(5):  # without settling, the 4th would wait for room
        await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_one_request_at_a_time_costs_redis_one_command_its_settle_included(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
) -> None:
    # Each answer's settle rides with the next admission: one EVALSHA (one write, one read) per
    # request on the request's path, and none in the background between requests.
    limit = {"requestsPerMinute": 1000, "tokensPerMinute": 10**6, "scope": "global"}
    proxy = await start_proxy(
        shared_doc(make_doc, upstream, key_file, redis_server.url, limit, budget={"tokensPerDay": 10**9})
    )
    shared = proxy.live.shared
    assert shared is not None
    shared.settle_delay = 60  # longer than the test: only an admission (or settled()) sends a settle
    client = proxy.async_client()
    await client.chat.completions.create(model="m", messages=MESSAGES)  # loads the script
    await _settled(shared)
    async with aioredis.Redis.from_url(redis_server.url) as r:
        await r.config_resetstat()
        for _ in range(10):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert int((await r.info("commandstats"))["cmdstat_evalsha"]["calls"]) == 10
        await _settled(shared)  # the last answer's settle, alone
        assert int((await r.info("commandstats"))["cmdstat_evalsha"]["calls"]) == 11
        # Every estimate was settled to the usage: the budget counts what the answers used.
        (day,) = await r.keys(f"llmgw:{{{SHARED_ID}}}:budget:day:*")
        used = int(await r.get(day) or 0)
    assert 0 < used < 11 * 50


async def _settled(shared: Any) -> None:
    await shared.settled()


async def _load(
    proxies: list[Proxy], shares: list[float], total: int, rng: random.Random
) -> tuple[int, float]:
    """``total`` requests spread over ``proxies`` by ``shares``, 8 at a time: (admitted, seconds)."""
    clients = [p.async_client() for p in proxies]
    targets = rng.choices(range(len(proxies)), weights=shares, k=total)
    queue = iter(targets)
    admitted = 0
    seen: dict[int, int] = {}

    async def worker() -> None:
        nonlocal admitted
        for index in queue:
            status = await ask(clients[index])
            admitted += status == 200
            seen[status] = seen.get(status, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(8)))
    return admitted, time.monotonic() - started


async def test_uneven_load_on_three_sidecars_admits_the_global_limit_where_the_split_does_not(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
    capsys: Any,
) -> None:
    limit, replicas, total, shares = 300, 3, 600, [0.90, 0.05, 0.05]
    rng = random.Random(18)
    glob = {"requestsPerMinute": limit, "scope": "global", "fallbackShare": replicas}
    shared = [
        await start_proxy(shared_doc(make_doc, upstream, key_file, redis_server.url, glob))
        for _ in range(replicas)
    ]
    admitted, seconds = await _load(shared, shares, total, rng)
    store = shared[0].live.shared
    assert store is not None
    falls = sum(p.sample("llmgw_shared_store_fallbacks_total", provider="fake", what="limit") for p in shared)
    # Allowed: the burst, plus what refilled while the load ran (5 per second).
    allowed = limit + limit / 60 * seconds
    split = {"requestsPerMinute": math.ceil(limit / replicas)}  # what scope: shared renders per pod
    per_pod = [
        await start_proxy(shared_doc(make_doc, upstream, key_file, redis_server.url, split)) for _ in range(3)
    ]
    split_admitted, split_seconds = await _load(per_pod, shares, total, rng)
    split_allowed = limit + limit / 60 * split_seconds
    with capsys.disabled():
        print(
            f"\n90/5/5 load, {total} requests on {replicas} sidecars, limit {limit}/min:"
            f"\n  global: admitted {admitted} of {allowed:.0f} allowed ({admitted / allowed:.1%})"
            f" in {seconds:.1f} s"
            f"\n  per-pod split: admitted {split_admitted} of {split_allowed:.0f}"
            f" ({split_admitted / split_allowed:.1%}) in {split_seconds:.1f} s"
        )
    assert falls == 0, f"Redis timed out during the run ({store.failures}): the fallback decided {falls}"
    assert abs(admitted - allowed) <= 0.02 * allowed
    assert split_admitted < 0.8 * split_allowed  # the busy pod is held to a third


async def test_redis_killed_mid_load_falls_back_per_pod_then_resumes_the_global_limit(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
    eventually: Eventually,
    http: aiohttp.ClientSession,
) -> None:
    glob = {"requestsPerMinute": 20, "scope": "global", "fallbackShare": 4}
    proxy = await start_proxy(shared_doc(make_doc, upstream, key_file, redis_server.url, glob))
    client = proxy.async_client()
    shared = proxy.live.shared
    assert shared is not None
    assert [await ask(client) for _ in range(3)] == [200] * 3

    redis_server.kill()
    # Under the fallback the pod enforces ceil(20 / 4) = 5 on its own; every answer comes, none hangs.
    statuses = await asyncio.wait_for(asyncio.gather(*(ask(client) for _ in range(10))), 10)
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 5
    assert not shared.up
    assert proxy.sample("llmgw_shared_store_up") == 0
    assert proxy.sample("llmgw_shared_store_fallbacks_total", provider="fake", what="limit") >= 10
    async with http.get(proxy.admin_url + "/status") as response:
        report = await response.json()
    assert report["sharedStore"]["reachable"] is False

    redis_server.start()  # empty, as a Redis without persistence comes back
    await eventually(lambda: shared.up, within=10)
    # The global limit again: a fresh 20 in Redis, not the fallback's 5 (already spent).
    assert [await ask(client) for _ in range(20)] == [200] * 20
    assert await ask(client) == 429
    async with http.get(proxy.admin_url + "/status") as response:
        assert (await response.json())["sharedStore"]["reachable"] is True


async def test_a_global_limit_through_redis_sentinel(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
    tmp_path: pathlib.Path,
) -> None:
    sentinel = rediskit.Sentinel(tmp_path, redis_server)
    sentinel.start()
    try:
        doc = shared_doc(
            make_doc, upstream, key_file, "redis://sentinel/0", {"requestsPerMinute": 4, "scope": "global"}
        )
        doc["sharedStore"]["sentinels"] = [f"127.0.0.1:{sentinel.port}"]
        proxy = await start_proxy(doc)
        assert [await ask(proxy.async_client()) for _ in range(5)] == [200] * 4 + [429]
        async with aioredis.Redis.from_url(redis_server.url) as r:  # the master Sentinel named holds it
            assert await r.exists("llmgw:{team-a/openai}:p:rq")
    finally:
        sentinel.stop()


async def test_a_global_limit_and_budget_on_a_redis_cluster(
    start_proxy: StartProxy, upstream: str, key_file: pathlib.Path, make_doc: MakeDoc, tmp_path: pathlib.Path
) -> None:
    cluster = rediskit.Cluster(tmp_path)
    try:
        cluster.start()
        limit = {"requestsPerMinute": 4, "tokensPerMinute": 100_000, "scope": "global"}
        doc = shared_doc(make_doc, upstream, key_file, cluster.url, limit, budget={"tokensPerDay": 10**6})
        doc["sharedStore"]["cluster"] = True
        a, b = await start_proxy(doc), await start_proxy(doc)
        # One script touches the request and token buckets and the budget: one shard, by the hash tag.
        assert [await ask(p.async_client()) for p in (a, b, a, b, a)] == [200] * 4 + [429]
        assert a.live.shared is not None and a.live.shared.failures == {}
    finally:
        cluster.stop()


async def test_streams_settle_their_global_token_reservations_on_the_streamed_usage(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
) -> None:
    limit = {"tokensPerMinute": 1000, "scope": "global"}
    proxy = await start_proxy(shared_doc(make_doc, upstream, key_file, redis_server.url, limit))
    client = proxy.async_client()
    shared = proxy.live.shared
    assert shared is not None
    for _ in range(12):  # each reserves 8 + 200 tokens and uses ~10: unsettled, the 5th would be refused
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=200, stream=True
        )
        async for _chunk in stream:
            pass
        await asyncio.wait_for(_settled(shared), 5)
    async with aioredis.Redis.from_url(redis_server.url) as r:
        tat = float(await r.get("llmgw:{team-a/openai}:p:tk") or 0)
        (seconds, micros) = await r.time()
    used = (tat - (seconds + micros / 1e6)) * 1000 / 60  # tokens still booked, from the bucket's time
    assert 0 < used < 12 * 30


async def test_a_stalled_redis_costs_one_timeout_then_the_fallback_answers_at_once(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
    eventually: Eventually,
) -> None:
    glob = {"requestsPerMinute": 100, "scope": "global", "fallbackShare": 2}
    doc = shared_doc(make_doc, upstream, key_file, redis_server.url, glob)
    doc["sharedStore"]["timeout"] = 0.3
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    shared = proxy.live.shared
    assert shared is not None
    assert await ask(client) == 200
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # alive, connected, answering nothing
    try:
        # The first request waits out the timeout; none waits longer, and all are answered.
        statuses = await asyncio.wait_for(asyncio.gather(*(ask(client) for _ in range(8))), 5)
        assert statuses == [200] * 8
        assert not shared.up and shared.failures.get("timeout", 0) >= 1
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    await eventually(lambda: shared.up, within=10)
    assert await ask(client) == 200


async def test_a_reload_that_changes_the_store_replaces_its_client_and_keeps_the_count(
    start_proxy: StartProxy,
    upstream: str,
    key_file: pathlib.Path,
    make_doc: MakeDoc,
    redis_server: RedisServer,
) -> None:
    doc = shared_doc(
        make_doc, upstream, key_file, redis_server.url, {"requestsPerMinute": 4, "scope": "global"}
    )
    proxy = await start_proxy(doc)
    client = proxy.async_client()
    assert [await ask(client) for _ in range(2)] == [200, 200]
    before = proxy.live.shared
    assert before is not None
    doc["sharedStore"]["timeout"] = 3
    proxy.config_path.write_text(yaml.safe_dump(doc))
    proxy.watcher.load()
    after = proxy.live.shared
    assert after is not None and after is not before and after.cfg.timeout == 3
    assert before.closing is not None
    await asyncio.wait_for(before.closing, 5)
    # The count is Redis's: two left of four, through the new client.
    assert [await ask(client) for _ in range(3)] == [200, 200, 429]
