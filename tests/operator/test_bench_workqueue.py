"""The work-queue memory benchmark measures what it says: keys queued behind held workers, then in backoff."""

from __future__ import annotations

from llmgw_dev import bench_workqueue
from llmgw_operator import workqueue


async def test_it_measures_waiting_and_backing_off_keys_of_a_queue() -> None:
    waiting, tasks_waiting, backoff, tasks_backoff = await bench_workqueue.measure(workqueue, 200, 4)
    assert tasks_waiting == 4  # one per held worker, none per waiting key
    assert tasks_backoff == 0
    assert waiting > 0
    assert backoff > 0
