"""Who references whom: gateways name policies, policies name Secrets.

The handlers keep these maps from the same watch events that trigger
reconciles, so that a change to a policy or a Secret reaches every gateway
built from it.

Why not kopf's own indexes: kopf holds every handler back until each indexed
resource has been listed in every watched namespace, and a namespace deleted
while the operator starts is never listed, so the operator would wait for good
(seen with kopf 1.45 and namespaces matched by a pattern). A reference that is
not known yet costs nothing here: each object's own first event reconciles it
from a fresh read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Key = tuple[str | None, str]  # (namespace, name)


class References:
    """``referrers(ns, x)``: the objects whose latest spec names ``x`` in ``ns``."""

    def __init__(self) -> None:
        self._names: dict[Key, frozenset[str]] = {}  # referrer -> what it names
        self._referrers: dict[Key, set[str]] = {}  # named -> its referrers

    def set(self, namespace: str | None, name: str, names: Iterable[str]) -> None:
        new = frozenset(names)
        old = self._names.get((namespace, name), frozenset())
        for gone in old - new:
            self._unlink((namespace, gone), name)
        for added in new - old:
            self._referrers.setdefault((namespace, added), set()).add(name)
        if new:
            self._names[(namespace, name)] = new
        else:
            self._names.pop((namespace, name), None)

    def names_of(self, namespace: str | None, name: str) -> frozenset[str]:
        """What ``name`` named in its latest spec."""
        return self._names.get((namespace, name), frozenset())

    def drop(self, namespace: str | None, name: str) -> None:
        self.set(namespace, name, ())

    def referrers(self, namespace: str | None, name: str) -> list[str]:
        return sorted(self._referrers.get((namespace, name), ()))

    def __contains__(self, key: Key) -> bool:
        return key in self._referrers

    def _unlink(self, named: Key, referrer: str) -> None:
        found = self._referrers.get(named)
        if found is not None:
            found.discard(referrer)
            if not found:
                del self._referrers[named]


def policies_of(spec: Mapping[str, Any]) -> set[str]:
    """The ProviderPolicy names a gateway spec routes to (a spec not yet valid may hold anything)."""
    routes = spec.get("routes")
    names = set()
    for route in routes if isinstance(routes, list) else ():
        targets = route.get("targets") if isinstance(route, dict) else None
        for target in targets if isinstance(targets, list) else ():
            policy = target.get("policy") if isinstance(target, dict) else None
            if isinstance(policy, str):
                names.add(policy)
    return names


def secret_of(spec: Mapping[str, Any]) -> set[str]:
    """The Secret a policy spec takes its key from."""
    ref = spec.get("apiKeySecretRef")
    name = ref.get("name") if isinstance(ref, dict) else None
    return {name} if isinstance(name, str) else set()
