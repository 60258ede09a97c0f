"""The shared store client against a real Redis: batching, its bounds, and a cancelled caller."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from rediskit import RedisServer

from llmgw_proxy import config
from llmgw_proxy.policies import global_limits
from llmgw_proxy.shared import resp
from llmgw_proxy.shared import store as shared_store

BUSY_MACHINE = 2.0
"""Seconds per command: a loaded test machine is not a slow Redis (the 0.2 s default is)."""
PLAN = global_limits.Plan(
    (global_limits.Bucket("llmgw:{t/p}:p:rq", global_limits.REQUESTS, 1.0, 1000.0, 0.0),), None, 1
)


async def test_concurrent_admissions_share_one_pipeline_and_each_gets_its_own_reply(
    redis_server: RedisServer,
) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        replies = await asyncio.gather(*(store.reserve(keys, args) for _ in range(50)))
        decisions = [global_limits.read_reserve(PLAN, r) for r in replies]
        assert all(isinstance(d, global_limits.Granted) for d in decisions)
        # 50 requests booked 50 slots: the bucket's time moved by 50 s at 1 per second.
        async with asyncio.timeout(5):
            tat = float(await store.client.get("llmgw:{t/p}:p:rq") or 0)
            seconds, micros = await store.client.time()
        assert 49 < tat - (seconds + micros / 1e6) <= 50.5
    finally:
        await store.close()


async def test_a_caller_that_leaves_leaves_its_batch_to_the_others(
    redis_server: RedisServer,
) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        settle_keys, settle_args = global_limits.adjust_args(PLAN, -1, 0, [])
        store.settle_delay = 60
        answered: list[object] = []
        assert store.settle(settle_keys, settle_args, answered.append)
        first = asyncio.create_task(store.reserve(keys, args))
        followers = [asyncio.create_task(store.reserve(keys, args)) for _ in range(5)]
        await asyncio.sleep(0)  # the first is out with the settle, from its own task; the others wait
        first.cancel()
        done = await asyncio.gather(*followers)
        assert all(isinstance(global_limits.read_reserve(PLAN, r), global_limits.Granted) for r in done)
        assert store.up and store._batch is None and not store.failures
        # Whether the settle reached Redis is unknown: it is dropped (the estimate stays booked).
        assert answered == [] and store.settles_dropped == 1
        reply = await store.reserve(keys, args)  # a later caller starts a new batch, sent as usual
        assert isinstance(global_limits.read_reserve(PLAN, reply), global_limits.Granted)
    finally:
        await store.close()


async def test_a_settle_rides_with_the_next_admission_or_goes_alone_soon_after(
    redis_server: RedisServer,
) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        settle_keys, settle_args = global_limits.adjust_args(PLAN, -1, 0, [])
        assert await store.reserve(keys, args) is not None and store.batches == 1
        store.settle_delay = 60  # longer than the test: only an admission can send it
        settle = asyncio.create_task(store.adjust(settle_keys, settle_args))
        for _ in range(3):
            await asyncio.sleep(0)  # the settle opened a batch and waits in it
        assert store.batches == 1 and not settle.done()
        assert await store.reserve(keys, args) is not None
        assert await settle == [] and store.batches == 2  # one round trip for both
        store.settle_delay = shared_store.SETTLE_DELAY
        assert await store.adjust(settle_keys, settle_args) == [] and store.batches == 3  # alone, soon
    finally:
        await store.close()


async def _evalsha_calls(url: str) -> int:
    async with aioredis.Redis.from_url(url) as r:
        stats = await r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_batch_of_admissions_and_settles_is_one_command_to_redis(
    redis_server: RedisServer,
) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        settle_keys, settle_args = global_limits.adjust_args(PLAN, -1, 0, [])
        assert await store.reserve(keys, args) is not None  # loads the script: not counted below
        async with aioredis.Redis.from_url(redis_server.url) as r:
            await r.config_resetstat()
        answered: list[object] = []
        store.settle_delay = 60  # only an admission sends them
        for _ in range(5):
            assert store.settle(settle_keys, settle_args, answered.append)
        replies = await asyncio.gather(*(store.reserve(keys, args) for _ in range(20)))
        assert all(isinstance(global_limits.read_reserve(PLAN, r), global_limits.Granted) for r in replies)
        assert answered == [[]] * 5  # each settle got its own reply
        # The first admission went at once with the settles, the 19 asked meanwhile together.
        assert await _evalsha_calls(redis_server.url) == 2
        # The settles went first and a bucket holds no more than full: 21 admitted, 1 given back,
        # so the bucket's time moved by 20 s at 1 per second.
        async with asyncio.timeout(5):
            tat = float(await store.client.get("llmgw:{t/p}:p:rq") or 0)
            seconds, micros = await store.client.time()
        assert 19 < tat - (seconds + micros / 1e6) <= 20.5
    finally:
        await store.close()


async def test_scripts_redis_forgot_are_loaded_again(redis_server: RedisServer) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        granted = global_limits.Granted
        assert isinstance(global_limits.read_reserve(PLAN, await store.reserve(keys, args)), granted)
        async with aioredis.Redis.from_url(redis_server.url) as r:
            await r.script_flush()  # as after a restart without persistence
        assert isinstance(global_limits.read_reserve(PLAN, await store.reserve(keys, args)), granted)
        assert store.up and not store.failures
    finally:
        await store.close()


async def test_one_in_flight_still_leaves_a_connection_for_the_cache_and_the_probe(
    redis_server: RedisServer,
) -> None:
    # The batches keep a connection of their own; the cache's GET and SET, and the probe, need another.
    cfg = config.SharedStore.model_validate(
        {
            "url": redis_server.url,
            "maxInFlight": 1,
            "timeout": BUSY_MACHINE,
        }
    )
    store = shared_store.Store(cfg, asyncio.get_running_loop().time)
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        granted = global_limits.Granted
        assert isinstance(global_limits.read_reserve(PLAN, await store.reserve(keys, args)), granted)
        await store.put("llmgw:{t/p}:cache:x", b"answer", 60)
        assert await store.get("llmgw:{t/p}:cache:x") == b"answer"
        assert store.up and not store.failures
    finally:
        await store.close()


async def test_replies_that_arrive_a_byte_at_a_time_are_read_whole(redis_server: RedisServer) -> None:
    # A relay that hands Redis's replies on one byte per write, so each reply comes in pieces.
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", redis_server.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, size: int) -> None:
            while data := await src.read(size):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, 65536), pipe(up_reader, writer, 1))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = shared_store.Store(
        config.SharedStore(url=f"redis://127.0.0.1:{port}/0", timeout=BUSY_MACHINE),
        asyncio.get_running_loop().time,
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        settle_keys, settle_args = global_limits.adjust_args(PLAN, -1, 0, [])
        answered: list[object] = []
        for _ in range(5):
            reply = await store.reserve(keys, args)
            assert isinstance(global_limits.read_reserve(PLAN, reply), global_limits.Granted)
            assert store.settle(settle_keys, settle_args, answered.append)
        await store.settled()
        assert answered == [[]] * 5 and store.up and not store.failures
    finally:
        await store.close()
        server.close()


async def test_a_reply_that_comes_after_its_timeout_never_answers_the_next_command(
    redis_server: RedisServer,
) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        assert await store._exchange(resp.pack(b"ECHO", b"warm")) == b"warm"
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)  # connected, answering nothing
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await store._exchange(resp.pack(b"ECHO", b"late"))
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        # Redis answers "late" now, on a connection the store closed: the next command has its own.
        async with asyncio.timeout(10):
            assert await store._exchange(resp.pack(b"ECHO", b"next")) == b"next"
            assert await store._exchange(resp.pack(b"ECHO", b"again")) == b"again"
        with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
            await store._exchange(resp.pack(b"NOSUCHCOMMAND"))
        assert await store._exchange(resp.pack(b"ECHO", b"still")) == b"still"  # an error reply keeps it
    finally:
        await store.close()


async def test_batches_go_on_a_connection_redis_py_authenticated(tmp_path: pathlib.Path) -> None:
    server = RedisServer(tmp_path, password="s3cret-for-the-test")
    server.start()
    secret = tmp_path / "password"
    secret.write_text("s3cret-for-the-test\n")
    cfg = config.SharedStore.model_validate(
        {
            "url": server.url,
            "passwordFile": str(secret),
            "timeout": BUSY_MACHINE,
        }
    )
    store = shared_store.Store(cfg, asyncio.get_running_loop().time)
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        reply = await store.reserve(keys, args)
        assert isinstance(global_limits.read_reserve(PLAN, reply), global_limits.Granted)
        assert store._link is not None
        store._link.close()  # as a timeout does: the next batch connects and authenticates again
        reply = await store.reserve(keys, args)
        assert isinstance(global_limits.read_reserve(PLAN, reply), global_limits.Granted)
    finally:
        await store.close()
        server.stop()


async def test_a_batch_reads_redis_clock_once_for_all_its_calls(redis_server: RedisServer) -> None:
    store = shared_store.Store(
        config.SharedStore(url=redis_server.url, timeout=BUSY_MACHINE), asyncio.get_running_loop().time
    )
    try:
        keys, args = global_limits.reserve_args(PLAN, 1, [], [])
        settle_keys, settle_args = global_limits.adjust_args(PLAN, -1, 0, [])
        assert await store.reserve(keys, args) is not None  # the script is loaded
        store.settle_delay = 60  # the settles wait for the next admission
        answered: list[object] = []
        assert store.settle(settle_keys, settle_args, answered.append)
        assert store.settle(settle_keys, settle_args, answered.append)
        async with aioredis.Redis.from_url(redis_server.url) as r:
            await r.config_resetstat()
            batches = store.batches
            assert isinstance(
                global_limits.read_reserve(PLAN, await store.reserve(keys, args)), global_limits.Granted
            )
            stats = await r.info("commandstats")
        assert store.batches == batches + 1 and answered == [[], []]
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert stats["cmdstat_time"]["calls"] == 1  # one instant for the batch, not one per call
    finally:
        await store.close()
