"""What one try of a target holds: a circuit breaker ticket and rate-limit reservations.

A ``Hold`` is a context manager around one try. Inside it, ``admit`` asks the
provider's breaker for a ticket, then its limiter for a reservation (one
request and the token estimate), then its global limiter (the shared store's
buckets and budget, one round trip; the per-pod fallback while the store is
away) for another; any may refuse, and what was taken before is given back.
Both reservations are settled or cancelled alike. Whatever was taken is
given back once, when the block ends, according to how the try ended:

- the upstream answered (``answered``): the reservation is settled on the
  tokens the answer used (none for an error status) and the breaker records
  the status;
- the upstream never answered (``failed``: a timeout or connection failure,
  or an answer that broke an ``upstreamLimits`` bound): nothing was used
  there, so the reservation is cancelled; the breaker counts the failure,
  unless the sidecar's own limit stopped the request (``local``: no pooled
  connection came free), which it ignores;
- the upstream answered, then failed its stream (``broke_off``: it timed out or
  dropped the connection after the headers): the reservation is settled on
  what was used, and the breaker counts a timeout or connection failure, not
  the 200 the stream began with. A caller leaving mid-stream is none of this:
  the upstream was serving, and the try counts as the answer it was;
- anything else (the limiter refused, the caller left while the try waited or
  while the answer streamed, a bug): the breaker ticket is ignored, which
  frees a half-open probe slot; the reservation is settled on what was used if
  the upstream had answered, else cancelled.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType

from llmgw_proxy import config, errors
from llmgw_proxy.policies import breaker, limits, tokens
from llmgw_proxy.runtime import state
from llmgw_proxy.shared import limiter as shared_limiter
from llmgw_proxy.steps.call import Call


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerOpen:
    retry_after: float


Refusal = BreakerOpen | limits.Refused


class Hold:
    __slots__ = (
        "_broken",
        "_call",
        "_failure",
        "_status",
        "breaker",
        "global_reservation",
        "reservation",
        "sent",
        "ticket",
    )

    def __init__(self, call: Call) -> None:
        self._call = call
        self.breaker: breaker.Breaker | None = None
        self.ticket: breaker.Ticket | None = None
        self.reservation: limits.Reservation | None = None
        self.global_reservation: shared_limiter.Reservation | None = None
        self.sent = False  # the request went upstream (call.status is this try's from then on)
        self._status: int | None = None
        self._failure: errors.ProxyError | None = None
        self._broken = False

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    async def admit(self, provider: state.ProviderState, model: str) -> Refusal | None:
        """Take a breaker ticket, then reservations for ``model``; None when all were granted."""
        if provider.breaker is not None:
            self.ticket = provider.breaker.acquire()
            if self.ticket is None:
                return BreakerOpen(provider.breaker.retry_after())
            self.breaker = provider.breaker
        if provider.limiter is not None:
            decision = provider.limiter.admit(model, self._call.endpoint, self._call.body)
            if isinstance(decision, limits.Refused):
                return self._refused(provider, model, decision)
            self.reservation = decision
        if provider.global_limiter is not None:
            shared = await provider.global_limiter.admit(model, self._call.endpoint, self._call.body)
            if isinstance(shared, limits.Refused):
                # The local reservation is cancelled on release, as nothing was sent.
                return self._refused(provider, model, shared)
            self.global_reservation = shared
        return None

    def _refused(self, provider: state.ProviderState, model: str, refusal: limits.Refused) -> limits.Refused:
        """Counted here, once, whichever path (attempts or relay) asked."""
        metrics_ = self._call.services.metrics
        label = self._call.snapshot.config.model_label(model)
        metrics_.count(metrics_.ratelimit_rejections, (provider.name, label, refusal.reason))
        return refusal

    @property
    def reserved(self) -> bool:
        """A limit counts this try's tokens, so the answer's usage is wanted."""
        return self.reservation is not None or self.global_reservation is not None

    @property
    def wait(self) -> float:
        """Seconds until the reserved capacity is there (``maxWait`` bounded it); 0 to go now."""
        local = self.reservation.wait if self.reservation is not None else 0.0
        shared = self.global_reservation.wait if self.global_reservation is not None else 0.0
        return max(local, shared)

    def answered(self, status: int) -> None:
        self._status = status

    def failed(self, failure: errors.ProxyError) -> None:
        self._failure = failure

    def broke_off(self, failure: errors.ProxyError) -> None:
        """The upstream answered 200, then ``failure`` ended its stream."""
        self._status, self._failure, self._broken = 200, failure, True

    def _release(self) -> None:
        self._settle_reservation()
        self._record_outcome()

    def _settle_reservation(self) -> None:
        for reservation in (self.reservation, self.global_reservation):
            if reservation is not None:
                self._settle(reservation)

    def _settle(self, reservation: limits.Reservation | shared_limiter.GlobalReservation) -> None:
        if self._status is not None:
            reservation.settle(0 if self._status >= 400 else used(self._call, reservation))
        elif self._failure is None and self.sent and self._call.status:
            reservation.settle(used(self._call, reservation))  # the caller left after the upstream answered
        else:
            reservation.cancel()  # nothing was sent, or nothing came back

    def _record_outcome(self) -> None:
        gate, ticket = self.breaker, self.ticket
        if gate is None or ticket is None:
            return
        if self._status is not None and not self._broken:
            gate.record_status(ticket, self._status)
        elif self._failure is not None and not self._failure.local:
            timed_out = self._failure.status == 504
            kind = config.FailureKind.TIMEOUT if timed_out else config.FailureKind.CONNECTION
            gate.record(ticket, breaker.classify(gate.policy, failure=kind), kind)
        else:
            gate.record(ticket, breaker.Outcome.IGNORED)


def used(call: Call, reservation: limits.Reservation | shared_limiter.GlobalReservation) -> int:
    """Tokens the answer used: as reported, else estimated from a stream's text, else the estimate."""
    usage = call.usage
    if usage is not None:
        total = usage.get("total_tokens")
        if isinstance(total, int):
            return total
        parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
        return sum(p for p in parts if isinstance(p, int))
    if call.stream:
        return tokens.streamed(call.endpoint, call.body, call.stream_text)
    return reservation.tokens  # no usage reported: keep the estimate
