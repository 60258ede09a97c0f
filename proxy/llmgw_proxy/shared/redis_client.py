"""The redis-py client of a ``sharedStore``: plain, Sentinel or Cluster, with a password file.

Kept apart from ``store`` so that only a sidecar whose config names a shared
store imports redis-py (``store.Store`` imports this module when it is built).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.credentials import CredentialProvider

from llmgw_proxy import config


class _PasswordFile(CredentialProvider):
    """Reads the password at each connect, so a rotated Secret is used without a restart."""

    def __init__(self, username: str | None, path: str) -> None:
        self.username = username
        self.path = path

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        with open(self.path, encoding="utf-8") as f:
            password = f.read().strip()
        return (self.username, password) if self.username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def connect(cfg: config.SharedStore, connect_timeout: float) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """The client for commands, and the Sentinel clients it asks for the master (to close too)."""
    options: dict[str, Any] = {
        # The Store bounds every command (and the batches' exchanges) with asyncio.timeout; a
        # socket_timeout here would also make redis-py wrap each write in asyncio.wait_for,
        # a task and loop turns per command. The Cluster client keeps it: it sends its own way.
        "socket_timeout": cfg.timeout if cfg.cluster else None,
        "socket_connect_timeout": connect_timeout,
        # The Store's batches keep one connection (not with Cluster); the cache's commands and the
        # probe use the rest.
        "max_connections": cfg.max_in_flight if cfg.cluster else cfg.max_in_flight + 1,
        "health_check_interval": 0,
    }
    if cfg.password_file is not None:
        options["credential_provider"] = _PasswordFile(cfg.username, cfg.password_file)
    elif cfg.username is not None:
        options["username"] = cfg.username
    if cfg.sentinels:
        pairs = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in cfg.sentinels)]
        sentinel = Sentinel(pairs, sentinel_kwargs={"socket_timeout": cfg.timeout}, **options)  # type: ignore[no-untyped-call]
        db = aioredis.connection.parse_url(cfg.url).get("db", 0)
        master: aioredis.Redis = sentinel.master_for(cfg.sentinel_master, db=db)
        return master, list(sentinel.sentinels)
    if cfg.cluster:
        # One pool per node, each of maxInFlight: the in-flight bound is the Store's own.
        cluster: aioredis.Redis = aioredis.RedisCluster.from_url(cfg.url, **options)  # type: ignore[assignment]
        return cluster, []
    return aioredis.Redis.from_url(cfg.url, **options), []
