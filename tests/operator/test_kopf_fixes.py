"""kopf drops the namespaces its namespace watch lists (events of type None); the fix counts them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import bodies, ephemera, references
from kopf._core.reactor import observation

from llmgw_operator import kopf_fixes


def listed(name: str, **metadata: Any) -> dict[str, Any]:
    return {"type": None, "object": {"metadata": {"name": name, **metadata}}}


def run(handler: Any, raw_event: dict[str, Any], insights: references.Insights) -> None:
    asyncio.run(handler(raw_event=raw_event, namespaces=["opit-*"], insights=insights))


def test_kopf_alone_drops_a_namespace_its_watch_lists() -> None:
    """The behaviour the fix exists for; when kopf changes it, this fails and the fix can go."""
    insights = references.Insights()
    run(kopf_fixes._original, listed("opit-new"), insights)
    assert "opit-new" not in insights.namespaces


@pytest.mark.parametrize("handler", ["module", "fix"])
def test_a_listed_namespace_that_matches_is_watched(handler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observation, "process_discovered_namespace_event", kopf_fixes._original)
    kopf_fixes.apply()
    kopf_fixes.apply()  # idempotent
    chosen = (
        observation.process_discovered_namespace_event
        if handler == "module"
        else kopf_fixes.process_namespace_event
    )
    insights = references.Insights()
    run(chosen, listed("opit-new"), insights)
    run(chosen, listed("other"), insights)
    assert insights.namespaces == {"opit-new"}


def test_a_relisted_namespace_counts_as_kopfs_first_listing_counts_it() -> None:
    bodies = [
        listed("opit-a")["object"],
        listed("opit-terminating", deletionTimestamp="2026-12-02T00:00:00Z")["object"],
        listed("kube-system")["object"],
    ]
    first = references.Insights()
    observation.revise_namespaces(raw_bodies=bodies, insights=first, namespaces=["opit-*"])
    relisted = references.Insights()
    for body in bodies:
        run(kopf_fixes.process_namespace_event, {"type": None, "object": body}, relisted)
    assert relisted.namespaces == first.namespaces == {"opit-a", "opit-terminating"}


def test_watch_events_still_take_kopfs_own_path() -> None:
    insights = references.Insights()
    added = {"type": "ADDED", "object": {"metadata": {"name": "opit-added"}}}
    run(kopf_fixes.process_namespace_event, added, insights)
    deleted = {"type": "DELETED", "object": {"metadata": {"name": "opit-added", "deletionTimestamp": "x"}}}
    run(kopf_fixes.process_namespace_event, deleted, insights)
    assert insights.namespaces == set()
    run(kopf_fixes.process_namespace_event, added, insights)
    assert insights.namespaces == {"opit-added"}


def _object(kind: str, uid: str) -> bodies.RawBody:
    return cast(bodies.RawBody, {"kind": kind, "metadata": {"uid": uid, "name": uid, "namespace": "ns"}})


def test_kopf_keeps_no_record_of_a_child_and_no_record_copies_the_memo() -> None:
    memories = kopf_fixes.LeanMemories()
    memobase = ephemera.AnyMemo(kopf.Memo(store=object()))

    async def recall_all() -> list[Any]:
        return [
            await memories.recall(_object(kind, f"u{i}"), memobase=memobase)
            for i, kind in enumerate(["ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler"])
        ]

    children = asyncio.run(recall_all())
    assert list(memories.iter_all_memories()) == []
    assert all(m.memo is memobase for m in children)


def test_a_gateway_and_a_policy_keep_theirs_until_deleted() -> None:
    memories = kopf_fixes.LeanMemories()
    memobase = ephemera.AnyMemo(kopf.Memo())
    gateway, policy = _object("LLMGateway", "g"), _object("ProviderPolicy", "p")

    async def scenario() -> None:
        first = await memories.recall(gateway, memobase=memobase, noticed_by_listing=True)
        assert await memories.recall(gateway, memobase=memobase) is first  # its throttle carries over
        assert first.memo is memobase and first.noticed_by_listing
        await memories.recall(policy, memobase=memobase)
        assert len(list(memories.iter_all_memories())) == 2
        await memories.forget(gateway)
        assert len(list(memories.iter_all_memories())) == 1
        # kopf's admission recalls are ephemeral: never kept.
        await memories.recall(_object("LLMGateway", "new"), memobase=memobase, ephemeral=True)
        assert len(list(memories.iter_all_memories())) == 1

    asyncio.run(scenario())
