"""One behavioural suite for every Store: add a backend to STORES to hold it to the same rules."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import cache_store

from .conftest import FakeClock

MakeStore = Callable[..., cache_store.Store]


def memory(clock: FakeClock, *, max_entries: int = 100, max_bytes: int = 1 << 20) -> cache_store.Store:
    return cache_store.MemoryStore(config.CacheStore(max_entries=max_entries, max_bytes=max_bytes), clock)


STORES = [pytest.param(memory, id="memory")]


@pytest.fixture(params=STORES)
def make(request: pytest.FixtureRequest) -> MakeStore:
    factory: MakeStore = request.param
    return factory


K = "k" * 64  # keys are SHA-256 hex in practice


def key(i: int) -> str:
    return f"{i:064x}"


def test_returns_what_was_stored_and_counts_a_hit(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock)
    assert store.put(K, b"answer", ttl=10)
    assert store.get(K) == b"answer"
    assert (store.stats.hits, store.stats.misses) == (1, 0)


def test_an_unknown_key_is_a_miss(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock)
    assert store.get(K) is None
    assert (store.stats.hits, store.stats.misses) == (0, 1)


def test_an_entry_expires_when_its_ttl_has_passed(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock)
    store.put(K, b"answer", ttl=10)
    clock.step(9.999)
    assert store.get(K) == b"answer"
    clock.step(0.001)
    assert store.get(K) is None
    assert store.stats.expirations == 1
    assert (store.stats.entries, store.stats.bytes) == (0, 0)


def test_each_entry_has_its_own_ttl(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock)
    store.put(key(1), b"short", ttl=1)
    store.put(key(2), b"long", ttl=100)
    clock.step(50)
    assert store.get(key(1)) is None
    assert store.get(key(2)) == b"long"


def test_storing_again_replaces_the_value_and_its_size(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock)
    store.put(K, b"a" * 100, ttl=10)
    store.put(K, b"b", ttl=10)
    assert store.get(K) == b"b"
    assert (store.stats.entries, store.stats.bytes) == (1, 64 + 1 + cache_store.ENTRY_OVERHEAD)


def test_the_least_recently_used_entry_goes_first(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock, max_entries=2)
    store.put(key(1), b"1", ttl=10)
    store.put(key(2), b"2", ttl=10)
    store.get(key(1))
    store.put(key(3), b"3", ttl=10)
    assert store.get(key(2)) is None
    assert store.get(key(1)) == b"1"
    assert store.get(key(3)) == b"3"
    assert store.stats.evictions == 1


def test_the_byte_bound_evicts_until_the_new_entry_fits(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock, max_bytes=1024)
    for i in range(3):
        store.put(key(i), b"x" * 300, ttl=10)  # 684 bytes each with the key and the overhead
    assert store.stats.bytes <= 1024
    assert store.get(key(0)) is None
    assert store.get(key(2)) is not None


def test_a_value_larger_than_the_byte_bound_is_not_stored(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock, max_bytes=1024)
    store.put(key(1), b"small", ttl=10)
    assert not store.put(K, b"x" * 1024, ttl=10)
    assert store.get(K) is None
    assert store.get(key(1)) == b"small", "a refused entry evicts nothing"


def test_delete_removes_an_entry(make: MakeStore, clock: FakeClock) -> None:
    store = make(clock)
    store.put(K, b"answer", ttl=10)
    assert store.delete(K)
    assert not store.delete(K)
    assert store.get(K) is None
    assert (store.stats.entries, store.stats.bytes) == (0, 0)


def test_stats_tell_an_expired_entry_from_an_evicted_one(clock: FakeClock) -> None:
    store = cache_store.MemoryStore(config.CacheStore(max_entries=1), clock)
    store.put(key(1), b"1", ttl=5)
    store.put(key(2), b"2", ttl=5)  # pushes out key 1 while it is still fresh
    clock.step(5)
    store.put(key(3), b"3", ttl=5)  # pushes out key 2, already past its TTL
    clock.step(5)
    assert store.get(key(3)) is None  # found past its TTL
    assert (store.stats.evictions, store.stats.expirations) == (1, 2)
    assert (store.stats.entries, store.stats.bytes) == (0, 0)


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "delete", "step"]),
        st.integers(0, 15),
        st.integers(0, 700),
    ),
    max_size=80,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, max_entries=st.integers(1, 8), max_bytes=st.integers(1024, 4096))
def test_never_exceeds_its_bounds_and_keeps_honest_counts(
    make: MakeStore,
    clock_type: type[FakeClock],
    ops: list[tuple[str, int, int]],
    max_entries: int,
    max_bytes: int,
) -> None:
    clock = clock_type()
    store = make(clock, max_entries=max_entries, max_bytes=max_bytes)
    live: dict[str, bytes] = {}
    for op, i, n in ops:
        if op == "put":
            value = bytes([i]) * n
            if store.put(key(i), value, ttl=(n % 7) + 1):
                live[key(i)] = value
            else:
                live.pop(key(i), None)
        elif op == "get":
            got = store.get(key(i))
            assert got is None or got == live.get(key(i)), "never an answer stored under another key"
        elif op == "delete":
            store.delete(key(i))
            live.pop(key(i), None)
        else:
            clock.step(n / 100)
        assert store.stats.entries <= max_entries
        assert store.stats.bytes <= max_bytes
    found = {k: store.get(k) for k in live}
    present = {k: v for k, v in found.items() if v is not None}
    assert store.stats.entries == len(present)
    assert store.stats.bytes == sum(cache_store.size(k, v) for k, v in present.items())


@pytest.mark.parametrize("value_bytes", [8, 64, 4096])
def test_max_bytes_bounds_the_memory_many_small_entries_really_hold(
    clock: FakeClock, value_bytes: int
) -> None:
    # Key and value bytes alone made 500k small entries "of 32 MiB" hold 145 MiB.
    max_bytes = 4 << 20
    store = cache_store.MemoryStore(config.CacheStore(max_entries=10_000_000, max_bytes=max_bytes), clock)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3 * max_bytes // (64 + value_bytes + 100)):  # far more than fit: evictions churn
            store.put(key(i), i.to_bytes(8, "big") + b"v" * (value_bytes - 8), ttl=60)  # no shared objects
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.stats.evictions > 0
    assert store.stats.bytes <= max_bytes
    assert held <= 1.1 * max_bytes, f"{held / max_bytes:.2f} x maxBytes"
