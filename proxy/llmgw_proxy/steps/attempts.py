"""The attempt loop: route targets in order, each behind its breaker and limits, with retries.

For each target (primary first): the breaker admits or skips it, then the
limiter reserves one request and the token estimate, waiting up to
``maxWait`` or skipping it; then ``forward`` sends. Every try is a real
upstream request, so every try (retries included) takes a request slot.

After an answer:

- 2xx, or anything already sent to the client (a started stream): done;
- 429 from the upstream: the provider is paused for its Retry-After (not a
  breaker failure) and the next target is tried;
- any other 4xx but 408: the same request would fail anywhere; answered as is,
  unless its error code (or type) is one of the provider's
  ``retry.fallbackOnErrorCodes`` (e.g. ``context_length_exceeded``): then the
  next target, no retry;
- a stream that stalls (``timeouts.firstEvent``), fails or sends an error
  event before its first event: a failure like a timeout or a lost connection
  (``forward`` sends the caller nothing before that event);
- 5xx, 408, timeouts, connection failures: retried on the same target with
  backoff (``retry.attempts`` tries, within ``timeouts.total`` of the request's
  start) while the provider's retry budget allows, then the next target;
- no pooled connection came free (a local 503): the next target, no retry.

``timeouts.total`` bounds the whole request: a target's tries (and the waits
between them) must end within its provider's ``total`` of the request's
arrival, whatever earlier targets took; a target whose deadline has passed
is not tried. ``forward`` cuts each try's own ``total`` to what is left.

Two bounds keep one request from multiplying into many upstream calls: the
request sends at most ``maxAttempts`` tries in all (targets and retries
together; then the last answer or failure is returned), and a retry must be
granted by the provider's ``RetryBudget`` (retries as a ratio of requests);
a retry it denies moves on to the next target. Both are counted in
``llmgw_retries_denied_total``.

What one try holds (the breaker ticket, the reservation) and how each is
given back whatever happens is ``admission.Hold``'s; retry delays and
Retry-After parsing are ``policies.backoff``'s.

When no target answered, a local rate limit refusal wins (429, the smallest
Retry-After: capacity returns at a known time), then open breakers (503),
then the last upstream answer or failure as it was.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from aiohttp import web

from llmgw_proxy import config, errors
from llmgw_proxy.policies import backoff, global_limits, limits
from llmgw_proxy.runtime import state
from llmgw_proxy.steps import admission
from llmgw_proxy.steps.call import Call, Next

_RNG = random.Random()


class _Outcome:
    """What the loop learned from the targets that did not serve."""

    __slots__ = (
        "breaker_wait",
        "failure",
        "limit_headers",
        "limit_wait",
        "limited",
        "out_of_budget",
        "response",
    )

    def __init__(self) -> None:
        self.limited = False
        self.out_of_budget = False  # a target was refused by a spent token budget
        self.limit_wait: float | None = None
        self.limit_headers: limits.Headers | None = None  # written out only if the answer is a 429
        self.breaker_wait: float | None = None
        self.failure: errors.ProxyError | None = None
        self.response: web.StreamResponse | None = None

    def refused(self, refusal: admission.Refusal) -> None:
        if isinstance(refusal, admission.BreakerOpen):
            if self.breaker_wait is None or refusal.retry_after < self.breaker_wait:
                self.breaker_wait = refusal.retry_after
            return
        if refusal.reason == global_limits.BUDGET:
            self.out_of_budget = True
            return
        wait = refusal.retry_after
        if not self.limited or (wait is not None and (self.limit_wait is None or wait < self.limit_wait)):
            self.limit_wait, self.limit_headers = wait, refusal.headers
        self.limited = True

    def tried(self, result: web.StreamResponse | errors.ProxyError) -> None:
        if isinstance(result, errors.ProxyError):
            self.failure, self.response = result, None
        else:
            self.failure, self.response = None, result

    def out_of_time(self, provider: str) -> None:
        """A target was not tried: the request's deadline for it had passed."""
        if self.failure is None and self.response is None:
            self.failure = errors.upstream_timeout(provider, "total")

    def final(self) -> web.StreamResponse:
        if self.limited:
            headers = self.limit_headers.as_dict() if self.limit_headers is not None else {}
            raise errors.rate_limited(self.limit_wait, headers)
        if self.out_of_budget:
            raise errors.insufficient_quota()
        if self.response is not None:
            return self.response
        if self.failure is not None:
            raise self.failure
        raise errors.breakers_open(self.breaker_wait or 0.0)


async def attempt_targets(call: Call, next_step: Next) -> web.StreamResponse:
    assert call.route is not None
    metrics_ = call.services.metrics
    outcome = _Outcome()
    previous = ""
    loop = asyncio.get_running_loop()
    for target in call.targets:  # the route's targets that may serve the model
        current = call.snapshot.providers[target.provider]
        if call.attempts >= call.snapshot.config.max_attempts:
            metrics_.count(metrics_.retries_denied, (current.name, "max_attempts"))
            break
        call.deadline = call.started + current.provider.timeouts.total
        if loop.time() >= call.deadline:
            outcome.out_of_time(current.name)
            continue
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
    """Tries on one target, retried with backoff: the answer to give, or None for the next target."""
    deadline = call.deadline
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        result = await _try(call, next_step, target, current, outcome, retry=tries > 0)
        if result is None:
            return None  # the breaker or the limiter refused this target
        tries += 1
        outcome.tried(result)
        retry_after = None
        # Tested as "not a ProxyError": a StreamResponse is a MutableMapping, and an isinstance
        # check against that ABC costs several times one against a plain class.
        if isinstance(result, errors.ProxyError) and result.local:
            return None  # the sidecar's own limit (a busy pool): the same target would wait again
        if not isinstance(result, errors.ProxyError):
            status = result.status
            if status < 400 or result.prepared:
                return result  # a success, or a stream already under way: the caller has it
            retry_after = _retry_after(result.headers, current.provider.retry.max_retry_after)
            if status == 429:
                _pause(call, current, retry_after)
                return None
            if not backoff.retryable(status):
                if status < 500 and _moves_on(result, current.provider.retry.fallback_on_error_codes):
                    return None
                return result if status < 500 else None
        wait_for = backoff.delay(
            current.provider.retry, tries, _RNG, retry_after=retry_after, time_left=deadline - loop.time()
        )
        if wait_for is None:
            return None
        denied = _retry_denied(call, current)
        if denied:
            metrics_ = call.services.metrics
            metrics_.count(metrics_.retries_denied, (current.name, denied))
            return None
        await asyncio.sleep(wait_for)


async def _try(
    call: Call,
    next_step: Next,
    target: config.Target,
    current: state.ProviderState,
    outcome: _Outcome,
    *,
    retry: bool,
) -> web.StreamResponse | errors.ProxyError | None:
    """One upstream exchange behind the target's breaker and limits; None when they refused it."""
    upstream_model = target.model or call.model
    with admission.Hold(call) as hold:
        refusal = await hold.admit(current, upstream_model)
        if refusal is not None:
            outcome.refused(refusal)
            return None
        if hold.wait > 0:
            await asyncio.sleep(hold.wait)
            if asyncio.get_running_loop().time() >= call.deadline:
                outcome.out_of_time(current.name)
                return None  # the wait for capacity took what was left: nothing is sent
        if retry:
            metrics_ = call.services.metrics
            metrics_.count(metrics_.retries, (current.name,))
        call.attempts += 1
        if not retry:
            current.budget.request()
        call.target, call.provider, call.wants_usage = target, current, hold.reserved
        call.usage, call.status, call.stream_text, call.broken = None, 0, "", None
        call.first_event_at, call.last_chunk_at, call.chunks = None, None, 0
        hold.sent = True
        try:
            answer = await next_step(call)
        except errors.ProxyError as failure:
            hold.failed(failure)
            return errors.settled(failure)  # a value from here on (kept by the outcome)
        if call.broken is not None:
            hold.broke_off(call.broken)
        else:
            hold.answered(answer.status)
        return answer


def _moves_on(answer: web.StreamResponse, codes: tuple[str, ...]) -> bool:
    """The 4xx answer's error code or type is one the provider's policy sends to the next target."""
    if not codes or not isinstance(answer, web.Response) or not isinstance(answer.body, bytes):
        return False
    try:
        error = json.loads(answer.body).get("error")
    except (ValueError, AttributeError, RecursionError):
        return False
    if not isinstance(error, dict):
        return False
    return error.get("code") in codes or error.get("type") in codes


def _retry_denied(call: Call, current: state.ProviderState) -> str:
    """Why the retry may not go ("" when it may); a granted retry is taken from the budget."""
    if call.attempts >= call.snapshot.config.max_attempts:
        return "max_attempts"
    if not current.budget.try_retry():
        return "budget"
    return ""


def _retry_after(headers: object, cap: float) -> float | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    return backoff.retry_after(get("retry-after-ms"), get("Retry-After"), time.time(), cap)


def _pause(call: Call, current: state.ProviderState, retry_after: float | None) -> None:
    # No usable Retry-After: a short pause still spreads the next requests over the fallbacks.
    seconds = retry_after if retry_after is not None else min(1.0, current.provider.retry.max_retry_after)
    current.pausable_limiter().pause(asyncio.get_running_loop().time() + seconds)
    metrics_ = call.services.metrics
    metrics_.count(metrics_.provider_paused, (current.name,))
