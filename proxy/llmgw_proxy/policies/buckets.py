"""One token bucket, refilled continuously, that can book capacity ahead.

The bucket is kept as a "theoretical arrival time" (GCRA): ``_tat`` is the
moment at which everything booked so far has been paid back by the refill.
The level at ``t`` is ``burst - rate * max(0, tat - t)``: it never exceeds
``burst`` and goes negative when usage settled above its reservation (debt).

Booking for a start time in the future moves ``tat`` right away, so the next
caller sees the capacity as taken and queues behind it instead of stampeding
when the time comes. That is why a single float of state is enough.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, *, per_minute: float, burst: float) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError("a bucket needs a positive rate and burst")
        self.per_minute = per_minute
        self.burst = burst
        self.rate = per_minute / 60.0  # per second
        self._tat = -math.inf

    def level(self, now: float) -> float:
        """Capacity available at ``now``; negative while in debt."""
        return self.burst - self.rate * max(0.0, self._tat - now)

    def earliest(self, amount: float, now: float) -> float | None:
        """The first time at or after ``now`` when ``amount`` fits, or None if it never can."""
        if amount > self.burst:
            return None
        return max(now, self._tat - (self.burst - amount) / self.rate)

    def book(self, amount: float, start: float) -> None:
        """Take ``amount`` at ``start``; the caller checked ``start >= earliest(amount, ...)``."""
        self._tat = max(self._tat, start) + amount / self.rate

    def adjust(self, delta: float, now: float) -> None:
        """Take ``delta`` more (positive: debt) or give ``-delta`` back (negative: refund).

        A refund never lifts the level above the burst: time already past is
        not credited twice.
        """
        self._tat = max(self._tat, now) + delta / self.rate

    def take_fill(self, previous: TokenBucket, now: float) -> None:
        """Start at ``previous``'s level as a share of its burst, debt included.

        A re-split (the operator changed this pod's share of a limit) must not
        hand out a full new bucket: that would admit a whole extra burst on
        every scale event. Keeping the share keeps what the pod has used.
        """
        share = previous.level(now) / previous.burst
        self._tat = now + (1.0 - share) * self.burst / self.rate

    def full_in(self, now: float) -> float:
        """Seconds until the bucket is full again (the x-ratelimit-reset-* value)."""
        return max(0.0, self._tat - now)
