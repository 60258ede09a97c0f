"""One Redis per sidecar: every command bounded in time and in number, and a down state.

Each command gets ``timeout`` seconds, connecting included. A command that
times out or loses its connection marks the store *down*: from then on no
command is sent (callers get None at once and use their fallback) and one
probe task PINGs with a doubling, jittered backoff (``reconnectBackoff`` up
to ``maxReconnectBackoff``) until Redis answers, when the store is *up* again.
Nothing queues while Redis is away. At most ``maxInFlight`` commands run at
once (the connection pool's size); one more falls back at once, counted as
``busy``, without marking the store down.

Every command's failure is counted by reason (``REASONS``) for the metrics;
the down and up transitions are logged once each.

redis-py (and the OpenTelemetry SDK its ``observability`` package pulls in) is
imported by the first ``Store``, never by a sidecar without a ``sharedStore``:
about 9 MB of RSS and a quarter of the start time (``redis_client`` holds the
code that needs it at import).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from llmgw_proxy import config
from llmgw_proxy.policies import clock, global_limits

log = logging.getLogger("llmgw.shared")

TIMEOUT = "timeout"
CONNECTION = "connection"
BUSY = "busy"
ERROR = "error"
REASONS = (TIMEOUT, CONNECTION, BUSY, ERROR)
SETTLE_DELAY = 0.005
"""Seconds a settle may wait for an admission to share its round trip (then it goes alone)."""
PROBE_TIMEOUT = 1.0
"""Seconds a reconnection probe may take at least (a new connection, maybe TLS)."""

T = TypeVar("T")

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class _Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


@dataclasses.dataclass
class _Batch:
    replies: asyncio.Future[list[object]]
    commands: list[tuple[_Script, Sequence[str], Sequence[float | int]]] = dataclasses.field(
        default_factory=list
    )
    timer: asyncio.TimerHandle | None = None  # a batch of settles only: sent by then, or with an admission


class Store:
    def __init__(
        self, cfg: config.SharedStore, clock_: clock.Clock, rng: random.Random | None = None
    ) -> None:
        self.cfg = cfg
        self._clock = clock_
        self._rng = rng or random.Random()
        from llmgw_proxy.shared import redis_client  # redis-py only where a store is configured

        self.client: aioredis.Redis
        self.client, self._sentinels = redis_client.connect(cfg, max(cfg.timeout, PROBE_TIMEOUT))
        self._scripts = {
            name: _Script(global_limits.script(name)) for name in ("global_reserve", "global_adjust")
        }
        self.up = True  # until a command fails: the first request finds out
        self.changed_at = clock_()  # when ``up`` last changed
        self.failures: dict[str, int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}  # (provider, what) decided without the store
        self.settles_dropped = 0
        self._in_flight = 0
        self._probe: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None  # set when a reload replaced this store
        self._background: set[asyncio.Task[Any]] = set()
        self._batch: _Batch | None = None  # the scripts asked for in this turn of the loop
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches sent (one round trip each)
        self.settle_delay = SETTLE_DELAY

    def fell_back(self, provider: str, what: str) -> None:
        key = (provider, what)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    async def reserve(self, keys: Sequence[str], args: Sequence[float | int]) -> object | None:
        return await self._do(lambda: self._run("global_reserve", keys, args))

    async def adjust(self, keys: Sequence[str], args: Sequence[float | int]) -> object | None:
        return await self._do(lambda: self._run("global_adjust", keys, args))

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[float | int]) -> object:
        """One script's reply; scripts asked for in the same turn of the event loop share a batch.

        Settles wait up to ``SETTLE_DELAY`` for an admission to ride with, so a lone
        sidecar sends one command per request instead of two.

        The first caller of a turn opens a batch and schedules its sending for the next turn,
        so the requests that are ready in this turn can join; one task sends it as one
        pipeline (one write, one read) and each caller picks its reply. Under load this
        divides the client's cost per command; alone, a request pays one extra turn of the
        loop. A batch holds at most ``maxInFlight`` commands, since every caller holds an
        in-flight slot, and a caller that leaves (its client went away) leaves the batch
        to the others.
        """
        batch = self._batch
        loop = asyncio.get_running_loop()
        urgent = name == "global_reserve"  # a request waits on it; a settle does not
        if batch is None:
            batch = self._batch = _Batch(loop.create_future())
            if urgent:
                loop.call_soon(self._flush, batch)
            else:
                batch.timer = loop.call_later(self.settle_delay, self._flush, batch)
        elif urgent and batch.timer is not None:
            batch.timer.cancel()  # the settles waiting go with this admission, now
            batch.timer = None
            loop.call_soon(self._flush, batch)
        index = len(batch.commands)
        batch.commands.append((self._scripts[name], keys, args))
        reply = (await asyncio.shield(batch.replies))[index]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _flush(self, batch: _Batch) -> None:
        batch.timer = None
        if self._batch is batch:
            self._batch = None
        task = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: _Batch) -> None:
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        self.batches += 1
        try:
            async with asyncio.timeout(self.cfg.timeout):
                replies = await self._send(batch.commands)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else redis.exceptions.TimeoutError("closed")
            batch.replies.set_exception(failure)
            batch.replies.exception()  # retrieved: a batch whose callers all left logs nothing
            if not isinstance(exc, Exception):
                raise
            return
        batch.replies.set_result(replies)

    async def _send(
        self, commands: list[tuple[_Script, Sequence[str], Sequence[float | int]]]
    ) -> list[object]:
        """EVALSHA each command, loading a script Redis does not know (a restart, a flush)."""
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        if len(commands) == 1:
            script, keys, args = commands[0]
            try:
                reply = await self.client.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", script.sha, len(keys), *keys, *args
                )
            except redis.exceptions.NoScriptError:
                await self.client.script_load(script.text)
                reply = await self.client.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", script.sha, len(keys), *keys, *args
                )
            return [reply]
        replies = await self._pipeline(commands)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            for script in {c[0] for c in commands}:
                await self.client.script_load(script.text)
            again = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
            for i, reply in zip(again, await self._pipeline([commands[i] for i in again]), strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(
        self, commands: list[tuple[_Script, Sequence[str], Sequence[float | int]]]
    ) -> list[object]:
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in commands:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def get(self, key: str) -> bytes | None:
        found = await self._do(lambda: self.client.get(key))
        return found if isinstance(found, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._do(lambda: self.client.set(key, value, px=max(1, int(ttl * 1000))))

    def later(self, make: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``make()`` in the background (a settle, a cache write), at most ``maxInFlight`` of
        them at once; False when over that bound or down (the work is dropped and counted)."""
        if not self.up or len(self._background) >= self.cfg.max_in_flight:
            self.settles_dropped += 1
            return False
        task = asyncio.get_running_loop().create_task(make())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    async def _do(self, make: Callable[[], Awaitable[T]]) -> T | None:
        """``make()``'s result, or None when the store is down, busy, slow or failing."""
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        if not self.up:
            return None
        if self._in_flight >= self.cfg.max_in_flight:
            self._count(BUSY)
            return None
        self._in_flight += 1
        try:
            async with asyncio.timeout(self.cfg.timeout):
                return await make()
        except (TimeoutError, redis.exceptions.TimeoutError):
            self._lost(TIMEOUT)
        except (redis.exceptions.ConnectionError, OSError):
            self._lost(CONNECTION)
        except redis.exceptions.RedisError as exc:
            # Redis answered with an error (out of memory, a read-only replica): it is there, but
            # cannot serve; the caller falls back for this command only.
            self._count(ERROR)
            log.warning("shared store command failed", extra={"error": type(exc).__name__})
        finally:
            self._in_flight -= 1
        return None

    def _count(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def _lost(self, reason: str) -> None:
        self._count(reason)
        if not self.up:
            return
        self.up, self.changed_at = False, self._clock()
        log.warning(
            "shared store unreachable; global limits fall back to the per-pod split",
            extra={"reason": reason},
        )
        self._probe = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        import redis.asyncio
        import redis.exceptions

        delay = self.cfg.reconnect_backoff
        # The pooled connections are dead or stuck: the next commands must open new ones.
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            if isinstance(self.client, redis.asyncio.RedisCluster):
                await self.client.aclose()  # it maps the nodes again on its next command
            else:
                await self.client.connection_pool.disconnect()
        while True:
            await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
            try:
                async with asyncio.timeout(max(self.cfg.timeout, PROBE_TIMEOUT)):
                    await self.client.ping()
            except (TimeoutError, redis.exceptions.RedisError, OSError):
                delay = min(delay * 2, self.cfg.max_reconnect_backoff)
                continue
            self.up, self.changed_at = True, self._clock()
            log.info("shared store reachable again; global limits resume")
            return

    async def close(self) -> None:
        if self._batch is not None and self._batch.timer is not None:
            self._batch.timer.cancel()
        for task in [self._probe, *self._background, *self._sending]:
            if task is not None:
                task.cancel()
        await self.client.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()
