"""Rate limits of one provider: all-or-nothing reservations over its buckets.

A provider has up to four buckets: requests and tokens for the provider, and
requests and tokens for the upstream model when ``modelRateLimits`` names it.
``acquire`` takes from every bucket that applies or from none, at one common
start time, so a request waiting on one bucket holds its place in all of them.

Tokens are reserved before the request is sent (prompt estimate plus the
completion budget, see ``tokens.py``) and settled once usage is known: a
refund when the answer was shorter, debt when it was longer. Debt delays later
requests, so parallel requests cannot overshoot the limit for long.

Waiting: a limit with ``maxWait > 0`` lets a request wait up to that long for
its own bucket; the limiter computes the wait and the async layer sleeps it.
An upstream 429 pauses the whole provider (``pause``); while paused, a request
may wait up to the largest ``maxWait`` of its limits, else it is refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from llmgw_proxy import config
from llmgw_proxy.policies import buckets, clock, tokens

# Rates like 1/60 per second do not divide exactly; a wait of 60.000000001 s
# must not be refused by a maxWait of 60.
_SLACK = 1e-9


@dataclasses.dataclass(frozen=True)
class Headers:
    """Values for OpenAI's x-ratelimit-* headers; None where no such limit is set.

    Each figure comes from the tighter of the provider and model buckets.
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind in ("requests", "tokens"):
            limit = getattr(self, f"limit_{kind}")
            if limit is None:
                continue
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(getattr(self, f"remaining_{kind}"))
            out[f"x-ratelimit-reset-{kind}"] = format_reset(getattr(self, f"reset_{kind}"))
        return out


def format_reset(seconds: float) -> str:
    """Durations the way OpenAI writes them: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


class Reservation:
    """One request slot and ``tokens`` that ``acquire`` booked; settle or cancel it once.

    The capacity is booked for ``wait`` seconds from now (0: go now); the caller waits that long.
    """

    __slots__ = ("_clock", "_done", "_plan", "tokens", "wait")

    def __init__(self, plan: _Plan, tokens: int, wait: float, clock: clock.Clock) -> None:
        self._plan = plan
        self.tokens = tokens
        self.wait = wait
        self._clock = clock
        self._done = False

    def __repr__(self) -> str:
        return f"Reservation(tokens={self.tokens!r}, wait={self.wait!r})"

    def settle(self, actual_tokens: int) -> None:
        """Correct the token buckets to the usage reported (or estimated) for the answer."""
        if self._done:
            return
        self._done = True
        now = self._clock()
        for bucket in self._plan.token_buckets:
            bucket.adjust(actual_tokens - self.tokens, now)

    def cancel(self) -> None:
        """The request was never sent: give back everything, its request slot included."""
        if self._done:
            return
        self._done = True
        now = self._clock()
        for bucket in self._plan.request_buckets:
            bucket.adjust(-1, now)
        for bucket in self._plan.token_buckets:
            bucket.adjust(-self.tokens, now)


@dataclasses.dataclass(frozen=True)
class Refused:
    """Answer 429. ``retry_after`` is None when the request can never fit (larger than a burst)."""

    reason: str  # "requests", "tokens", "paused" or "too_large"
    retry_after: float | None
    headers: Headers


class _Buckets:
    """The buckets of one RateLimit, with the defaults the config documents."""

    def __init__(self, limit: config.RateLimit) -> None:
        self.max_wait = limit.max_wait
        self.default_max_tokens = limit.default_max_tokens
        self.requests: buckets.TokenBucket | None = None
        self.tokens: buckets.TokenBucket | None = None
        if limit.requests_per_minute is not None:
            self.requests = buckets.TokenBucket(
                per_minute=limit.requests_per_minute,
                burst=limit.request_burst or limit.requests_per_minute,
            )
        if limit.tokens_per_minute is not None:
            self.tokens = buckets.TokenBucket(
                per_minute=limit.tokens_per_minute, burst=limit.token_burst or limit.tokens_per_minute
            )


_REQUESTS = "requests"
_TOKENS = "tokens"


class _Plan:
    """What ``acquire`` checks for one model, worked out once from the fixed groups of buckets.

    ``checks`` keeps the groups' order (provider, then model; requests, then tokens), which
    decides the reason a refusal gives when several buckets are too slow.
    """

    __slots__ = ("checks", "default_max_tokens", "max_wait", "request_buckets", "token_buckets")

    def __init__(self, groups: list[_Buckets]) -> None:
        checks: list[tuple[buckets.TokenBucket, str, float]] = []
        for group in groups:
            limit = group.max_wait + _SLACK
            if group.requests is not None:
                checks.append((group.requests, _REQUESTS, limit))
            if group.tokens is not None:
                checks.append((group.tokens, _TOKENS, limit))
        self.checks = tuple(checks)
        self.request_buckets = tuple(b for b, kind, _ in checks if kind == _REQUESTS)
        self.token_buckets = tuple(b for b, kind, _ in checks if kind == _TOKENS)
        self.max_wait = max((g.max_wait for g in groups), default=0.0) + _SLACK
        # The model's own limit says how much completion to reserve, else the provider's.
        self.default_max_tokens = (
            groups[-1].default_max_tokens if groups else config.RateLimit().default_max_tokens
        )


class ProviderLimiter:
    def __init__(
        self,
        limit: config.RateLimit | None,
        model_limits: Mapping[str, config.RateLimit],
        clock: clock.Clock,
    ) -> None:
        self._clock = clock
        self._provider = _Buckets(limit) if limit is not None else None
        self._models = {model: _Buckets(lim) for model, lim in model_limits.items()}
        # One plan per named model plus one for every other model: the caller's model names
        # are unbounded (a wildcard route), so plans are never made for them on demand.
        self._default_plan = _Plan([self._provider] if self._provider is not None else [])
        self._plans = {model: _Plan(self._groups(model)) for model in self._models}
        self.paused_until = -math.inf

    def pause(self, until: float) -> None:
        """Hold every request until ``until`` (clock time), e.g. from an upstream 429's Retry-After."""
        self.paused_until = max(self.paused_until, until)

    def resume(self) -> None:
        """End a pause now."""
        self.paused_until = -math.inf

    def admit(self, model: str, endpoint: str, body: dict[str, Any]) -> Reservation | Refused:
        """``acquire`` for a request body: its prompt estimate plus its completion budget."""
        plan = self._plans.get(model, self._default_plan)
        return self._acquire(plan, model, tokens.reservation(endpoint, body, plan.default_max_tokens))

    def acquire(self, model: str, tokens: int) -> Reservation | Refused:
        """Reserve one request and ``tokens`` for ``model`` in every bucket that applies, or none."""
        return self._acquire(self._plans.get(model, self._default_plan), model, tokens)

    def _acquire(self, plan: _Plan, model: str, tokens: int) -> Reservation | Refused:
        now = self._clock()
        start = now
        if self.paused_until > now:
            start = self.paused_until
            if start - now > plan.max_wait:
                return Refused("paused", start - now, self.headers(model))
        amount = float(tokens)
        too_long: str | None = None
        for bucket, kind, limit in plan.checks:
            earliest = bucket.earliest(1.0 if kind == _REQUESTS else amount, now)
            if earliest is None:
                return Refused("too_large", None, self.headers(model))
            if too_long is None and earliest - now > limit:
                too_long = kind
            if earliest > start:
                start = earliest
        if too_long is not None:
            return Refused(too_long, start - now, self.headers(model))
        for bucket in plan.request_buckets:
            bucket.book(1.0, start)
        for bucket in plan.token_buckets:
            bucket.book(amount, start)
        return Reservation(plan, tokens, start - now, self._clock)

    def take_fill(self, previous: ProviderLimiter) -> None:
        """Start each bucket at the fill of ``previous``'s same bucket, as a share of its burst.

        Buckets are matched by group (the provider, or a model) and kind; a
        bucket new to this limiter starts full.
        """
        now = self._clock()
        pairs = [(self._provider, previous._provider)]
        pairs.extend((group, previous._models.get(model)) for model, group in self._models.items())
        for new, old in pairs:
            if new is None or old is None:
                continue
            for mine, theirs in ((new.requests, old.requests), (new.tokens, old.tokens)):
                if mine is not None and theirs is not None:
                    mine.take_fill(theirs, now)

    def remaining_share(self) -> float | None:
        """The tightest bucket's level as a share of its burst, 0 in debt; None without buckets."""
        now = self._clock()
        groups = [self._provider] if self._provider is not None else []
        groups.extend(self._models.values())
        present = [b for g in groups for b in (g.requests, g.tokens) if b is not None]
        if not present:
            return None
        return max(0.0, min(b.level(now) / b.burst for b in present))

    def headers(self, model: str) -> Headers:
        now = self._clock()
        groups = self._groups(model)
        req = self._tightest([g.requests for g in groups], now)
        tok = self._tightest([g.tokens for g in groups], now)
        return Headers(*req, *tok)

    @staticmethod
    def _tightest(
        candidates: list[buckets.TokenBucket | None], now: float
    ) -> tuple[int | None, int | None, float | None]:
        present = [b for b in candidates if b is not None]
        if not present:
            return None, None, None
        bucket = min(present, key=lambda b: b.level(now))
        return int(bucket.per_minute), max(0, math.floor(bucket.level(now))), bucket.full_in(now)

    def _groups(self, model: str) -> list[_Buckets]:
        groups = [self._provider] if self._provider is not None else []
        if model in self._models:
            groups.append(self._models[model])
        return groups
