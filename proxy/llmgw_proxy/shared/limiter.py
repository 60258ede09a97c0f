"""Global limits and budgets of one provider, in the shared store, with the per-pod fallback.

``admit`` makes one round trip: the reserve script takes one request and the
token estimate from every global bucket and the estimate from every budget
period, or nothing. ``GlobalReservation.settle`` and ``cancel`` correct that
afterwards, as the in-memory reservation does, in the store's next batch (the
answer is not held back for it, and at one request at a time it rides with the
next admission's round trip); a settle that cannot be sent is dropped, so the
estimate stays booked, which errs on the side of the provider's quota.

When the store cannot answer (down, slow, busy), the global limits fall back
to ``fallback``: an in-memory limiter holding each global limit split by its
``fallbackShare``. A budget is not enforced meanwhile: no sidecar can know the
count alone; the fallbacks are counted and the store's state is reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from llmgw_proxy import config
from llmgw_proxy.policies import budgets, clock, global_limits, limits, tokens
from llmgw_proxy.shared import store as store_


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetUse:
    period: str
    used: int
    limit: int


class GlobalReservation:
    """The global part of one try's admission; settle or cancel it once."""

    __slots__ = ("_budget_keys", "_done", "_owner", "_plan", "tokens", "wait")

    def __init__(
        self, owner: GlobalLimiter, plan: global_limits.Plan, budget_keys: list[str], tokens: int, wait: float
    ) -> None:
        self._owner, self._plan, self._budget_keys = owner, plan, budget_keys
        self.tokens, self.wait = tokens, wait
        self._done = False

    def settle(self, actual_tokens: int) -> None:
        if not self._done:
            self._done = True
            self._owner._adjust(self._plan, 0, actual_tokens - self.tokens, self._budget_keys)

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._owner._adjust(self._plan, -1, -self.tokens, self._budget_keys)


Reservation = GlobalReservation | limits.Reservation
"""A global admission: from the store, or from the fallback limiter while it is away."""


class GlobalLimiter:
    def __init__(
        self,
        name: str,
        provider: config.Provider,
        store: store_.Store,
        clock_: clock.Clock,
        wall: Callable[[], float] = time.time,
    ) -> None:
        assert provider.shared_id is not None
        self.name = name
        self.store = store
        self._prefix, self._id = store.cfg.key_prefix, provider.shared_id
        self._default, self._plans = global_limits.plans(self._prefix, provider)
        self._wall = wall
        self.budget = provider.budget
        self.budget_used: dict[str, BudgetUse] = {}  # by period, as the store last said
        fallback = global_limits.fallback_limit(provider.rate_limit)
        fallback_models = {m: global_limits.fallback_limit(r) for m, r in provider.model_rate_limits.items()}
        self.fallback = limits.ProviderLimiter(
            fallback if fallback is not None and fallback.scope is config.LimitScope.GLOBAL else None,
            {
                m: r
                for m, r in fallback_models.items()
                if r is not None and r.scope is config.LimitScope.GLOBAL
            },
            clock_,
        )

    def plan(self, model: str) -> global_limits.Plan:
        return self._plans.get(model, self._default)

    async def admit(self, model: str, endpoint: str, body: dict[str, Any]) -> Reservation | limits.Refused:
        plan = self.plan(model)
        amount = tokens.reservation(endpoint, body, plan.default_max_tokens)
        periods = budgets.periods(self.budget, self._wall()) if self.budget is not None else ()
        keys = global_limits.budget_keys(self._prefix, self._id, periods)
        reply = await self.store.reserve(*global_limits.reserve_args(plan, amount, keys, periods))
        if reply is None:
            return self._fall_back(model, plan, amount)
        try:
            decision = global_limits.read_reserve(plan, reply)
        except global_limits.BadReply:
            self.store.failures[store_.ERROR] = self.store.failures.get(store_.ERROR, 0) + 1
            return self._fall_back(model, plan, amount)
        if isinstance(decision, global_limits.Denied):
            if decision.period is not None and decision.used is not None:
                p = periods[decision.period]
                self.budget_used[p.name] = BudgetUse(p.name, decision.used, p.limit)
            return limits.Refused(decision.reason, decision.retry_after, limits.Headers())
        for p, used in zip(periods, decision.used, strict=False):
            self.budget_used[p.name] = BudgetUse(p.name, used, p.limit)
        return GlobalReservation(self, plan, keys, amount, decision.wait)

    def _fall_back(self, model: str, plan: global_limits.Plan, amount: int) -> Reservation | limits.Refused:
        if plan.buckets:
            self.store.fell_back(self.name, "limit")
        if plan.budget is not None:
            self.store.fell_back(self.name, "budget")
        return self.fallback.acquire(model, amount)

    def _adjust(self, plan: global_limits.Plan, requests: int, tokens_: int, budget_keys: list[str]) -> None:
        if requests == 0 and tokens_ == 0:
            return
        keys, args = global_limits.adjust_args(plan, requests, tokens_, budget_keys)
        if keys:  # else no bucket or budget counts what changed (a settle with request limits only)
            self.store.settle(keys, args, lambda reply: self._settled(keys, reply))

    def _settled(self, keys: list[str], reply: object) -> None:
        if not isinstance(reply, list):
            return
        for key, used in zip(keys[len(keys) - len(reply) :], reply, strict=False):
            period = key.rsplit(":", 2)[1]
            known = self.budget_used.get(period)
            if isinstance(used, int) and used >= 0 and known is not None:
                self.budget_used[period] = BudgetUse(period, used, known.limit)
