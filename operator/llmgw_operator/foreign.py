"""The child names that objects of others hold, as their metadata-only watches last told.

A gateway's children have fixed names (``render/names.py``), and an object the
operator did not make under one of them must stop the pass (``NameConflict``)
before anything is applied. Such an object is unlabelled, so no watch of the
operator's delivers it, and each new gateway's pass used to GET every child
name to find out. ``foreign_watch.py`` instead follows ConfigMaps, Secrets,
Deployments and HPAs *not* labelled as the operator's, metadata only, as
controller-runtime's metadata informers do, and keeps here the names that
could be a child's. A pass reads a child from the API only when this says the
name is held, or cannot say (not listed yet, its watch broken, too many names).

A name this says is free may still be taken in the moment before the watch
reports it: the apply of a child the pass has no copy of is create-only
(``kube.CREATE_ONLY``), so it is refused then, not applied over the object.
"""

from __future__ import annotations

from collections.abc import Iterable

Name = tuple[str, str]  # namespace, name

KINDS = ("ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler")
# Of ConfigMaps and Secrets only those named as a child could be (names.config_map, names.secret):
# clusters hold thousands of others. A Deployment's or HPA's child name is the gateway's own.
SUFFIXES = {"ConfigMap": "-proxy-config", "Secret": "-provider-keys"}
MAX_NAMES = 100_000
"""Names kept per kind. A kind with more stops answering (passes read that kind's child names from
the API, as before) until a listing finds it under the bound again: a name costs about 150 bytes."""


def relevant(kind: str, name: str) -> bool:
    """Whether ``name`` could be a child's name of ``kind``."""
    suffix = SUFFIXES.get(kind)
    return suffix is None or name.endswith(suffix)


class ForeignNames:
    """Per kind, the (namespace, name) of every object held by others that could be a child's."""

    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self.max_names = max_names
        self._names: dict[str, set[Name]] = {}  # only for kinds whose listing is in and complete

    def listed(self, kind: str, names: Iterable[Name]) -> None:
        """A listing of ``kind`` came in: it replaces what was known, and answers from now on."""
        kept = {n for n in names if relevant(kind, n[1])}
        if len(kept) > self.max_names:
            self._names.pop(kind, None)
            return
        self._names[kind] = kept

    def lost(self, kind: str) -> None:
        """The watch of ``kind`` broke: what it missed is unknown until the next listing."""
        self._names.pop(kind, None)

    def added(self, kind: str, name: Name) -> None:
        held = self._names.get(kind)
        if held is None or not relevant(kind, name[1]):
            return
        held.add(name)
        if len(held) > self.max_names:
            self.lost(kind)

    def removed(self, kind: str, name: Name) -> None:
        held = self._names.get(kind)
        if held is not None:
            held.discard(name)

    def answers(self, kind: str) -> bool:
        return kind in self._names

    def holds(self, kind: str, namespace: str, name: str) -> bool | None:
        """True when an object of others holds the name, False when none does, None when unknown
        (a kind not listed, broken off, or over the bound, or a name no child of ``kind`` has)."""
        held = self._names.get(kind)
        if held is None or not relevant(kind, name):
            return None
        return (namespace, name) in held

    def __len__(self) -> int:
        return sum(len(v) for v in self._names.values())
