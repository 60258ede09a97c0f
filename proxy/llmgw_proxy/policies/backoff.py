"""When to retry an upstream call, and how long to wait first.

``retryable`` says whether an outcome may be retried at all: timeouts,
connection failures, 408, 429 and 5xx may; every other 4xx never is (the same
request would fail the same way), nor 501 and 505, which say the upstream
will never support the request.

``delay`` is exponential backoff with full jitter: a uniform draw from
``[0, min(maxBackoff, baseBackoff * 2**retry)]``, spreading retries of many
clients over the whole interval. A larger Retry-After wins (when the policy
honours it), and a delay that would end past the request's deadline gives up.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from typing import Protocol

from llmgw_proxy import config

_NEVER_RETRIED_5XX = frozenset({501, 505})
_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")


class Random(Protocol):
    """What ``delay`` draws from; ``random.Random`` fits, tests pass a seeded one or a fake."""

    def uniform(self, a: float, b: float) -> float: ...


def retryable(outcome: int | config.FailureKind) -> bool:
    """Whether an upstream status code, or a failure that left none, may be retried."""
    if isinstance(outcome, config.FailureKind):
        return True
    if outcome in (408, 429):
        return True
    return outcome >= 500 and outcome not in _NEVER_RETRIED_5XX


def delay(
    policy: config.Retry,
    tries: int,
    rng: Random,
    *,
    retry_after: float | None = None,
    time_left: float | None = None,
) -> float | None:
    """Seconds to wait before the next try, after ``tries`` tries failed; None: give up.

    ``time_left`` is what remains of the request's deadline (Timeouts.total).
    """
    if tries >= policy.attempts:
        return None
    ceiling = min(policy.max_backoff, policy.base_backoff * 2 ** min(tries - 1, 62))
    wait = rng.uniform(0.0, ceiling)
    if policy.honor_retry_after and retry_after is not None:
        wait = max(wait, retry_after)
    if time_left is not None and wait >= time_left:
        return None
    return wait


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A Retry-After header as seconds from ``now`` (wall-clock epoch seconds); None if unusable.

    Takes delta-seconds (decimals tolerated) or an HTTP-date; a date in the
    past means "now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" zones: HTTP-dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def retry_after(retry_after_ms: str | None, retry_after: str | None, now: float, cap: float) -> float | None:
    """Seconds an upstream asked to wait, from either header (``retry-after-ms`` first), at most ``cap``.

    None when neither header is usable: a garbage value is ignored, never trusted.
    An upstream's Retry-After pauses the whole provider; uncapped, one
    ``Retry-After: 86400`` (or a date a year ahead) would take it out for a day.
    """
    seconds = parse_retry_after_ms(retry_after_ms)
    if seconds is None:
        seconds = parse_retry_after(retry_after, now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(seconds, cap)  # digits past a float's range read as infinity: the cap


def parse_retry_after_ms(value: str | None) -> float | None:
    """OpenAI's and Azure's ``retry-after-ms`` header, as seconds; None if unusable."""
    if value is None:
        return None
    try:
        millis = float(value)
    except ValueError:
        return None
    if not math.isfinite(millis) or millis < 0:
        return None
    return millis / 1000
