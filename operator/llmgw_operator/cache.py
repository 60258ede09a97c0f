"""The operator's own copy of what its watches deliver, and a client that reads from it first.

controller-runtime's cached client is the model: a reconcile pass reads the
objects the operator already watches (its gateways and policies, provider-key
Secrets, its own children) from memory, so a pass at steady state makes no
read request at all. The kopf event handlers put every object they are
handed into the ``Store``; ``CachedClient`` answers ``get`` from there and
asks the API only for what is not there (a child not created yet, a Secret
without the provider-key mark, which no watch delivers).

Why a stale copy cannot leave a wrong state behind: the handler updates the
store before it triggers the pass, so a pass never reads an object older
than the event that caused it; a newer event triggers another pass. The
store only moves forward (an older resourceVersion never replaces a newer
one, and a deleted object is not brought back by a late write response).
Writes are skipped when the copy already holds what would be written, and a
write's response is put in the store, so the next pass does not write the
same thing again because its own watch event has not arrived yet.

Each object is kept as compact JSON of the fields a pass reads (not the
kubectl last-applied annotation, not other managers' managedFields),
compressed (zlib: a gateway's children are mostly repeated keys and labels,
about a third of their JSON; 5,000 gateways' copy was 25 MB as JSON), and
decoded on each read, which also hands every reader its own copy.
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from llmgw_operator import foreign, kube, login
from llmgw_operator import metrics as metrics_

Key = tuple[str, str, str]  # kind, namespace, name

# What the watches deliver (handlers.py: every gateway and policy, Secrets marked as provider keys
# or rendered by the operator, and the operator's labelled children).
CACHED_KINDS = frozenset(
    {"LLMGateway", "ProviderPolicy", "Secret", "ConfigMap", "Deployment", "HorizontalPodAutoscaler"}
)
_TOP = ("apiVersion", "kind", "spec", "status", "data", "type")
_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Deleted objects remembered so that a write response that arrives after the deletion event
# does not bring them back; past this many the oldest are forgotten.
MAX_TOMBSTONES = 10_000
# zlib's fastest level: a put runs on the event loop for every watch event, and the objects are
# small enough that higher levels gain little.
COMPRESSION = 1


def trim(body: Mapping[str, Any], manager: str = kube.FIELD_MANAGER) -> dict[str, Any]:
    """The fields a reconcile pass reads: the rest of a body is not kept."""
    out = {k: body[k] for k in _TOP if k in body}
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in _META if k in meta}
    annotations = kept.get("annotations")
    if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
        kept["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    # kube.apply compares against the fields the operator's own applies hold; other entries are noise.
    ours = [
        e
        for e in meta.get("managedFields") or []
        if isinstance(e, Mapping) and e.get("manager") == manager and e.get("operation") == "Apply"
    ]
    if ours:
        kept["managedFields"] = ours
    out["metadata"] = kept
    return out


def key_of(body: Mapping[str, Any]) -> Key | None:
    meta = body.get("metadata") or {}
    kind, namespace, name = body.get("kind"), meta.get("namespace"), meta.get("name")
    if not (isinstance(kind, str) and isinstance(namespace, str) and isinstance(name, str)):
        return None
    return (kind, namespace, name)


def newer(version: str | None, than: str | None) -> bool:
    """``version`` is later than ``than``.

    resourceVersions are etcd revisions, integers that grow; when either is
    not an integer there is no order to go by, and the later arrival wins.
    """
    if than is None:
        return True
    if version is None:
        return False
    try:
        return int(version) > int(than)
    except ValueError:
        return version != than


class Store:
    """Objects by (kind, namespace, name) as last seen, trimmed, JSON-encoded and compressed."""

    def __init__(self, manager: str = kube.FIELD_MANAGER) -> None:
        self.manager = manager
        self._objects: dict[Key, bytes] = {}
        self._versions: dict[Key, str | None] = {}
        self._tombstones: collections.OrderedDict[Key, str | None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: Key) -> bool:
        return key in self._objects

    def size(self) -> int:
        """Bytes held by the encoded, compressed objects."""
        return sum(len(b) for b in self._objects.values())

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event (kopf's raw event type: None for a listed object, ADDED, MODIFIED, DELETED)."""
        if event_type == "DELETED":
            key = key_of(body)
            if key is not None:
                self.forget(key, _version(body))
        else:
            self.put(body)

    def put(self, body: Mapping[str, Any]) -> bool:
        """Keep ``body`` unless what is held (or the deletion seen) is newer. True when kept."""
        key = key_of(body)
        if key is None:
            return False
        version = _version(body)
        if key in self._tombstones:
            if not newer(version, self._tombstones[key]):
                return False
            del self._tombstones[key]  # created again under the same name
        if key in self._versions and not newer(version, self._versions[key]):
            return False
        encoded = orjson.dumps(trim(body, self.manager))  # compact, as json.dumps with separators
        self._objects[key] = zlib.compress(encoded, COMPRESSION)
        self._versions[key] = version
        return True

    def forget(self, key: Key, version: str | None = None) -> None:
        """The object is gone as of ``version`` (when known): a write answered before that is ignored,
        and so is the deletion itself when a newer object of that name is held already (made again,
        and its write answered before the watch delivered the deletion)."""
        if version is not None and key in self._versions and newer(self._versions[key], version):
            return
        self._objects.pop(key, None)
        held = self._versions.pop(key, None)
        gone = version if version is not None else held
        if key in self._tombstones and not newer(gone, self._tombstones[key]):
            gone = self._tombstones[key]
        self._tombstones[key] = gone
        self._tombstones.move_to_end(key)
        while len(self._tombstones) > MAX_TOMBSTONES:
            self._tombstones.popitem(last=False)

    def deleted(self, key: Key, version: str | None) -> bool:
        """A deletion of ``key`` was seen at or after ``version``."""
        return key in self._tombstones and not newer(version, self._tombstones[key])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._objects.get((kind, namespace, name))
        if found is None:
            return None
        result: dict[str, Any] = orjson.loads(zlib.decompress(found))
        return result


def _version(body: Mapping[str, Any]) -> str | None:
    version = (body.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


class CachedClient(kube.Client):
    """kube.Client whose ``get`` answers from the store when it can, and whose writes update it.

    ``child`` reads a gateway's child: the store's copy; else nothing when
    the child names others hold are known and this is not one of them (every
    child of the operator's is in the store once listed at start); else the
    API. ``peek`` is a read that does not go to the API: what the store holds, or
    None. For a child the gateway does not want it is enough: one the operator
    made carries its label and is watched, and an object of someone else's
    under that name blocks only a child the gateway wants.
    """

    def __init__(
        self,
        connect: kube.Connect | None = login.connection,
        store: Store | None = None,
        connections: int = kube.CONNECTIONS,
    ) -> None:
        super().__init__(connect, connections)
        self.store = store if store is not None else Store()
        self.hits = 0
        # Both set once known (handlers._prime, foreign_watch): every child of the operator's is in
        # the store, and which child names others hold.
        self.children_listed = False
        self.foreign: foreign.ForeignNames | None = None

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind in CACHED_KINDS:
            found = self.store.get(kind, namespace, name)
            if found is not None:
                self.hits += 1
                return found
        return await super().get(kind, namespace, name)

    async def child(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.store.get(kind, namespace, name)
        if found is not None:
            self.hits += 1
            return found
        if (
            self.children_listed
            and self.foreign is not None
            and self.foreign.holds(kind, namespace, name) is False
        ):
            return None  # not the operator's (it would be in the store), nor anyone else's
        return await super().get(kind, namespace, name)

    async def peek(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind in CACHED_KINDS:
            return self.store.get(kind, namespace, name)
        return await super().get(kind, namespace, name)

    def written(self, result: Mapping[str, Any]) -> None:
        if result.get("kind") in CACHED_KINDS:
            self.store.put(result)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        self.store.forget((kind, namespace, name))


def register_gauges(m: metrics_.Metrics, store: Store) -> None:
    m.gauge(
        "llmgw_operator_cache_objects",
        "Objects the operator holds from its watches (gateways, policies, provider keys, children).",
        [],
        lambda: [((), float(len(store)))],
    )
    m.gauge(
        "llmgw_operator_cache_bytes",
        "Bytes of the objects held, as the compressed compact JSON they are kept in.",
        [],
        lambda: [((), float(store.size()))],
    )
