"""Runtime state of one provider, and the loaded snapshot the request path reads.

``ProviderState`` is where policies keep what must outlive a config reload
(limiter buckets, breaker state): a reload keeps the very same object for a
provider whose settings did not change. ``Snapshot`` is immutable and swapped
whole, so a request sees one consistent config from start to end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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


LIMITER = "limiter"
BREAKER = "breaker"

KEEP: dict[str, Callable[[config.Provider], Any]] = {
    LIMITER: lambda p: (p.rate_limit, p.model_rate_limits),
    BREAKER: lambda p: p.circuit_breaker,
}
"""The extras a changed provider keeps: those whose config inputs compare equal (frozen models)."""


def carry_over(previous: Snapshot | None, cfg: config.ProxyConfig) -> dict[str, ProviderState]:
    """States for ``cfg``'s providers, reusing the previous object when a provider is unchanged.

    A changed provider gets a new state, which still takes over each policy
    object whose own settings did not change (an edited timeout keeps an open
    breaker; an edited rate limit starts with full buckets).
    """
    old = previous.providers if previous else {}
    result = {}
    for name, provider in cfg.providers.items():
        kept = old.get(name)
        if kept is not None and kept.provider == provider:
            result[name] = kept
            continue
        fresh = ProviderState(name, provider)
        if kept is not None:
            for extra, inputs in KEEP.items():
                if extra in kept.extras and inputs(kept.provider) == inputs(provider):
                    fresh.extras[extra] = kept.extras[extra]
        result[name] = fresh
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
