# mypy: disable-error-code="comparison-overlap"
# mypy keeps `b.state` narrowed to the state asserted last, across the calls that change it, and
# would call every later `assert b.state is State.X` unreachable; strict_equality stays on elsewhere.
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import breaker
from llmgw_proxy.policies.breaker import Outcome, State

from .conftest import FakeClock

S, F, IGN = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED
Transition = tuple[State, State, str]


def make(clock: FakeClock, **policy: Any) -> tuple[breaker.Breaker, list[Transition]]:
    seen: list[Transition] = []
    b = breaker.Breaker(config.CircuitBreaker(**policy), clock, [lambda *t: seen.append(t)])
    return b, seen


def run(b: breaker.Breaker, *outcomes: Outcome) -> None:
    for outcome in outcomes:
        ticket = b.acquire()
        assert ticket is not None
        b.record(ticket, outcome)


def open_it(b: breaker.Breaker) -> None:
    while b.state is State.CLOSED:
        run(b, F)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param({"status": 200}, S, id="2xx-success"),
        pytest.param({"status": 500}, F, id="5xx-failure"),
        pytest.param({"status": 503}, F, id="503-failure"),
        pytest.param({"status": 429}, IGN, id="429-ignored"),
        pytest.param({"status": 400}, IGN, id="400-ignored"),
        pytest.param({"status": 404}, IGN, id="404-ignored"),
        pytest.param({"failure": config.FailureKind.TIMEOUT}, F, id="timeout-failure"),
        pytest.param({"failure": config.FailureKind.CONNECTION}, F, id="connection-failure"),
    ],
)
def test_classifies_outcomes_by_default_policy(kw: Any, expected: Outcome) -> None:
    assert breaker.classify(config.CircuitBreaker(), **kw) is expected


def test_a_failure_kind_left_out_of_fail_on_is_ignored() -> None:
    policy = config.CircuitBreaker(fail_on=(config.FailureKind.TIMEOUT,))
    assert breaker.classify(policy, status=502) is IGN
    assert breaker.classify(policy, failure=config.FailureKind.CONNECTION) is IGN
    assert breaker.classify(policy, failure=config.FailureKind.TIMEOUT) is F


def test_classify_needs_a_status_or_a_failure() -> None:
    with pytest.raises(ValueError, match="status or a failure"):
        breaker.classify(config.CircuitBreaker())


def test_opens_after_consecutive_failures(clock: FakeClock) -> None:
    b, seen = make(clock, consecutive_failures=3)
    run(b, F, F)
    assert b.state is State.CLOSED
    run(b, F)
    assert b.state is State.OPEN
    assert seen == [(State.CLOSED, State.OPEN, "3 consecutive failures")]
    assert b.acquire() is None


def test_a_success_breaks_the_streak(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=3)
    run(b, F, F, S, F, F)
    assert b.state is State.CLOSED


def test_ignored_outcomes_neither_break_nor_extend_the_streak(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=3)
    run(b, F, F, IGN, IGN, IGN)
    assert b.state is State.CLOSED
    run(b, F)
    assert b.state is State.OPEN


def test_opens_on_the_failure_ratio_once_the_minimum_is_seen(clock: FakeClock) -> None:
    b, seen = make(clock, consecutive_failures=None, failure_ratio=0.5, minimum_requests=4)
    run(b, F, S, F)
    assert b.state is State.CLOSED, "3 requests are under the minimum"
    run(b, S)
    assert b.state is State.OPEN
    assert seen[-1][2] == "2 of 4 requests failed"


def test_the_ratio_window_forgets_old_outcomes(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=None, failure_ratio=0.5, minimum_requests=4, window=10)
    run(b, F, F, F)
    clock.step(11)
    run(b, S, S, S, F)
    assert b.state is State.CLOSED


def test_ignored_outcomes_do_not_dilute_the_ratio(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=None, failure_ratio=0.5, minimum_requests=4)
    run(b, F, IGN, IGN, IGN, IGN, IGN, S, F, S)
    assert b.state is State.OPEN


def test_goes_half_open_only_after_the_open_duration(clock: FakeClock) -> None:
    b, seen = make(clock, consecutive_failures=1, open_duration=10)
    open_it(b)
    clock.step(9.9)
    assert b.state is State.OPEN
    assert b.retry_after() == pytest.approx(0.1)
    clock.step(0.1)
    assert b.state is State.HALF_OPEN
    assert b.retry_after() == 0
    assert seen[-1] == (State.OPEN, State.HALF_OPEN, "open duration elapsed")


def test_half_open_admits_a_bounded_number_of_probes(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=1, open_duration=10, half_open_requests=2)
    open_it(b)
    clock.step(10)
    probes = [b.acquire(), b.acquire()]
    assert all(t is not None and t.probe for t in probes)
    assert b.acquire() is None


def test_all_probes_succeeding_closes_and_resets_the_open_duration(clock: FakeClock) -> None:
    b, seen = make(clock, consecutive_failures=1, open_duration=10, half_open_requests=2)
    open_it(b)
    clock.step(10)
    run(b, S)
    assert b.state is State.HALF_OPEN
    run(b, S)
    assert b.state is State.CLOSED
    assert seen[-1] == (State.HALF_OPEN, State.CLOSED, "probes succeeded")
    assert b.open_for == 10


def test_one_probe_failure_reopens_for_twice_as_long_up_to_the_cap(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=1, open_duration=10, max_open_duration=35)
    open_it(b)
    durations = []
    for _ in range(4):
        clock.step(b.open_for)
        run(b, F)
        assert b.state is State.OPEN
        durations.append(b.open_for)
    assert durations == [20, 35, 35, 35]


def test_after_closing_the_next_opening_uses_the_base_duration(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=1, open_duration=10)
    open_it(b)
    clock.step(10)
    run(b, F)
    clock.step(20)
    run(b, S)
    open_it(b)
    assert b.open_for == 10


def test_an_ignored_probe_frees_its_slot(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=1, open_duration=10, half_open_requests=1)
    open_it(b)
    clock.step(10)
    run(b, IGN)
    assert b.state is State.HALF_OPEN
    run(b, S)
    assert b.state is State.CLOSED


def test_a_late_answer_from_before_the_opening_does_not_count(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=1, open_duration=10)
    slow = b.acquire()
    assert slow is not None
    open_it(b)
    clock.step(10)
    b.record(slow, S)
    assert b.state is State.HALF_OPEN


def test_listeners_added_later_hear_transitions(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=1)
    heard: list[Transition] = []
    b.add_listener(lambda *t: heard.append(t))
    run(b, F)
    assert heard == [(State.CLOSED, State.OPEN, "1 consecutive failures")]


ALLOWED = {
    (State.CLOSED, State.OPEN),
    (State.OPEN, State.HALF_OPEN),
    (State.HALF_OPEN, State.CLOSED),
    (State.HALF_OPEN, State.OPEN),
}

steps = st.one_of(
    st.tuples(st.just("step"), st.floats(0, 400, allow_nan=False)),
    st.tuples(st.just("acquire"), st.just(0.0)),
    st.tuples(st.sampled_from(list(Outcome)), st.integers(0, 5).map(float)),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(
    ops=st.lists(steps, max_size=80),
    consecutive=st.one_of(st.none(), st.integers(1, 4)),
    ratio=st.one_of(st.none(), st.floats(0.1, 1)),
    half_open=st.integers(1, 3),
)
def test_the_breaker_never_skips_a_state(
    clock_type: type[FakeClock],
    ops: list[tuple[str, float]],
    consecutive: int | None,
    ratio: float | None,
    half_open: int,
) -> None:
    clock = clock_type(0.0)
    policy = config.CircuitBreaker(
        consecutive_failures=consecutive,
        failure_ratio=ratio,
        minimum_requests=3,
        open_duration=10,
        max_open_duration=60,
        half_open_requests=half_open,
    )
    b = breaker.Breaker(policy, clock)
    opened: list[tuple[float, float]] = []
    previous = State.CLOSED

    def listen(old: State, new: State, reason: str) -> None:
        nonlocal previous
        assert (old, new) in ALLOWED
        assert old is previous
        previous = new
        if new is State.OPEN:
            assert 10 <= b.open_for <= 60
            opened.append((clock(), b.open_for))
        if new is State.HALF_OPEN:
            at, duration = opened[-1]
            assert clock() >= at + duration

    b.add_listener(listen)
    tickets: list[breaker.Ticket] = []
    for op, arg in ops:
        if op == "step":
            clock.step(arg)
        elif op == "acquire":
            was_open = b.state is State.OPEN
            ticket = b.acquire()
            assert not (was_open and ticket is not None), "an open breaker admits nothing"
            if ticket is not None:
                tickets.append(ticket)
            probes = sum(t.probe and t.generation == b._generation for t in tickets)
            assert probes <= half_open
        elif tickets:
            b.record(tickets.pop(int(arg) % len(tickets)), Outcome(op))
        assert b.state is previous


@settings(max_examples=300)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("step"), st.floats(0, 20, allow_nan=False)),  # within the 30 s window
            st.tuples(st.just("acquire"), st.just(0)),
            st.tuples(st.sampled_from(["answer", "call"]), st.sampled_from([200, 201, 404, 429, 500, 503])),
        ),
        max_size=80,
    ),
    consecutive=st.one_of(st.none(), st.integers(1, 4)),
    ratio=st.one_of(st.none(), st.floats(0.1, 1)),
    fail_on=st.sampled_from([(config.FailureKind.SERVER_ERROR,), (config.FailureKind.TIMEOUT,)]),
)
@example(  # successes in the window keep the failure ratio under the threshold
    ops=[("call", 200)] * 3 + [("call", 500)] * 3,
    consecutive=None,
    ratio=0.9,
    fail_on=(config.FailureKind.SERVER_ERROR,),
)
def test_recording_a_status_is_recording_its_classified_outcome(
    ops: list[tuple[str, float]],
    consecutive: int | None,
    ratio: float | None,
    fail_on: tuple[config.FailureKind, ...],
) -> None:
    policy = config.CircuitBreaker(
        consecutive_failures=consecutive, failure_ratio=ratio, minimum_requests=3, fail_on=fail_on
    )
    clock = FakeClock(0.0)
    by_status, by_outcome = breaker.Breaker(policy, clock), breaker.Breaker(policy, clock)
    tickets: list[tuple[breaker.Ticket, breaker.Ticket]] = []
    for op, arg in ops:
        if op == "step":
            clock.step(arg)
        elif op in ("acquire", "call"):
            one, other = by_status.acquire(), by_outcome.acquire()
            assert (one is None) == (other is None)
            if one is not None and other is not None:
                tickets.append((one, other))
        if op in ("answer", "call") and tickets:
            one, other = tickets.pop() if op == "call" else tickets.pop(0)  # a call answers its own
            by_status.record_status(one, int(arg))
            by_outcome.record(other, breaker.classify(policy, status=int(arg)))
        assert (by_status.state, by_status.open_for, by_status.retry_after()) == (
            by_outcome.state,
            by_outcome.open_for,
            by_outcome.retry_after(),
        )


def test_reports_since_when_its_streak_and_the_last_failure(clock: FakeClock) -> None:
    b, _ = make(clock, consecutive_failures=3, open_duration=10)
    assert (b.since, b.consecutive_failures, b.last_failure) == (1000.0, 0, None)
    clock.step(1)
    ticket = b.acquire()
    assert ticket is not None
    b.record(ticket, F, config.FailureKind.TIMEOUT)
    assert (b.consecutive_failures, b.last_failure) == (1, (config.FailureKind.TIMEOUT, 1001.0))
    clock.step(1)
    ticket = b.acquire()
    assert ticket is not None
    b.record_status(ticket, 503)
    assert (b.consecutive_failures, b.last_failure) == (2, (config.FailureKind.SERVER_ERROR, 1002.0))
    clock.step(1)
    run(b, F)
    assert (b.state, b.since) == (State.OPEN, 1003.0)
    clock.step(25)  # read long after the open duration: the move happened at 1013, not now
    assert (b.state, b.since) == (State.HALF_OPEN, 1013.0)


@given(st.lists(st.sampled_from([S, F, IGN]), max_size=40))
def test_the_streak_it_reports_never_reaches_the_limit_while_closed(outcomes: list[Outcome]) -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=4)
    for outcome in outcomes:
        ticket = b.acquire()
        if ticket is None:
            break
        b.record(ticket, outcome)
        if b.state is State.CLOSED:
            assert 0 <= b.consecutive_failures < 4
