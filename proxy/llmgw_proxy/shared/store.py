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

The scripts go to Redis in batches, one batch at a time: an admission that
finds none on its way sends one at once, and what is asked while a batch is on
its way forms the next. A batch is ONE ``EVALSHA``
of ``global_batch.lua`` (every reserve and adjust in it, one write and one
reply), packed by ``resp`` and exchanged on one redis-py connection the store
keeps: redis-py connects it (authentication, TLS, Sentinel), ``link`` writes
the command and parses the reply on its transport. A Redis Cluster client
sends each script alone in a pipeline instead, since one policy's keys share a
slot but a batch's need not.

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
from llmgw_proxy.shared import link, resp

log = logging.getLogger("llmgw.shared")

TIMEOUT = "timeout"
CONNECTION = "connection"
BUSY = "busy"
ERROR = "error"
REASONS = (TIMEOUT, CONNECTION, BUSY, ERROR)
SETTLE_DELAY = 0.05
"""Seconds a settle may wait for an admission to share its round trip (then it goes alone): long
enough that a sidecar answering one request at a time under load (several ms apart) sends no
command of its own for a settle; short against a per-minute limit, and the estimate it corrects
stays booked meanwhile, which errs on the side of the quota."""
PROBE_TIMEOUT = 1.0
"""Seconds a reconnection probe may take at least (a new connection, maybe TLS)."""

T = TypeVar("T")

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class _Script:
    def __init__(self, text: str, kind: str = "") -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self.kind = kind  # its call kind in global_batch.lua


@dataclasses.dataclass
class _Batch:
    replies: asyncio.Future[list[object]]
    commands: list[tuple[_Script, Sequence[str], Sequence[float | int]]] = dataclasses.field(
        default_factory=list
    )
    urgent: bool = False  # an admission waits in it: sent as soon as the previous batch is back
    abandoned: bool = False  # the admission sending it from its own task left before the reply
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
        kinds = {"global_reserve": global_limits.RESERVE, "global_adjust": global_limits.ADJUST}
        self._scripts = {name: _Script(global_limits.script(name), kind) for name, kind in kinds.items()}
        self._batch_script = _Script(global_limits.batch_script())
        self._cluster = cfg.cluster
        self._conn: Any = None  # the connection batches go on (not with a Cluster client)
        self._link: link.Link | None = None  # its transport, read without redis-py
        self.up = True  # until a command fails: the first request finds out
        self.changed_at = clock_()  # when ``up`` last changed
        self.failures: dict[str, int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}  # (provider, what) decided without the store
        self.settles_dropped = 0
        self._in_flight = 0
        self._probe: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None  # set when a reload replaced this store
        self._background: set[asyncio.Task[Any]] = set()
        self._batch: _Batch | None = None  # the scripts asked for since the last batch went
        self._sender: asyncio.Task[None] | None = None  # sends batches, one at a time, while there are
        self._out: _Batch | None = None  # the batch on its way
        self._settles = 0  # settles waiting in a batch or on their way
        self._closed = False
        self.batches = 0  # batches sent (one round trip each)
        self.settle_delay = SETTLE_DELAY

    def fell_back(self, provider: str, what: str) -> None:
        key = (provider, what)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    async def reserve(self, keys: Sequence[str], args: Sequence[float | int]) -> object | None:
        return await self._do(lambda: self._run("global_reserve", keys, args))

    async def adjust(self, keys: Sequence[str], args: Sequence[float | int]) -> object | None:
        return await self._do(lambda: self._run("global_adjust", keys, args))

    def settle(
        self, keys: Sequence[str], args: Sequence[float | int], answered: Callable[[object], None]
    ) -> bool:
        """Send an adjust with the next batch, without a task or a wait: ``answered(reply)`` once
        Redis applied it. False when the store is down or ``maxInFlight`` settles are pending
        (the settle is dropped and counted); a settle that fails is counted as a failure."""
        if not self.up or self._settles >= self.cfg.max_in_flight:
            self.settles_dropped += 1
            return False
        batch, index = self._join("global_adjust", keys, args)
        self._settles += 1

        def done(replies: asyncio.Future[list[object]]) -> None:
            self._settles -= 1
            if replies.cancelled() or self._closed:
                return
            if batch.abandoned:  # the admission that carried it left mid-way: sent or not, unknown
                self.settles_dropped += 1
                return
            failure = replies.exception()
            reply = failure if failure is not None else replies.result()[index]
            if isinstance(reply, Exception):
                self._failed(reply)
            else:
                answered(reply)

        batch.replies.add_done_callback(done)
        return True

    async def settled(self) -> None:
        """Send the settles waiting for an admission now, and return once none is pending."""
        while self._settles and not self._closed:
            batch = self._out or self._batch
            if batch is None:
                return
            if batch is self._batch:
                self._settle_alone(batch)
            await asyncio.wait([batch.replies])

    @property
    def _busy(self) -> bool:
        """A batch is on its way (from the sender task or an admission's own task)."""
        return self._sender is not None or self._out is not None

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[float | int]) -> object:
        """One script's reply, sent in a batch.

        An admission that finds no batch on its way sends one at once from its own task
        (with the settles waiting): one write and one read, and no task or loop turn in
        between, which is the whole cost at one request at a time. What is asked while
        a batch is out forms the next batch, which a sender task sends when the first
        is back (an admission waits in it) or after ``settle_delay`` (only settles:
        they wait that long for an admission to ride with). A caller that leaves (its
        client went away) leaves a batch it shares with others to them.
        """
        if name == "global_reserve" and not self._busy:
            return await self._run_now(keys, args)
        batch, index = self._join(name, keys, args)
        reply = (await asyncio.shield(batch.replies))[index]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _run_now(self, keys: Sequence[str], args: Sequence[float | int]) -> object:
        batch = self._batch or _Batch(asyncio.get_running_loop().create_future())
        self._batch = None
        if batch.timer is not None:
            batch.timer.cancel()  # the settles waiting go with this admission
            batch.timer = None
        batch.commands.append((self._scripts["global_reserve"], keys, args))
        batch.urgent = True
        index = len(batch.commands) - 1
        self._out = batch
        try:
            await self._deliver(batch, timed=False)
        except BaseException:
            batch.abandoned = True
            raise
        finally:
            self._out = None
            self._go_on()
        reply = batch.replies.result()[index]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _join(self, name: str, keys: Sequence[str], args: Sequence[float | int]) -> tuple[_Batch, int]:
        batch = self._batch
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._batch = _Batch(loop.create_future())
        batch.commands.append((self._scripts[name], keys, args))
        if name == "global_reserve":  # a request waits on it; a settle does not
            batch.urgent = True
            if batch.timer is not None:
                batch.timer.cancel()  # the settles waiting go with this admission
                batch.timer = None
        if not self._busy:
            self._go_on()
        return batch, len(batch.commands) - 1

    def _go_on(self) -> None:
        """No batch is out: send the open one now if an admission waits in it, else (settles
        only) once ``settle_delay`` has passed, unless an admission takes it first."""
        batch = self._batch
        if batch is None or self._closed:
            return
        if batch.urgent:
            self._sender = asyncio.get_running_loop().create_task(self._send_batches())
        elif batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(self.settle_delay, self._settle_alone, batch)

    def _settle_alone(self, batch: _Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if self._batch is batch and not self._busy:
            self._sender = asyncio.get_running_loop().create_task(self._send_batches())

    async def _send_batches(self) -> None:
        """Send the open batch, then the next one while an admission waits in it."""
        try:
            while (batch := self._batch) is not None:
                self._batch = None
                if batch.timer is not None:
                    batch.timer.cancel()
                    batch.timer = None
                self._out = batch
                try:
                    await self._deliver(batch)
                finally:
                    self._out = None
                if self._batch is not None and not self._batch.urgent:
                    break
        finally:
            self._sender = None
            self._go_on()

    async def _deliver(self, batch: _Batch, *, timed: bool = True) -> None:
        """Send ``batch`` and resolve its replies; ``timed=False`` when the caller bounds it already
        (an admission sending from its own task, inside ``_do``'s timeout: one timer, not two)."""
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        self.batches += 1
        try:
            # A timeout of None schedules no timer: the caller's one bounds the exchange.
            async with asyncio.timeout(self.cfg.timeout if timed else None):
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
        """The commands' replies: one EVALSHA of the batch script (each alone with a Cluster)."""
        if self._cluster:
            return await self._send_each(commands)
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        keys, args = global_limits.batch_args([(c[0].kind, c[1], c[2]) for c in commands])
        script = self._batch_script
        packed = resp.pack(b"EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            reply = await self._exchange(packed)
        except redis.exceptions.NoScriptError:  # Redis restarted or was flushed
            await self._exchange(resp.pack(b"SCRIPT", b"LOAD", script.text))
            reply = await self._exchange(packed)
        if not isinstance(reply, list) or len(reply) != len(commands):
            raise redis.exceptions.ResponseError("global_batch: not one reply per call")
        return reply

    async def _exchange(self, packed: bytes) -> object:
        """Write one packed command on the store's connection and read its reply.

        The connection comes from the client's pool once and stays the store's: redis-py
        connects it (Sentinel asks for the master, TLS, authentication), then a ``link.Link``
        takes its transport over to write the command and read the reply. A link that
        closed (a timeout, a lost connection, the probe's reset) is replaced on the next
        exchange by connecting the same connection again.
        """
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        current = self._link
        if current is None or current.closed:
            current = await self._connect_link()
            if current is None:  # a redis-py without the transport to take over: its own reader
                await self._conn.send_packed_command(packed, check_health=False)
                return await self._conn.read_response()
        reply = await current.exchange(packed)
        if isinstance(reply, resp.ReplyError):
            if reply.startswith("NOSCRIPT"):
                raise redis.exceptions.NoScriptError(reply)
            raise redis.exceptions.ResponseError(reply)
        return reply

    async def _connect_link(self) -> link.Link | None:
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        elif self._link is not None:  # its transport closed under redis-py: let it forget it
            await conn.disconnect(nowait=True)
            self._link = None
        await conn.connect()  # connected already (a new one from the pool): nothing to do
        transport = getattr(getattr(conn, "_writer", None), "transport", None)
        if transport is None or not hasattr(transport, "set_protocol"):
            return None
        self._link = link.Link.take_over(transport)
        return self._link

    async def _send_each(
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
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            self._failed(exc)
        finally:
            self._in_flight -= 1
        return None

    def _failed(self, exc: BaseException) -> None:
        import redis.exceptions  # loaded by __init__ already: a lookup, not a load

        if isinstance(exc, (TimeoutError, redis.exceptions.TimeoutError)):
            self._lost(TIMEOUT)
        elif isinstance(exc, (redis.exceptions.ConnectionError, OSError)):
            self._lost(CONNECTION)
        else:
            # Redis answered with an error (out of memory, a read-only replica): it is there, but
            # cannot serve; the caller falls back for this command only.
            self._count(ERROR)
            log.warning("shared store command failed", extra={"error": type(exc).__name__})

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
        self._closed = True
        if self._batch is not None and self._batch.timer is not None:
            self._batch.timer.cancel()
        for task in [self._probe, *self._background, self._sender]:
            if task is not None:
                task.cancel()
        await self.client.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()
