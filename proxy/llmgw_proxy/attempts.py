"""The attempt loop: route targets in order, each behind its breaker and limits, with retries.

For each target (primary first): the breaker admits or skips it, then the
limiter reserves one request and the token estimate, waiting up to
``maxWait`` or skipping it; then ``forward`` sends. Every try is a real
upstream request, so every try (retries included) takes a request slot.

After an answer:

- 2xx, or anything already sent to the client (a started stream): done;
- 429 from the upstream: the provider is paused for its Retry-After (not a
  breaker failure) and the next target is tried;
- any other 4xx but 408: the same request would fail anywhere; answered as is;
- 5xx, 408, timeouts, connection failures: retried on the same target with
  backoff (``retry.attempts`` tries, within ``timeouts.total`` of the request's
  start), then the next target.

When no target answered, a local rate limit refusal wins (429, the smallest
Retry-After: capacity returns at a known time), then open breakers (503),
then the last upstream answer or failure as it was.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import TYPE_CHECKING

from aiohttp import web

from llmgw_proxy import config, errors, guards, state
from llmgw_proxy.policies import backoff, breaker, limits, tokens

if TYPE_CHECKING:
    from llmgw_proxy.pipeline import Call, Next

_RNG = random.Random()


class _Outcome:
    """What the loop learned from the targets that did not serve."""

    __slots__ = ("breaker_wait", "failure", "limit_headers", "limit_wait", "limited", "response")

    def __init__(self) -> None:
        self.limited = False
        self.limit_wait: float | None = None
        self.limit_headers: limits.Headers | None = None  # written out only if the answer is a 429
        self.breaker_wait: float | None = None
        self.failure: errors.ProxyError | None = None
        self.response: web.StreamResponse | None = None

    def refused(self, refusal: limits.Refused) -> None:
        wait = refusal.retry_after
        if not self.limited or (wait is not None and (self.limit_wait is None or wait < self.limit_wait)):
            self.limit_wait, self.limit_headers = wait, refusal.headers
        self.limited = True

    def final(self) -> web.StreamResponse:
        if self.limited:
            headers = self.limit_headers.as_dict() if self.limit_headers is not None else {}
            raise errors.rate_limited(self.limit_wait, headers)
        if self.response is not None:
            return self.response
        if self.failure is not None:
            raise self.failure
        raise errors.breakers_open(self.breaker_wait or 0.0)


def _retry_after(headers: object) -> float | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    seconds: float | None = backoff.parse_retry_after_ms(get("retry-after-ms"))
    if seconds is None:
        seconds = backoff.parse_retry_after(get("Retry-After"), time.time())
    return seconds


async def attempt_targets(call: Call, next_step: Next) -> web.StreamResponse:
    assert call.route is not None
    metrics_ = call.services.metrics
    outcome = _Outcome()
    previous = ""
    for target in call.route.targets:
        current = call.snapshot.providers[target.provider]
        if previous:
            metrics_.count(metrics_.fallbacks, (call.route.model, previous, current.name))
        previous = current.name
        response = await _serve_from(call, next_step, target, current, outcome)
        if response is not None:
            return response
    return outcome.final()


async def _serve_from(
    call: Call, next_step: Next, target: config.Target, current: state.ProviderState, outcome: _Outcome
) -> web.StreamResponse | None:
    """Tries on one target: the answer to give, or None to go on to the next target."""
    metrics_ = call.services.metrics
    provider = current.provider
    upstream_model = target.model or call.model
    deadline = call.started + provider.timeouts.total
    gate = guards.breaker_of(current, metrics_)
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        ticket = None
        if gate is not None:
            ticket = gate.acquire()
            if ticket is None:
                wait = gate.retry_after()
                if outcome.breaker_wait is None or wait < outcome.breaker_wait:
                    outcome.breaker_wait = wait
                return None
        reservation = None
        limiter = guards.limiter(current)
        if limiter is not None:
            decision = limiter.admit(upstream_model, call.endpoint, call.body)
            if type(decision) is not limits.Reservation:
                assert isinstance(decision, limits.Refused)
                _refused(call, current.name, upstream_model, decision, outcome)
                if gate is not None and ticket is not None:
                    gate.record(ticket, breaker.Outcome.IGNORED)  # frees a half-open probe slot
                return None
            reservation = decision
            if reservation.wait > 0:
                try:
                    await asyncio.sleep(reservation.wait)
                except BaseException:  # the caller left while it waited: nothing was sent
                    reservation.cancel()
                    if gate is not None and ticket is not None:
                        gate.record(ticket, breaker.Outcome.IGNORED)  # else a probe slot stays taken
                    raise
        if tries:
            metrics_.count(metrics_.retries, (current.name,))
        tries += 1
        call.attempts += 1
        call.target, call.provider, call.reservation = target, current, reservation
        call.usage, call.status, call.stream_text = None, 0, ""
        # Inline, not a helper coroutine: one frame fewer on every suspension of the exchange.
        response: web.StreamResponse | None
        try:
            answer = await next_step(call)
        except errors.ProxyError as failure:
            if gate is not None or reservation is not None:
                _settle_failure(gate, ticket, reservation, failure)
            outcome.failure, outcome.response, response = failure, None, None
        except BaseException:
            if gate is not None or reservation is not None:
                _settle_abandoned(call, gate, ticket, reservation)
            raise
        else:
            status = answer.status
            if reservation is not None:
                if status >= 400:
                    reservation.settle(0)
                else:
                    # _used's usual case inline: the answer reported its total.
                    total: object = call.usage.get("total_tokens") if call.usage is not None else None
                    reservation.settle(total if isinstance(total, int) else _used(call))
            if gate is not None and ticket is not None:
                gate.record_status(ticket, status)
            if status < 400 or answer.prepared:
                return answer
            response = answer
        retry_after = None
        if response is not None:
            status = response.status
            outcome.failure, outcome.response = None, response
            retry_after = _retry_after(response.headers)
            if status == 429:
                _pause(call, current, retry_after)
                return None
            if not backoff.retryable(status):
                return response if status < 500 else None
        wait_for = backoff.delay(
            provider.retry, tries, _RNG, retry_after=retry_after, time_left=deadline - loop.time()
        )
        if wait_for is None:
            return None
        await asyncio.sleep(wait_for)


def _settle_failure(
    gate: breaker.Breaker | None,
    ticket: breaker.Ticket | None,
    reservation: limits.Reservation | None,
    failure: errors.ProxyError,
) -> None:
    """No answer from the upstream: nothing was used there; the breaker counts the failure."""
    if reservation is not None:
        reservation.cancel()
    if gate is not None and ticket is not None:
        kind = config.FailureKind.TIMEOUT if failure.status == 504 else config.FailureKind.CONNECTION
        gate.record(ticket, breaker.classify(gate.policy, failure=kind))


def _settle_abandoned(
    call: Call,
    gate: breaker.Breaker | None,
    ticket: breaker.Ticket | None,
    reservation: limits.Reservation | None,
) -> None:
    """The client left (or a bug). Once the upstream answered, the request was used."""
    if reservation is not None:
        if call.status:
            reservation.settle(_used(call))
        else:
            reservation.cancel()
    if gate is not None and ticket is not None:
        gate.record(ticket, breaker.Outcome.IGNORED)


def _refused(call: Call, name: str, upstream_model: str, refusal: limits.Refused, outcome: _Outcome) -> None:
    metrics_ = call.services.metrics
    metrics_.count(metrics_.ratelimit_rejections, (name, upstream_model, refusal.reason))
    outcome.refused(refusal)


def _used(call: Call) -> int:
    usage = call.usage
    if usage is not None:
        total = usage.get("total_tokens")
        if isinstance(total, int):
            return total
        parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
        return sum(p for p in parts if isinstance(p, int))
    if call.stream:
        return tokens.streamed(call.endpoint, call.body, call.stream_text)
    assert call.reservation is not None
    return call.reservation.tokens  # no usage reported: keep the estimate


def _pause(call: Call, current: state.ProviderState, retry_after: float | None) -> None:
    limiter = guards.limiter(current, create=True)
    assert limiter is not None
    # No Retry-After: a short pause still spreads the next requests over the fallbacks.
    seconds = retry_after if retry_after is not None and math.isfinite(retry_after) else 1.0
    limiter.pause(asyncio.get_running_loop().time() + seconds)
    metrics_ = call.services.metrics
    metrics_.count(metrics_.provider_paused, (current.name,))
