"""Hot reload of the config file and key files, by polling their identity.

Kubelet updates a mounted ConfigMap or Secret by swapping a ``..data``
symlink to a new directory, which inotify on the file itself never sees; a
``stat`` that follows the links does. A changed file set is validated whole:
a bad config or unreadable key is refused, counted and logged, and the
previous snapshot keeps serving. Unchanged providers keep their state.

The watcher knows nothing of logging levels or metrics: ``on_config`` hears of
each config that is served, and the refusals are counted on ``state.Live`` by
a bounded reason code (``REASONS``).

``run`` is supervised: whatever one round raises (a bug, a file no check
foresaw) is logged, counted as ``unexpected`` and the loop goes on, so a later
good file is still picked up. A sidecar whose first key is refused starts
anyway, not ready, and keeps watching: a fixed key makes it ready, where a
crash would loop and, as a native sidecar, hold the application back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from collections.abc import Callable
from typing import TextIO

import pydantic
from yaml.error import YAMLError
from yaml.loader import SafeLoader

from llmgw_proxy import config
from llmgw_proxy.runtime import keys, state

log = logging.getLogger("llmgw.reload")

Fingerprint = tuple[tuple[str, int, int, int, int] | tuple[str], ...]


CONFIG_UNREADABLE = "config_unreadable"
CONFIG_INVALID = "config_invalid"
UNEXPECTED = "unexpected"
REASONS = (CONFIG_UNREADABLE, CONFIG_INVALID, *keys.REASONS, UNEXPECTED)
"""Every reason a reload is refused for: the metric's ``reason`` label and ``/readyz``'s ``reasonCode``."""


class ConfigError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_config(path: str) -> config.ProxyConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = _safe_load(f)  # JSON is YAML too
        return config.parse(data)
    except OSError as exc:
        raise ConfigError(CONFIG_UNREADABLE, f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(CONFIG_INVALID, f"config {path} is not UTF-8 (at byte {exc.start})") from None
    except YAMLError as exc:
        raise ConfigError(CONFIG_INVALID, f"config {path} is not valid YAML/JSON: {exc}") from None
    except pydantic.ValidationError as exc:
        raise ConfigError(CONFIG_INVALID, f"config {path} is invalid: {_explain(exc)}") from None
    except config.UnsupportedVersion as exc:
        raise ConfigError(CONFIG_INVALID, f"config {path} is invalid: {exc}") from None


def _safe_load(stream: TextIO) -> object:
    """``yaml.safe_load``, from PyYAML's loader modules alone: the sidecar imports them without
    the package's ``__init__`` and its writers (``server/lazy_packages``)."""
    loader = SafeLoader(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _explain(error: pydantic.ValidationError) -> str:
    """``field.path: message`` pairs, without the values: a proxy URL may carry a password, and the
    message reaches logs and ``/status`` (and from there the gateway's conditions)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return f"{error.error_count()} error(s): " + "; ".join(parts)


def fingerprint(paths: list[str]) -> Fingerprint:
    result: list[tuple[str, int, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)  # follows symlinks: a ..data swap changes the inode
        except OSError:
            result.append((path,))
            continue
        result.append((path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(result)


class Watcher:
    """Loads config and keys into ``live``; ``poll`` reloads when a watched file changed."""

    def __init__(
        self,
        live: state.Live,
        config_path: str | None,
        fixed: config.ProxyConfig | None = None,
        on_config: Callable[[config.ProxyConfig], None] | None = None,
    ) -> None:
        if (config_path is None) == (fixed is None):
            raise ValueError("give exactly one of config_path and fixed")
        self.live = live
        self.config_path = config_path
        self.fixed = fixed
        self.on_config = on_config
        self.config: config.ProxyConfig | None = None  # last valid config, even if its keys are not
        self._seen: Fingerprint = ()

    def _paths(self, cfg: config.ProxyConfig | None) -> list[str]:
        paths = [self.config_path] if self.config_path else []
        if cfg is not None:
            paths += sorted({p.api_key_file for p in cfg.providers.values() if p.api_key_file})
        return paths

    def load(self) -> None:
        """Load now. Raises ConfigError when the very first config is invalid."""
        self._seen = fingerprint(self._paths(self.config))
        try:
            cfg = self.fixed if self.fixed is not None else read_config(str(self.config_path))
        except ConfigError as exc:
            if self.config is None:
                raise
            self._refuse(exc.reason, str(exc))
            return
        self._seen = fingerprint(self._paths(cfg))
        try:
            loaded = keys.load_all(cfg)
        except keys.KeyFileError as exc:
            if self.config is None:
                self.config = cfg  # listeners can start; readiness waits for the key
            self._refuse(exc.reason, str(exc))
            return
        if self.config is not None and (cfg.listen, cfg.admin) != (self.config.listen, self.config.admin):
            log.warning("listener changes take effect after a restart")
        self.config = cfg
        snapshot = self.live.serve(cfg, loaded)
        if self.on_config:
            self.on_config(cfg)
        log.info(
            "config loaded", extra={"generation": snapshot.generation, "providers": sorted(cfg.providers)}
        )

    def _refuse(self, code: str, reason: str) -> None:
        self.live.refuse(code, reason)
        served = "the previous config keeps serving" if self.live.snapshot else "not ready until it is fixed"
        log.error(f"config reload refused; {served}", extra={"reason": reason, "reason_code": code})

    def changed(self) -> bool:
        return fingerprint(self._paths(self.config)) != self._seen

    def poll(self) -> None:
        """One supervised round: reload if a file changed; no exception gets out."""
        try:
            if self.changed():
                self.load()
        except Exception as exc:  # the loop must outlive any one round
            # Not the message: it may quote a file's bytes, and a key file's bytes are the key.
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f" at {os.path.basename(frame.filename)}:{frame.lineno}" if frame else ""
            self._refuse(UNEXPECTED, f"reload failed with {type(exc).__name__}{where}")

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.poll()
