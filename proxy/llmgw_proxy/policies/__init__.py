"""Pure policy algorithms of the sidecar: no sockets, no aiohttp, no metrics.

Each takes its config model from ``llmgw_proxy.config``, a ``clock.Clock`` and,
where randomness is involved, a random source; I/O layers wire them into the
request path and turn their results and listener calls into metrics and logs.

=====================================  ==================
Behaviour                              Module
=====================================  ==================
Monotonic clock type                   ``clock``
One continuously refilled bucket       ``buckets``
Per-provider/per-model limits,         ``limits``
reserve/settle, 429 headers, pause
Token estimates for reservations       ``tokens``
Global limits and budgets: store keys, ``global_limits`` (+ ``global_*.lua``)
script arguments, replies, fallback
Budget periods (UTC day and month)     ``budgets``
Circuit breaker state machine          ``breaker``
Retryable outcomes, backoff delays,    ``backoff``
Retry-After parsing
Retries as a ratio of requests         ``retry_budget``
Cache keys and cacheability            ``cache_key``
Bounded in-memory LRU + Store protocol ``cache_store``
Forward proxy choice (NO_PROXY),       ``egress``
address order for happy eyeballs
=====================================  ==================

Import the modules, not their names: ``limits.ProviderLimiter(...)``.
"""

from llmgw_proxy.policies import (
    backoff,
    breaker,
    buckets,
    budgets,
    cache_key,
    cache_store,
    clock,
    egress,
    global_limits,
    limits,
    retry_budget,
    tokens,
)

__all__ = [
    "backoff",
    "breaker",
    "buckets",
    "budgets",
    "cache_key",
    "cache_store",
    "clock",
    "egress",
    "global_limits",
    "limits",
    "retry_budget",
    "tokens",
]
