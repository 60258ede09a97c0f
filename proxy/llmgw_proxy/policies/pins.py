"""Which provider created a stored Responses API object: a bounded map, oldest forgotten first.

A response the provider stores (``store`` left on) can be named later:
``previous_response_id`` continues its conversation, ``GET /v1/responses/{id}``
reads it back. Only the provider that created it holds it, and a fallback
target would answer 404 or, worse, a different account's object. The sidecar
remembers ``id -> provider`` for the ids it saw created, up to ``max_entries``
(``ProxyConfig.maxPinnedResponses``); an id it does not know (forgotten, created
before a restart, or through another pod) goes to its route's first target,
which is where a conversation starts unless its primary was failing.

Memory: each entry is an id of at most ``MAX_ID`` characters and a provider
name shared with the config, so 10,000 entries take a few MiB at most.
"""

from __future__ import annotations

import collections

MAX_ID = 256
"""Longer ids are not remembered: real ones are about 50 characters."""


class Pins:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._owners: collections.OrderedDict[str, str] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def remember(self, response_id: str, provider: str) -> None:
        if not response_id or len(response_id) > MAX_ID or self.max_entries == 0:
            return
        self._owners[response_id] = provider
        self._owners.move_to_end(response_id)
        self._trim()

    def owner(self, response_id: str) -> str | None:
        owner = self._owners.get(response_id)
        if owner is not None:
            self._owners.move_to_end(response_id)  # a conversation in use stays remembered
        return owner

    def forget(self, response_id: str) -> None:
        self._owners.pop(response_id, None)

    def resize(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._trim()

    def _trim(self) -> None:
        while len(self._owners) > self.max_entries:
            self._owners.popitem(last=False)
