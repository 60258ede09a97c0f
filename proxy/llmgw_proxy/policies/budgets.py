"""Token budget periods: which UTC day and month a request counts in, and when each ends.

A budget is counted per calendar period in UTC (``tokensPerDay`` resets at
00:00 UTC, ``tokensPerMonth`` on the 1st at 00:00 UTC), like a provider's
billing. The count lives in the shared store under a key that names the
period, so a new period starts from zero without anyone resetting it; the key
expires ``KEEP`` seconds after its period ended, which bounds the store's
memory and leaves yesterday's figure readable for a day.
"""

from __future__ import annotations

import dataclasses
import datetime

from llmgw_proxy import config

KEEP = 86_400
DAY = "day"
MONTH = "month"


@dataclasses.dataclass(frozen=True, slots=True)
class Period:
    name: str  # DAY or MONTH
    label: str  # 2026-12-01 or 2026-12: part of the store key
    limit: int
    ends: float  # wall-clock seconds (epoch) when the period ends
    ttl: int  # seconds the count is kept from now


def periods(budget: config.TokenBudget, wall: float) -> tuple[Period, ...]:
    """The periods ``budget`` counts in at wall-clock time ``wall`` (seconds since the epoch)."""
    now = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    out = []
    if budget.tokens_per_day is not None:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + datetime.timedelta(days=1)
        out.append(_period(DAY, start.strftime("%Y-%m-%d"), budget.tokens_per_day, end, wall))
    if budget.tokens_per_month is not None:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
        out.append(_period(MONTH, start.strftime("%Y-%m"), budget.tokens_per_month, end, wall))
    return tuple(out)


def _period(name: str, label: str, limit: int, end: datetime.datetime, wall: float) -> Period:
    ends = end.timestamp()
    return Period(name, label, limit, ends, max(1, int(ends - wall) + 1 + KEEP))
