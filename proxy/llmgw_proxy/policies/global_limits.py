"""Global limits and budgets: what the shared store's scripts are asked, and what their answers mean.

The algorithm is the in-memory one (``buckets``: GCRA with reservations that
are settled later), run inside Redis by ``global_reserve.lua`` and
``global_adjust.lua`` so that every sidecar of every gateway using a policy
shares one set of buckets. This module is pure: it names the keys, builds
the scripts' arguments and reads their replies. The I/O is ``llmgw_proxy.shared``.

Keys are ``<prefix>:{<sharedId>}:<what>``: the braces are a Redis Cluster hash
tag, so all keys of one policy (one script's keys) live on one shard. A key
holds a bucket's time or a budget's count, never a provider key or a prompt.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from collections.abc import Sequence

from llmgw_proxy import config
from llmgw_proxy.policies import budgets

REQUESTS = "requests"
TOKENS = "tokens"
BUDGET = "budget"
_SLACK = 1e-9  # as in limits: a wait of 60.000000001 s fits a maxWait of 60


_NOW = "local now = NOW"
_TIME = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1000000"


def script(name: str) -> str:
    """The text of ``global_reserve.lua`` or ``global_adjust.lua``, run alone (reading Redis's TIME)."""
    return _text(name).replace(_NOW, _TIME, 1)


def _text(name: str) -> str:
    return importlib.resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


RESERVE = "r"
ADJUST = "a"


def batch_script() -> str:
    """``global_batch.lua`` with the two scripts as its functions: any number of reserves and
    adjusts in one script call (one command to send and one reply to read)."""
    return (
        f"local function reserve(KEYS, ARGV, NOW)\n{_text('global_reserve')}end\n"
        f"local function adjust(KEYS, ARGV, NOW)\n{_text('global_adjust')}end\n"
        f"{_text('global_batch')}"
    )


def batch_args(
    calls: Sequence[tuple[str, Sequence[str], Sequence[float | int]]],
) -> tuple[list[str], list[str | float | int]]:
    """The keys and arguments of ``global_batch.lua`` for ``calls``: (RESERVE or ADJUST, the
    script's keys, its arguments) each; its reply is the list of their replies, in order."""
    keys: list[str] = []
    head: list[str | float | int] = [len(calls)]
    rest: list[str | float | int] = []
    for kind, call_keys, call_args in calls:
        head += [kind, len(call_keys), len(call_args)]
        keys += call_keys
        rest += call_args
    return keys, head + rest


def namespace(prefix: str, shared_id: str) -> str:
    return f"{prefix}:{{{shared_id}}}"


@dataclasses.dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    kind: str  # REQUESTS or TOKENS
    rate: float  # per second
    burst: float
    max_wait: float


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one admission checks for one model: global buckets (provider, then model) and budget."""

    buckets: tuple[Bucket, ...]
    budget: config.TokenBudget | None
    default_max_tokens: int

    @property
    def empty(self) -> bool:
        return not self.buckets and self.budget is None


def _buckets(space: str, scope: str, limit: config.RateLimit | None) -> list[Bucket]:
    if limit is None or limit.scope is not config.LimitScope.GLOBAL:
        return []
    out = []
    wait = limit.max_wait + _SLACK
    if limit.requests_per_minute is not None:
        burst = limit.request_burst or limit.requests_per_minute
        out.append(Bucket(f"{space}:{scope}:rq", REQUESTS, limit.requests_per_minute / 60, burst, wait))
    if limit.tokens_per_minute is not None:
        burst = limit.token_burst or limit.tokens_per_minute
        out.append(Bucket(f"{space}:{scope}:tk", TOKENS, limit.tokens_per_minute / 60, burst, wait))
    return out


def plans(prefix: str, provider: config.Provider) -> tuple[Plan, dict[str, Plan]]:
    """The plan for models without their own limit, and one per model of ``modelRateLimits``."""
    assert provider.shared_id is not None
    space = namespace(prefix, provider.shared_id)
    base = _buckets(space, "p", provider.rate_limit)
    default_tokens = (provider.rate_limit or config.RateLimit()).default_max_tokens
    default = Plan(tuple(base), provider.budget, default_tokens)
    per_model = {
        model: Plan(
            tuple(base + _buckets(space, f"m:{model}", limit)), provider.budget, limit.default_max_tokens
        )
        for model, limit in provider.model_rate_limits.items()
    }
    return default, per_model


def budget_keys(prefix: str, shared_id: str, periods: Sequence[budgets.Period]) -> list[str]:
    space = namespace(prefix, shared_id)
    return [f"{space}:budget:{p.name}:{p.label}" for p in periods]


def reserve_args(
    plan: Plan, tokens: int, budget_keys: Sequence[str], periods: Sequence[budgets.Period]
) -> tuple[list[str], list[float | int]]:
    keys = [b.key for b in plan.buckets] + list(budget_keys)
    args: list[float | int] = [len(plan.buckets), len(periods)]
    for b in plan.buckets:
        args += [b.rate, b.burst, 1 if b.kind == REQUESTS else tokens, b.max_wait]
    for p in periods:
        args += [p.limit, tokens, p.ttl]
    return keys, args


def adjust_args(
    plan: Plan, requests: int, tokens: int, budget_keys: Sequence[str]
) -> tuple[list[str], list[float | int]]:
    """Take ``requests`` more from the request buckets and ``tokens`` more from the token
    buckets and budgets (negative: give back)."""
    moved = [b for b in plan.buckets if (requests if b.kind == REQUESTS else tokens) != 0]
    keys = [b.key for b in moved] + list(budget_keys)
    args: list[float | int] = [len(moved), len(budget_keys)]
    for b in moved:
        args += [b.rate, requests if b.kind == REQUESTS else tokens]
    args += [tokens] * len(budget_keys)
    return keys, args


@dataclasses.dataclass(frozen=True, slots=True)
class Granted:
    wait: float  # seconds until the reserved capacity is there
    used: tuple[int, ...]  # each budget period's count, this reservation included


@dataclasses.dataclass(frozen=True, slots=True)
class Denied:
    reason: str  # REQUESTS, TOKENS, "too_large" or BUDGET
    retry_after: float | None  # None: waiting does not help (too large, or a spent budget)
    period: int | None = None  # BUDGET: the index of the period that is spent
    used: int | None = None


class BadReply(ValueError):
    """The store answered something the script never returns (another script under its name?)."""


def read_reserve(plan: Plan, reply: object) -> Granted | Denied:
    if not isinstance(reply, list) or not reply or not all(isinstance(v, int) for v in reply):
        raise BadReply("reserve: not a list of integers")
    code = reply[0]
    if code == 0 and len(reply) >= 2:
        return Granted(max(0.0, reply[1] / 1e6), tuple(reply[2:]))
    if code in (1, 2) and len(reply) >= 2 and 1 <= reply[1] <= len(plan.buckets):
        bucket = plan.buckets[reply[1] - 1]
        if code == 2:
            return Denied("too_large", None)
        if len(reply) >= 3:
            return Denied(bucket.kind, max(0.0, reply[2] / 1e6))
    if code == 3 and len(reply) >= 3:
        return Denied(BUDGET, None, reply[1] - 1, reply[2])
    raise BadReply(f"reserve: unexpected reply code {code}")


def fallback_limit(limit: config.RateLimit | None) -> config.RateLimit | None:
    """The limit a sidecar enforces alone while the store is away: a global one split by
    ``fallbackShare`` (ceil, as the operator splits ``scope: shared``); a local one as it is."""
    if limit is None or limit.scope is not config.LimitScope.GLOBAL:
        return limit

    def split(value: int | None) -> int | None:
        return None if value is None else math.ceil(value / limit.fallback_share)

    return limit.model_copy(
        update={
            "requests_per_minute": split(limit.requests_per_minute),
            "tokens_per_minute": split(limit.tokens_per_minute),
            "request_burst": split(limit.request_burst),
            "token_burst": split(limit.token_burst),
        }
    )


def local_limit(limit: config.RateLimit | None) -> config.RateLimit | None:
    """The part of a limit this sidecar enforces in memory whether the store answers or not."""
    return limit if limit is not None and limit.scope is config.LimitScope.LOCAL else None
