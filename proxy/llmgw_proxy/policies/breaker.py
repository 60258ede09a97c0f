"""A circuit breaker per provider: closed -> open -> half-open -> closed or open.

Closed: every request goes. The breaker opens after ``consecutiveFailures``
failures in a row, or when failures reach ``failureRatio`` of the outcomes in
the rolling ``window`` once at least ``minimumRequests`` were seen there.

Open: nothing goes for the open duration. It starts at ``openDuration``,
doubles each time a half-open trial fails (capped at ``maxOpenDuration``),
and resets when the breaker closes.

Half-open: at most ``halfOpenRequests`` probes go. One probe failure opens
again; once that many probes succeeded, the breaker closes.

What counts (``classify``): failures are the kinds in ``failOn`` (5xx,
timeout, connection). A 429 and other 4xx are *ignored*: neither success nor
failure, in neither the streak nor the ratio. A client's bad request says
nothing about the upstream's health, so it must neither open the breaker for
everyone nor dilute a real failure ratio; a 429 pauses the rate limiter
instead. An ignored probe frees its slot so another probe can go.

Each admission returns a ``Ticket``; an outcome only counts in the state
(generation) that admitted it, so a slow answer from before the breaker
opened cannot close it, and one admitted while closed is no probe.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Callable, Iterable

from llmgw_proxy import config
from llmgw_proxy.policies import clock


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


Listener = Callable[[State, State, str], None]
"""Called as ``listener(old_state, new_state, reason)`` on every transition."""


def classify(
    policy: config.CircuitBreaker, *, status: int | None = None, failure: config.FailureKind | None = None
) -> Outcome:
    """An upstream answer's ``status``, or a ``failure`` that left none, as the breaker sees it."""
    if failure is not None:
        return Outcome.FAILURE if failure in policy.fail_on else Outcome.IGNORED
    if status is None:
        raise ValueError("classify needs a status or a failure")
    if status >= 500:
        return Outcome.FAILURE if config.FailureKind.SERVER_ERROR in policy.fail_on else Outcome.IGNORED
    if status >= 400:
        return Outcome.IGNORED
    return Outcome.SUCCESS


@dataclasses.dataclass(frozen=True, slots=True)
class Ticket:
    generation: int
    probe: bool


class Breaker:
    def __init__(
        self, policy: config.CircuitBreaker, clock: clock.Clock, listeners: Iterable[Listener] = ()
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._listeners = list(listeners)
        self._state = State.CLOSED
        self._generation = 0
        self._ticket = Ticket(0, probe=False)  # the closed state's one ticket per generation
        self._streak = 0
        self._window: collections.deque[tuple[float, bool]] = collections.deque()
        self._failures_in_window = 0
        self._base = min(policy.open_duration, policy.max_open_duration)
        self.open_for = self._base
        self.opened_at = 0.0
        self._probes = 0
        self._probe_successes = 0
        self.since = clock()  # when the state last changed: what a status report shows
        self.last_failure: tuple[config.FailureKind, float] | None = None  # (kind, clock time)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row counted in the current state (the closed state's streak)."""
        return self._streak

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() >= self.opened_at + self.open_for:
            self._move(State.HALF_OPEN, "open duration elapsed")
            self.since = self.opened_at + self.open_for  # when it happened, not when it was seen
        return self._state

    def retry_after(self) -> float:
        """Seconds until the breaker admits probes; 0 unless open."""
        if self.state is not State.OPEN:
            return 0.0
        return self.opened_at + self.open_for - self._clock()

    def acquire(self) -> Ticket | None:
        """Admit a request (and return its ticket) or refuse it with None."""
        state = self.state
        if state is State.CLOSED:
            return self._ticket
        if state is State.HALF_OPEN and self._probes < self.policy.half_open_requests:
            self._probes += 1
            return Ticket(self._generation, probe=True)
        return None

    def record(self, ticket: Ticket, outcome: Outcome, kind: config.FailureKind | None = None) -> None:
        """Count ``outcome`` for ``ticket``; ``kind`` says what a failure was, for status reports."""
        if outcome is Outcome.FAILURE:
            # Noted whatever state it counts in: a late failure is still the provider's latest.
            self.last_failure = (kind or config.FailureKind.SERVER_ERROR, self._clock())
        if ticket is self._ticket:
            # Only the closed state hands out its generation's ticket, and any move replaces it:
            # this outcome belongs to the closed state that is still current, with no state
            # (and clock) to read. Nearly every outcome takes this path.
            self._record_closed(outcome)
            return
        state = self.state
        if ticket.generation != self._generation:
            return
        if state is State.HALF_OPEN:
            self._record_probe(outcome)
        elif state is State.CLOSED:
            self._record_closed(outcome)

    def record_status(self, ticket: Ticket, status: int) -> None:
        """``record`` for an upstream answer with this HTTP status, classified by the policy."""
        self.record(ticket, classify(self.policy, status=status), config.FailureKind.SERVER_ERROR)

    def _record_probe(self, outcome: Outcome) -> None:
        if outcome is Outcome.FAILURE:
            self._open(min(self.open_for * 2, self.policy.max_open_duration), "probe failed")
        elif outcome is Outcome.IGNORED:
            self._probes -= 1
        else:
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_requests:
                self.open_for = self._base
                self._move(State.CLOSED, "probes succeeded")

    def _record_closed(self, outcome: Outcome) -> None:
        if outcome is Outcome.IGNORED:
            return
        failed = outcome is Outcome.FAILURE
        ratio = self.policy.failure_ratio
        if ratio is not None:
            # Only a ratio needs the window: at thousands of requests a second it holds
            # a tuple per outcome, which the garbage collector would walk for nothing.
            now = self._clock()
            self._window.append((now, failed))
            self._failures_in_window += failed
            while self._window and self._window[0][0] <= now - self.policy.window:
                self._failures_in_window -= self._window.popleft()[1]
        self._streak = self._streak + 1 if failed else 0
        limit = self.policy.consecutive_failures
        if limit is not None and self._streak >= limit:
            self._open(self._base, f"{self._streak} consecutive failures")
            return
        seen = len(self._window)
        enough = seen >= self.policy.minimum_requests
        if ratio is not None and enough and self._failures_in_window >= ratio * seen:
            self._open(self._base, f"{self._failures_in_window} of {seen} requests failed")

    def _open(self, duration: float, reason: str) -> None:
        self.open_for = duration
        self.opened_at = self._clock()
        self._move(State.OPEN, reason)

    def _move(self, new: State, reason: str) -> None:
        old, self._state = self._state, new
        self.since = self._clock()
        self._generation += 1
        self._ticket = Ticket(self._generation, probe=False)
        self._streak = self._probes = self._probe_successes = self._failures_in_window = 0
        self._window.clear()
        for listener in self._listeners:
            listener(old, new, reason)
