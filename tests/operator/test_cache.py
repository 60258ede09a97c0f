"""The watches' copy: it keeps only what a pass reads, and only ever moves forward."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator import cache, kube


def body(kind: str = "ConfigMap", name: str = "a", rv: int | str | None = 1, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, **extra}


def test_trim_keeps_what_a_pass_reads_and_drops_the_rest() -> None:
    live = body(
        "Deployment",
        spec={"replicas": 1},
        status={"readyReplicas": 1},
        metadata_extra=None,
    )
    live["metadata"] |= {
        "uid": "u1",
        "generation": 3,
        "labels": {"app": "x"},
        "ownerReferences": [{"uid": "g1", "controller": True}],
        "annotations": {cache.LAST_APPLIED: "{...a copy of the spec...}", "keep": "me"},
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [
            {"manager": kube.FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}},
            {"manager": kube.FIELD_MANAGER, "operation": "Update", "fieldsV1": {"f:x": {}}},
            {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}},
        ],
    }
    kept = cache.trim(live)
    assert kept["spec"] == {"replicas": 1} and kept["status"] == {"readyReplicas": 1}
    assert "metadata_extra" not in kept
    meta = kept["metadata"]
    assert meta["annotations"] == {"keep": "me"}
    assert meta["managedFields"] == [
        {"manager": kube.FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}}
    ]
    assert {"uid", "generation", "labels", "ownerReferences", "resourceVersion"} <= meta.keys()
    assert "creationTimestamp" not in meta
    # What kube.apply compares (contains, and the fields owned by the operator's applies) survives.
    assert kube._applied_fields(kept) == {"f:spec": {}}


def test_a_read_hands_out_a_copy_that_cannot_change_the_store() -> None:
    store = cache.Store()
    store.put(body(data={"k": "v"}))
    first = store.get("ConfigMap", "ns", "a")
    assert first is not None
    first["data"]["k"] = "changed"
    assert store.get("ConfigMap", "ns", "a") == cache.trim(body(data={"k": "v"}))


def _live_deployment(name: str) -> dict[str, Any]:
    """A Deployment as the watch delivers one of a gateway's: labels, template and the operator's
    own managedFields entry repeat the same keys, which is what compression gains on."""
    labels = {"app.kubernetes.io/managed-by": "llmgw-operator", "llmgateway.io/gateway": name}
    container = {
        "name": "llmgw-proxy",
        "image": "ghcr.io/llmgw/llmgw-proxy:0.1.0",
        "args": ["--config", "/etc/llmgw/config.yaml"],
        "ports": [{"name": "proxy", "containerPort": 8000}, {"name": "admin", "containerPort": 9000}],
        "volumeMounts": [{"name": "llmgw-config", "mountPath": "/etc/llmgw", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}},
    }
    spec = {
        "replicas": 1,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels, "annotations": {"llmgateway.io/config-hash": "0" * 64}},
            "spec": {
                "containers": [container],
                "volumes": [{"name": "llmgw-config", "configMap": {"name": f"{name}-llmgw-config"}}],
            },
        },
    }
    fields = {
        "f:spec": {f"f:{k}": {} for k in spec},
        "f:metadata": {"f:labels": {f"f:{k}": {} for k in labels}},
    }
    live = body("Deployment", name, 7, spec=spec, status={"replicas": 1, "readyReplicas": 1})
    live["metadata"] |= {
        "uid": f"uid-{name}",
        "labels": labels,
        "ownerReferences": [{"apiVersion": "llmgateway.io/v1alpha1", "kind": "LLMGateway", "name": name}],
        "managedFields": [{"manager": kube.FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields}],
    }
    return live


def test_objects_are_held_compressed_and_read_back_whole() -> None:
    store = cache.Store()
    live = [_live_deployment(f"gw-{i}") for i in range(20)]
    for b in live:
        store.put(b)
    as_json = sum(len(json.dumps(cache.trim(b), separators=(",", ":")).encode()) for b in live)
    # 5,000 gateways' children held 25 MB as JSON: the copy holds less than half of that.
    assert store.size() * 2 < as_json
    assert [store.get("Deployment", "ns", f"gw-{i}") for i in range(20)] == [cache.trim(b) for b in live]


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = cache.Store()
    assert store.put(body(rv=5, data={"v": "5"}))
    assert not store.put(body(rv=4, data={"v": "4"}))
    assert not store.put(body(rv=5, data={"v": "5 again"}))
    assert store.get("ConfigMap", "ns", "a") == cache.trim(body(rv=5, data={"v": "5"}))


def test_a_write_answered_before_the_deletion_does_not_bring_the_object_back() -> None:
    store = cache.Store()
    store.put(body(rv=5))
    store.observe("DELETED", body(rv=7))
    assert not store.put(body(rv=6))  # our apply's response, late
    assert store.get("ConfigMap", "ns", "a") is None
    assert store.deleted(("ConfigMap", "ns", "a"), "6")
    assert store.put(body(rv=9))  # made again
    assert not store.deleted(("ConfigMap", "ns", "a"), "9")


def test_bodies_without_a_name_or_namespace_are_not_kept() -> None:
    store = cache.Store()
    assert not store.put({"kind": "ConfigMap", "metadata": {"name": "a"}})
    assert len(store) == 0


def test_tombstones_are_bounded() -> None:
    store = cache.Store()
    for i in range(cache.MAX_TOMBSTONES + 10):
        store.forget(("ConfigMap", "ns", f"n{i}"), "1")
    assert len(store._tombstones) == cache.MAX_TOMBSTONES


@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=2**63))
def test_newer_orders_etcd_revisions_as_numbers(a: int, b: int) -> None:
    assert cache.newer(str(a), str(b)) == (a > b)


# One object's history: each event a write (True) or a deletion (False) at a distinct revision.
histories = st.lists(
    st.tuples(st.integers(min_value=1, max_value=10_000), st.booleans()),
    min_size=1,
    max_size=12,
    unique_by=lambda e: e[0],
)


@given(histories, st.randoms())
def test_whatever_order_events_arrive_in_the_latest_revision_decides(
    events: list[tuple[int, bool]], rnd: Any
) -> None:
    """Watch events and write responses race; the store ends as the newest of them says."""
    arrivals = list(events)
    rnd.shuffle(arrivals)
    store = cache.Store()
    for rv, present in arrivals:
        if present:
            store.put(body(rv=rv, data={"rv": str(rv)}))
        else:
            store.observe("DELETED", body(rv=rv))
    latest_rv, latest_present = max(events)
    held = store.get("ConfigMap", "ns", "a")
    if latest_present:
        assert held is not None and held["data"] == {"rv": str(latest_rv)}
    else:
        assert held is None


def test_the_cached_client_answers_from_the_store_without_the_api() -> None:
    # No API behind it at all: a hit must not reach it, and a peek at a cached kind never does.
    client = cache.CachedClient(connect=None)
    client.store.put(body("Deployment", name="gw-proxy", rv=3, spec={"replicas": 2}))

    async def reads() -> tuple[Any, Any]:
        hit = await client.get("Deployment", "ns", "gw-proxy")
        miss = await client.peek("HorizontalPodAutoscaler", "ns", "gw-proxy")
        return hit, miss

    hit, miss = asyncio.run(reads())
    assert hit is not None and hit["spec"] == {"replicas": 2}
    assert miss is None
    assert client.reads == 0 and client.hits == 1


def test_a_write_response_is_kept_and_a_deletion_forgets() -> None:
    client = cache.CachedClient(connect=None)
    client.written(body("ConfigMap", rv=4, data={"proxy.yaml": "x"}))
    assert client.store.get("ConfigMap", "ns", "a") is not None
    client.written(body("Event", rv=5))  # not a watched kind
    assert len(client.store) == 1
    client.deleted("ConfigMap", "ns", "a")
    assert client.store.get("ConfigMap", "ns", "a") is None
