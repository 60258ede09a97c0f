"""The coalescing work queue: one pass per key at a time, level-triggered, retried with backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgw_operator import metrics, workqueue

# A deadline for awaiting what must happen; reaching it fails the test.
DEADLINE = 5.0


class Recorder:
    """Work that records its passes and can be held inside a pass until released."""

    def __init__(self, fail_first: int = 0) -> None:
        self.passes: Counter[Hashable] = Counter()
        self.running: set[Hashable] = set()
        self.concurrent: set[Hashable] = set()
        self.entered = asyncio.Event()
        self.failed = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.hold = False
        self.fail_first = fail_first
        self.cancelled = False

    async def __call__(self, key: Hashable) -> None:
        assert key not in self.running, f"two passes of {key} at once"
        self.running.add(key)
        self.concurrent.add(key)
        self.passes[key] += 1
        self.entered.set()
        try:
            if self.hold:
                await self.release.wait()
            if self.fail_first > 0:
                self.fail_first -= 1
                self.failed.set()
                raise RuntimeError("the API server said no")
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.running.discard(key)

    def held(self) -> Recorder:
        self.hold = True
        self.release.clear()
        return self


async def settle(queue: workqueue.WorkQueue) -> None:
    await asyncio.wait_for(queue.idle(), DEADLINE)


async def test_a_trigger_runs_one_pass_of_its_key() -> None:
    work = Recorder()
    queue = workqueue.WorkQueue(work)
    queue.trigger("a")
    await settle(queue)
    assert work.passes == {"a": 1}


async def test_triggers_during_a_pass_collapse_into_one_more_pass() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work)
    queue.trigger("a")
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    for _ in range(5):
        queue.trigger("a")
    work.release.set()
    await settle(queue)
    assert work.passes == {"a": 2}


async def test_a_min_interval_spaces_one_keys_passes_without_delaying_other_keys() -> None:
    started: dict[Hashable, list[float]] = {}
    passed = asyncio.Event()

    async def work(key: Hashable) -> None:
        started.setdefault(key, []).append(time.monotonic())
        passed.set()

    interval = 0.3
    queue = workqueue.WorkQueue(work, min_interval=interval)
    queue.trigger("a")
    await asyncio.wait_for(passed.wait(), DEADLINE)
    for _ in range(20):  # a burst of triggers right after the pass: one more pass, not twenty
        queue.trigger("a")
        await asyncio.sleep(0)
    queue.trigger("b")  # another key: not held back by a's interval
    await settle(queue)
    assert {k: len(v) for k, v in started.items()} == {"a": 2, "b": 1}
    assert started["a"][1] - started["a"][0] >= interval
    assert started["b"][0] < started["a"][1]


async def test_a_key_forgotten_while_it_waits_out_its_interval_gets_no_more_passes() -> None:
    work = Recorder()
    queue = workqueue.WorkQueue(work, min_interval=0.3)
    queue.trigger("a")
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    queue.trigger("a")
    queue.forget("a")
    await settle(queue)
    assert work.passes == {"a": 1}


async def test_at_most_workers_passes_run_at_once_and_waiting_keys_coalesce() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work, workers=2)
    keys = [f"k{i}" for i in range(6)]
    for key in keys:
        queue.trigger(key)

    async def two_inside() -> None:
        while len(work.running) < 2:
            work.entered.clear()
            await work.entered.wait()

    await asyncio.wait_for(two_inside(), DEADLINE)
    for _ in range(3):  # the queue's event loop turns: a third pass would start now if allowed
        await asyncio.sleep(0)
    assert len(work.running) == 2
    for key in keys:  # triggers of keys still waiting for a slot join their first pass
        if key not in work.running:
            queue.trigger(key)
    work.release.set()
    await settle(queue)
    assert work.passes == dict.fromkeys(keys, 1)


async def test_different_keys_are_worked_on_at_the_same_time() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work)
    queue.trigger("a")
    queue.trigger("b")

    async def both_inside() -> None:
        while work.running != {"a", "b"}:
            work.entered.clear()
            await work.entered.wait()

    await asyncio.wait_for(both_inside(), DEADLINE)
    work.release.set()
    await settle(queue)
    assert work.passes == {"a": 1, "b": 1}


async def test_a_failing_pass_is_retried_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    work = Recorder(fail_first=2)
    queue = workqueue.WorkQueue(work, base_delay=0.001, max_delay=0.002)
    with caplog.at_level(logging.WARNING, logger=workqueue.__name__):
        queue.trigger("a")
        await settle(queue)
    assert work.passes == {"a": 3}
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 2
    assert all("retrying" in m and "the API server said no" in m for m in retries)


async def test_a_new_trigger_cuts_a_retry_backoff_short() -> None:
    work = Recorder(fail_first=1)
    # An hour's backoff: only the trigger can bring the second pass within the deadline.
    queue = workqueue.WorkQueue(work, base_delay=3600, max_delay=3600)
    queue.trigger("a")
    await asyncio.wait_for(work.failed.wait(), DEADLINE)
    queue.trigger("a")
    await settle(queue)
    assert work.passes == {"a": 2}


async def test_forgetting_a_key_finishes_the_pass_in_flight_and_schedules_no_more() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work)
    queue.trigger("a")
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    queue.trigger("a")  # would mean one more pass, but the object is then deleted
    queue.forget("a")
    work.release.set()
    await settle(queue)
    assert work.passes == {"a": 1}


async def test_forgetting_a_key_ends_its_retry_backoff() -> None:
    work = Recorder(fail_first=1)
    queue = workqueue.WorkQueue(work, base_delay=3600, max_delay=3600)
    queue.trigger("a")
    await asyncio.wait_for(work.failed.wait(), DEADLINE)
    queue.forget("a")
    await settle(queue)
    assert work.passes == {"a": 1}


async def test_a_key_forgotten_and_triggered_again_during_backoff_runs_again() -> None:
    work = Recorder(fail_first=1)
    queue = workqueue.WorkQueue(work, base_delay=3600, max_delay=3600)
    queue.trigger("a")
    await asyncio.wait_for(work.failed.wait(), DEADLINE)
    queue.forget("a")
    queue.trigger("a")  # deleted and created again under the same name
    await settle(queue)
    assert work.passes == {"a": 2}


async def test_stop_cancels_the_passes_in_flight() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work)
    queue.trigger("a")
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    await asyncio.wait_for(queue.stop(), DEADLINE)
    assert work.cancelled
    await settle(queue)


async def test_idle_resolves_at_once_when_nothing_was_triggered() -> None:
    await settle(workqueue.WorkQueue(Recorder()))


async def all_inside(work: Recorder, n: int) -> None:
    """Until ``n`` passes are inside ``work`` at once."""
    while len(work.running) < n:
        work.entered.clear()
        await work.entered.wait()


async def test_keys_waiting_for_a_worker_hold_no_task_of_their_own() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work, workers=4)
    before = asyncio.all_tasks()
    keys = [f"k{i}" for i in range(1000)]
    for key in keys:
        queue.trigger(key)
    await asyncio.wait_for(all_inside(work, 4), DEADLINE)
    for _ in range(3):
        await asyncio.sleep(0)
    assert queue.depth() == 1000 - 4
    assert len(asyncio.all_tasks() - before) <= 4
    work.release.set()
    await settle(queue)
    assert work.passes == dict.fromkeys(keys, 1)


def in_order(work: Recorder, order: list[Hashable]) -> workqueue.Work:
    """``work``, noting each key in ``order`` as its pass starts."""

    async def recorded(key: Hashable) -> None:
        order.append(key)
        await work(key)

    return recorded


async def test_keys_waiting_for_a_worker_start_in_the_order_they_were_triggered() -> None:
    order: list[Hashable] = []
    work = Recorder().held()
    recorded = in_order(work, order)
    queue = workqueue.WorkQueue(recorded, workers=1)
    queue.trigger("first")
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    for key in ("c", "a", "first", "b", "a"):  # "first" again: after its pass, behind the others
        queue.trigger(key)
    work.release.set()
    await settle(queue)
    assert order == ["first", "c", "a", "b", "first"]


async def test_a_key_forgotten_while_it_waits_for_a_worker_gets_no_pass() -> None:
    work = Recorder().held()
    queue = workqueue.WorkQueue(work, workers=1)
    for key in ("a", "b", "c"):
        queue.trigger(key)
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    queue.forget("b")
    assert queue.depth() == 1
    work.release.set()
    await settle(queue)
    assert work.passes == {"a": 1, "c": 1}


async def test_a_key_forgotten_and_triggered_again_while_it_waits_keeps_its_place_and_runs_once() -> None:
    order: list[Hashable] = []
    work = Recorder().held()
    recorded = in_order(work, order)
    queue = workqueue.WorkQueue(recorded, workers=1)
    for key in ("a", "b", "c"):
        queue.trigger(key)
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    queue.forget("b")
    queue.trigger("b")  # deleted and created again under the same name
    work.release.set()
    await settle(queue)
    assert order == ["a", "b", "c"]


async def test_a_key_forgotten_and_triggered_again_while_it_waits_never_runs_twice_at_once() -> None:
    held = {k: asyncio.Event() for k in ("x", "y", "a")}  # passes of these wait for their release
    inside = {k: asyncio.Event() for k in ("x", "y", "a", "b")}
    running: set[Hashable] = set()
    overlapped: list[Hashable] = []
    passes: Counter[Hashable] = Counter()

    async def work(key: Hashable) -> None:
        assert isinstance(key, str)
        if key in running:
            overlapped.append(key)
        running.add(key)
        passes[key] += 1
        inside[key].set()
        try:
            if key in held:
                await held[key].wait()
        finally:
            running.discard(key)

    queue = workqueue.WorkQueue(work, workers=2)
    for key in ("x", "y", "a", "b"):
        queue.trigger(key)
    await asyncio.wait_for(asyncio.gather(inside["x"].wait(), inside["y"].wait()), DEADLINE)
    queue.forget("a")
    queue.trigger("a")  # deleted and created again while it waits: still one place in the queue
    held["x"].set()
    await asyncio.wait_for(inside["a"].wait(), DEADLINE)
    queue.trigger("a")  # during its pass: one more pass after it
    held["y"].set()  # the other worker takes "b", and then nothing of "a" while its pass runs
    await asyncio.wait_for(inside["b"].wait(), DEADLINE)
    for _ in range(3):
        await asyncio.sleep(0)
    held["a"].set()
    await settle(queue)
    assert overlapped == []
    assert passes == {"x": 1, "y": 1, "a": 2, "b": 1}


async def test_a_key_waiting_out_a_backoff_holds_no_worker() -> None:
    work = Recorder(fail_first=1)
    queue = workqueue.WorkQueue(work, workers=1, base_delay=3600, max_delay=3600)
    before = asyncio.all_tasks()
    queue.trigger("a")
    await asyncio.wait_for(work.failed.wait(), DEADLINE)
    queue.trigger("b")  # the only worker is free for it: "a" waits an hour
    await asyncio.wait_for(queue.attempted(["b"], {}), DEADLINE)
    for _ in range(3):
        await asyncio.sleep(0)
    assert work.passes == {"a": 1, "b": 1}
    assert not asyncio.all_tasks() - before  # the wait is a timer, not a task
    idle = asyncio.ensure_future(queue.idle())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not idle.done()  # a key waiting out a backoff is work still to do
    queue.forget("a")
    await asyncio.wait_for(idle, DEADLINE)


async def test_a_key_waiting_out_its_interval_holds_no_worker() -> None:
    work = Recorder()
    queue = workqueue.WorkQueue(work, workers=1, min_interval=3600)
    queue.trigger("a")
    await asyncio.wait_for(queue.attempted(["a"], {}), DEADLINE)
    queue.trigger("a")  # its next pass waits an hour
    queue.trigger("b")
    await asyncio.wait_for(queue.attempted(["b"], {}), DEADLINE)
    assert work.passes == {"a": 1, "b": 1}
    assert queue.depth() == 1
    queue.forget("a")  # ends the wait: nothing is left to wait for
    await settle(queue)
    assert work.passes == {"a": 1, "b": 1}


async def test_a_trigger_during_a_failing_pass_retries_it_without_a_backoff() -> None:
    work = Recorder(fail_first=1).held()
    queue = workqueue.WorkQueue(work, base_delay=3600, max_delay=3600)
    queue.trigger("a")
    await asyncio.wait_for(work.entered.wait(), DEADLINE)
    queue.trigger("a")
    work.release.set()
    await settle(queue)
    assert work.passes == {"a": 2}


async def test_stop_ends_backoffs_and_waiting_keys_at_once() -> None:
    work = Recorder(fail_first=1)
    queue = workqueue.WorkQueue(work, workers=1, base_delay=3600, max_delay=3600)
    queue.trigger("a")
    await asyncio.wait_for(work.failed.wait(), DEADLINE)
    work.held()
    queue.trigger("b")
    queue.trigger("c")
    await asyncio.wait_for(all_inside(work, 1), DEADLINE)
    await asyncio.wait_for(queue.stop(), DEADLINE)
    await settle(queue)
    assert queue.depth() == 0
    assert work.passes == {"a": 1, "b": 1}
    work.release.set()
    queue.trigger("c")  # a stopped queue keeps nothing of before
    await settle(queue)
    assert work.passes == {"a": 1, "b": 1, "c": 1}


# -- any interleaving -----------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c"])
# A step is a trigger of a key, or some turns of the event loop passing by.
STEPS = st.lists(st.one_of(KEYS, st.integers(min_value=0, max_value=4)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, work_turns=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8))
def test_any_interleaving_runs_a_pass_after_every_trigger_and_never_two_at_once(
    steps: list[str | int], work_turns: list[int]
) -> None:
    async def scenario() -> None:
        clock = 0  # logical time: one tick per step or loop turn
        last_trigger: dict[str, int] = {}
        started: dict[str, list[int]] = {}
        running: set[str] = set()

        async def work(key: Hashable) -> None:
            assert isinstance(key, str)
            assert key not in running, f"two passes of {key} at once"
            running.add(key)
            started.setdefault(key, []).append(clock)
            try:
                # Simulated work: turns of the loop during which other steps happen.
                for _ in range(work_turns[len(started[key]) % len(work_turns)]):
                    await asyncio.sleep(0)
            finally:
                running.discard(key)

        queue = workqueue.WorkQueue(work)
        for step in steps:
            clock += 1
            if isinstance(step, str):
                last_trigger[step] = clock
                queue.trigger(step)
            else:
                for _ in range(step):
                    await asyncio.sleep(0)  # lets passes progress between triggers
                    clock += 1
        await asyncio.wait_for(queue.idle(), DEADLINE)

        triggers = Counter(s for s in steps if isinstance(s, str))
        for key, at in last_trigger.items():
            # Level-triggered: the last trigger is always followed by a pass that saw it.
            assert started[key][-1] >= at, f"{key} triggered at {at}, last pass began {started[key][-1]}"
            assert len(started[key]) <= triggers[key]
        assert set(started) == set(last_trigger)

    asyncio.run(scenario())


async def test_reports_passes_by_result_and_waits_for_each_listed_key_to_be_tried() -> None:
    m = metrics.Metrics()
    work = Recorder(fail_first=1)
    queue = workqueue.WorkQueue(work, base_delay=0.01, name="llmgateway", metrics=m)
    since = dict(queue.attempts)
    for key in ("a", "b"):
        queue.trigger(key)
    await asyncio.wait_for(queue.attempted(["a", "b"], since), DEADLINE)
    await asyncio.wait_for(queue.idle(), DEADLINE)

    def sample(metric: str, **labels: str) -> float:
        return m.registry.get_sample_value(metric, labels) or 0.0

    assert sample("controller_runtime_reconcile_total", controller="llmgateway", result="error") == 1
    assert sample("controller_runtime_reconcile_total", controller="llmgateway", result="success") == 2
    assert sample("controller_runtime_reconcile_errors_total", controller="llmgateway") == 1
    assert sample("workqueue_retries_total", name="llmgateway") == 1
    assert sample("workqueue_adds_total", name="llmgateway") == 2
    assert sample("workqueue_queue_duration_seconds_count", name="llmgateway") == 3
    assert sample("workqueue_depth", name="llmgateway") == 0
    await queue.stop()


# A step: trigger a key, forget it (prefixed "-"), or let some turns of the event loop pass.
STEPS_WITH_FORGET = st.lists(
    st.one_of(KEYS, KEYS.map(lambda k: f"-{k}"), st.integers(min_value=0, max_value=4)), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(
    steps=STEPS_WITH_FORGET,
    work_turns=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8),
    failing=st.sets(st.integers(min_value=1, max_value=6), max_size=3),
)
def test_any_interleaving_with_forgets_and_failures_keeps_to_the_workers_and_the_last_word(
    steps: list[str | int], work_turns: list[int], failing: set[int]
) -> None:
    """With 2 workers: never two passes of a key or three passes at once; a key last triggered
    gets a pass after that trigger, and a key last forgotten none after the forget."""

    async def scenario() -> None:
        clock = 0
        last: dict[str, tuple[str, int]] = {}  # key: ("trigger" or "forget", when)
        started: dict[str, list[int]] = {}
        running: set[str] = set()
        most = 0
        calls = 0

        async def work(key: Hashable) -> None:
            nonlocal calls, most
            assert isinstance(key, str)
            assert key not in running, f"two passes of {key} at once"
            running.add(key)
            most = max(most, len(running))
            started.setdefault(key, []).append(clock)
            calls += 1
            fail = calls in failing  # the first few passes only: then every retry succeeds
            try:
                for _ in range(work_turns[calls % len(work_turns)]):
                    await asyncio.sleep(0)
            finally:
                running.discard(key)
            if fail:
                raise RuntimeError("the API server said no")

        queue = workqueue.WorkQueue(work, workers=2, base_delay=0.001, max_delay=0.002)
        for step in steps:
            clock += 1
            if isinstance(step, int):
                for _ in range(step):
                    await asyncio.sleep(0)
                    clock += 1
            elif step.startswith("-"):
                last[step[1:]] = ("forget", clock)
                queue.forget(step[1:])
            else:
                last[step] = ("trigger", clock)
                queue.trigger(step)
        await asyncio.wait_for(queue.idle(), DEADLINE)

        assert most <= 2
        for key, (op, at) in last.items():
            passes = started.get(key, [])
            if op == "trigger":
                assert passes and passes[-1] >= at, f"{key} triggered at {at}, passes began {passes}"
            else:
                assert not passes or passes[-1] < at, f"{key} forgotten at {at}, passes began {passes}"
        assert queue.depth() == 0

    logging.getLogger(workqueue.__name__).disabled = True  # a warning per failed pass
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger(workqueue.__name__).disabled = False
