"""Run the sidecar: load, listen, reload on change, drain on SIGTERM.

Listeners bind once; ``Overrides`` lets the CLI (and tests) pick hosts and
ports, 0 for an ephemeral one. The bound addresses are logged as a
``listening`` line, which is how a test finds its ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal

from aiohttp import web

from llmgw_proxy import config
from llmgw_proxy.runtime import drain, reload, state
from llmgw_proxy.server import admin, api, listen, openfiles
from llmgw_proxy.telemetry import logs, metrics, tracing

log = logging.getLogger("llmgw.server")

GC_YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (Python's default: 700). A request allocates a
few hundred tracked objects that die with it; at the default, a collection ran every few
requests and walked the live ones of all 32 in flight (about 5% of CPU per request)."""


def settle_gc() -> None:
    """Tune the collector for serving, once start-up is over.

    Everything loaded so far lives as long as the process: moving it out of the
    collector's reach keeps each full collection from walking pydantic, OTel and
    aiohttp internals (worth ~15% CPU per request in the benchmark).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@dataclasses.dataclass(frozen=True)
class Overrides:
    host: str | None = None
    port: int | None = None
    admin_host: str | None = None
    admin_port: int | None = None


def _bound(runner: web.AppRunner) -> str:
    addresses = runner.addresses
    host, port = addresses[0][:2]
    return f"{host}:{port}"


async def run(
    config_path: str | None,
    fixed: config.ProxyConfig | None,
    overrides: Overrides,
    reload_interval: float,
) -> int:
    live = state.Live(asyncio.get_running_loop().time)
    metrics_ = metrics.Metrics(live)
    watcher = reload.Watcher(live, config_path, fixed, on_config=lambda cfg: logs.set_level(cfg.log_level))
    try:
        watcher.load()
    except reload.ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except Exception as exc:  # a file no check foresaw: a clear line, not a traceback
        log.error("cannot start: loading the config failed with %s", type(exc).__name__)
        return 2
    cfg = watcher.config
    assert cfg is not None
    openfiles.ensure(cfg)  # read at start like the listeners' caps: a reload does not redo it
    tracing_ = tracing.from_environment()

    api_args = listen.handler_args(cfg.listen.idle_timeout)
    admin_args = listen.handler_args(cfg.admin.idle_timeout)
    api_runner = web.AppRunner(
        api.build_api(live, metrics_, tracing_),
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,  # a client that goes away cancels its upstream call
        shutdown_timeout=cfg.shutdown_grace,
        **api_args,
    )
    admin_runner = web.AppRunner(
        admin.build(live, metrics_), handle_signals=False, access_log=None, **admin_args
    )
    await api_runner.setup()
    await admin_runner.setup()
    api_port = cfg.listen.port if overrides.port is None else overrides.port
    admin_port = cfg.admin.port if overrides.admin_port is None else overrides.admin_port
    sites = (
        listen.CappedSite(
            api_runner,
            overrides.host or cfg.listen.host,
            api_port,
            max_connections=cfg.listen.max_connections,
            handler_args={**api_args, "access_log": None},
            backlog=cfg.listen.max_connections,  # see listen.CappedSite
        ),
        listen.CappedSite(
            admin_runner,
            overrides.admin_host or cfg.admin.host,
            admin_port,
            max_connections=cfg.admin.max_connections,
            handler_args={**admin_args, "access_log": None},
            backlog=cfg.admin.max_connections,
        ),
    )
    try:
        for site in sites:
            await site.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await api_runner.cleanup()
        await admin_runner.cleanup()
        return 2
    # Before the "listening" line: whoever reads it may send SIGTERM at once, and must get a drain.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", extra={"api": _bound(api_runner), "admin": _bound(admin_runner)})
    logs.flush()  # tests and the benchmark read their ports from this line: no buffering delay
    settle_gc()

    watching = asyncio.create_task(watcher.run(reload_interval))
    flushing = asyncio.create_task(logs.flush_periodically())
    await stop.wait()

    log.info("draining", extra={"grace_seconds": cfg.shutdown_grace})
    live.draining = True
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    # Past the grace aiohttp cancels what is left and closes its connections: a cut the caller
    # cannot tell from a crash. Just before it, each request still in flight ends itself with
    # an error its caller can read (runtime.drain).
    cut = loop.call_later(drain.cut_at(cfg.shutdown_grace), live.drain.cut)
    await api_runner.cleanup()  # stops accepting, then waits for in-flight requests up to the grace
    cut.cancel()
    await admin_runner.cleanup()
    if live.shared is not None:
        await live.shared.close()  # after the drain: in-flight requests settled their reservations
    tracing_.shutdown()
    log.info("stopped")
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    return 0
