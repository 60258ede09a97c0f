"""Each provider's limiter and breaker: created on first use, kept across reloads.

They live in ``state.ProviderState.extras`` under ``LIMITER`` and ``BREAKER``;
``state.KEEP`` says when a reload carries one over to a changed provider.

A provider without ``rateLimit`` gets a limiter only when an upstream 429
must pause it; a provider without ``circuitBreaker`` never gets a breaker.
The clock is the event loop's, read when the object is created.
"""

from __future__ import annotations

import asyncio
import logging

from llmgw_proxy import metrics, state
from llmgw_proxy.policies import breaker, limits

log = logging.getLogger("llmgw.breaker")

LIMITER = state.LIMITER
BREAKER = state.BREAKER


def limiter(provider: state.ProviderState, *, create: bool = False) -> limits.ProviderLimiter | None:
    """The provider's limiter; None when it has no limits (unless ``create``: an upstream 429 pauses it)."""
    found: limits.ProviderLimiter | None = provider.extras.get(LIMITER)
    if found is not None:
        return found
    p = provider.provider
    if p.rate_limit is None and not p.model_rate_limits and not create:
        return None
    made = limits.ProviderLimiter(p.rate_limit, p.model_rate_limits, asyncio.get_running_loop().time)
    provider.extras[LIMITER] = made
    return made


def breaker_of(provider: state.ProviderState, metrics_: metrics.Metrics) -> breaker.Breaker | None:
    found: breaker.Breaker | None = provider.extras.get(BREAKER)
    if found is not None:
        return found
    policy = provider.provider.circuit_breaker
    if policy is None:
        return None
    made = breaker.Breaker(policy, asyncio.get_running_loop().time, [_on_transition(provider.name, metrics_)])
    provider.extras[BREAKER] = made
    return made


def _on_transition(name: str, metrics_: metrics.Metrics) -> breaker.Listener:
    def listener(old: breaker.State, new: breaker.State, reason: str) -> None:
        metrics_.count(metrics_.breaker_transitions, (name, old.value, new.value))
        level = logging.WARNING if new is breaker.State.OPEN else logging.INFO
        log.log(
            level, "breaker", extra={"provider": name, "from": old.value, "to": new.value, "reason": reason}
        )

    return listener
