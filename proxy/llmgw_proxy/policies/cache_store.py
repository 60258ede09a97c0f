"""Where cached answers live: a ``Store`` protocol and the in-memory LRU.

The store keeps what it is given; deciding what deserves storing (only
successful answers) is the pipeline's job. An entry's size is the bytes of its
key and value plus ``ENTRY_OVERHEAD``, what Python spends around them; the
store holds at most ``maxEntries`` entries and ``maxBytes`` bytes, evicting
the least recently used first, and an entry is gone once its TTL has passed (a
read at exactly ``stored + ttl`` misses).

Every count the metrics export (hits, misses, evictions, expirations, entries,
bytes) is kept in ``Stats`` and read at scrape time, so the request path pays
for no counter of its own.

A shared backend (Redis, say) would implement the same protocol and run the
same behavioural suite (tests/proxy/policies/test_cache_store.py).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Protocol

from llmgw_proxy import config
from llmgw_proxy.policies import clock


@dataclasses.dataclass(slots=True)
class Stats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0  # pushed out by the entry or byte bound
    expirations: int = 0  # found or pushed out past their TTL
    entries: int = 0
    bytes: int = 0


class Store(Protocol):
    stats: Stats

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` for ``ttl`` seconds; False if it can never fit."""
        ...

    def delete(self, key: str) -> bool: ...


ENTRY_OVERHEAD = 320
"""Bytes an entry holds besides its key's and value's own bytes, so ``maxBytes`` bounds memory.

The str and bytes headers (49 and 33 bytes), the (value, expiry) tuple and its
float (56 + 24), and the OrderedDict's hash-table slot and order node. Measured
with tracemalloc on CPython 3.11 (64-hex-digit keys, small values): 236 to 262
bytes per entry while filling, about 310 once evictions have churned the table
(a dict keeps room for deleted slots until it resizes). Counted as only key and
value bytes, 500k small entries "of 32 MiB" held 145 MiB; the test that fills a
store with tiny entries (tests/proxy/policies/test_cache_store.py) checks the
measured growth against ``maxBytes``.
"""


def size(key: str, value: bytes) -> int:
    return len(key.encode()) + len(value) + ENTRY_OVERHEAD


class MemoryStore:
    def __init__(self, bounds: config.CacheStore, clock: clock.Clock) -> None:
        self.bounds = bounds
        self.stats = Stats()
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[bytes, float]] = collections.OrderedDict()

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() >= entry[1]:
            self.delete(key)
            self.stats.expirations += 1
            entry = None
        if entry is None:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry[0]

    def put(self, key: str, value: bytes, ttl: float) -> bool:
        self.delete(key)
        taken = size(key, value)
        if taken > self.bounds.max_bytes or ttl <= 0:
            return False
        now = self._clock()
        self._entries[key] = (value, now + ttl)
        self.stats.entries += 1
        self.stats.bytes += taken
        while len(self._entries) > self.bounds.max_entries or self.stats.bytes > self.bounds.max_bytes:
            self._evict_oldest(now)
        return True

    def _evict_oldest(self, now: float) -> None:
        """Drop the least recently used entry, counted as expired if its TTL has passed."""
        oldest, (data, expires) = self._entries.popitem(last=False)
        self.stats.entries -= 1
        self.stats.bytes -= size(oldest, data)
        if now >= expires:
            self.stats.expirations += 1
        else:
            self.stats.evictions += 1

    def delete(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.stats.entries -= 1
        self.stats.bytes -= size(key, entry[0])
        return True
