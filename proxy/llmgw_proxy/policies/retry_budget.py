"""A provider's retry budget: retries are allowed only as a fraction of its requests.

Per-try retries alone multiply load when a provider is struggling: every
request tries ``attempts`` times, just when the provider can least take it.
A budget (as in Envoy and Linkerd) caps retries at a ratio of the requests:
over the last ``budgetWindow`` seconds, a retry may go while

    retries + 1 <= budgetRatio * requests + budgetMinPerSecond * budgetWindow

where ``requests`` counts first tries only. The floor keeps retries possible
for a provider that sees few requests; the ratio bounds the extra load at
``1 + budgetRatio`` times the traffic once there are many.

The window is kept as ``SLOTS`` counters of ``window / SLOTS`` seconds each,
so the memory is fixed whatever the traffic, and the window slides in steps
of one slot (it covers between ``window - window / SLOTS`` and ``window``
seconds).
"""

from __future__ import annotations

import math

from llmgw_proxy import config
from llmgw_proxy.policies import clock

SLOTS = 10


class RetryBudget:
    def __init__(self, policy: config.Retry, clock_: clock.Clock) -> None:
        self.ratio = policy.budget_ratio
        self.floor = policy.budget_min_per_second * policy.budget_window
        self._width = policy.budget_window / SLOTS
        self._clock = clock_
        self._epochs = [-1] * SLOTS  # which slot-sized stretch of time each counter holds
        self._requests = [0] * SLOTS
        self._retries = [0] * SLOTS

    def request(self) -> None:
        """A first try went out. On every request's path: one clock read, no loop."""
        epoch = math.floor(self._clock() / self._width)
        i = epoch % SLOTS
        if self._epochs[i] == epoch:
            self._requests[i] += 1
        else:
            self._epochs[i], self._requests[i], self._retries[i] = epoch, 1, 0

    def try_retry(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        current = self._slot()
        requests, retries = self.totals()
        if retries + 1 > self.ratio * requests + self.floor:
            return False
        self._retries[current] += 1
        return True

    def totals(self) -> tuple[int, int]:
        """Requests and retries in the window."""
        oldest = self._epoch() - SLOTS + 1
        requests = retries = 0
        for i in range(SLOTS):
            if self._epochs[i] >= oldest:
                requests += self._requests[i]
                retries += self._retries[i]
        return requests, retries

    def _epoch(self) -> int:
        return math.floor(self._clock() / self._width)

    def _slot(self) -> int:
        epoch = self._epoch()
        i = epoch % SLOTS
        if self._epochs[i] != epoch:  # the counter held an older stretch: it starts again
            self._epochs[i], self._requests[i], self._retries[i] = epoch, 0, 0
        return i
