"""Runtime state of one provider, and the loaded snapshot the request path reads.

``ProviderState`` is where policies keep what must outlive a config reload
(limiter buckets, breaker state): a reload keeps the very same object for a
provider whose settings did not change. ``Snapshot`` is immutable and swapped
whole, so a request sees one consistent config from start to end.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from llmgw_proxy import config, keys, upstream


class ProviderState:
    """Per-provider runtime objects. ``extras`` is for policies (keyed by policy name)."""

    def __init__(self, name: str, provider: config.Provider) -> None:
        self.name = name
        self.provider = provider
        self.base_url = provider.base_url.rstrip("/")
        t = provider.timeouts
        self.timeouts = upstream.Timeouts(connect=t.connect, first_byte=t.first_byte, total=t.total)
        self.extras: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ProviderState({self.name!r})"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    generation: int
    config: config.ProxyConfig
    providers: dict[str, ProviderState]
    keys: dict[str, keys.Key | None]


def carry_over(previous: Snapshot | None, cfg: config.ProxyConfig) -> dict[str, ProviderState]:
    """States for ``cfg``'s providers, reusing the previous object when a provider is unchanged."""
    old = previous.providers if previous else {}
    result = {}
    for name, provider in cfg.providers.items():
        kept = old.get(name)
        result[name] = (
            kept if kept is not None and kept.provider == provider else ProviderState(name, provider)
        )
    return result


def build(
    previous: Snapshot | None, cfg: config.ProxyConfig, loaded_keys: dict[str, keys.Key | None]
) -> Snapshot:
    generation = previous.generation + 1 if previous else 1
    return Snapshot(generation, cfg, carry_over(previous, cfg), loaded_keys)


class Live:
    """The one mutable cell: the snapshot being served. Reload swaps it; requests read it once."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.draining = False
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and not self.draining
