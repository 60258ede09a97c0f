"""Corrections to kopf internals that the operator depends on, applied once before kopf starts.

Memory per object (``LeanMemories``): kopf keeps a record for every object its watches
deliver, with a copy of the operator's memo, for as long as the object exists. This operator
has only event handlers (no daemons, timers, indexes or change handlers that resume), so a
record carries nothing from one event to the next but its error throttle. The records of a
gateway's children (a ConfigMap, a Secret, a Deployment, maybe an HPA: three or four objects
per gateway) and of the provider-key Secrets are not kept, and no record copies the memo: it
holds the operator's shared state, and what a handler adds to it (``policy_generations``) is
keyed by object already. 5,000 gateways made about 20,000 such records, 1.5 KB each.

Namespaces by pattern (``-n 'team-*'``): kopf lists the namespaces once, then starts a watch
that lists them again and reports that second listing as events of type None, which its
namespace handler drops. A namespace created between the two listings is therefore never
watched until the operator restarts; so is one created while that watch reconnects (every
reconnect lists again). Seen in this project's suite as a gateway that never turned Ready in a
namespace made right after the operator started. Here a listed namespace counts like an added
one; listing is idempotent, so nothing else changes.
"""

from __future__ import annotations

import logging
from typing import Any

from kopf._cogs.structs import bodies, ephemera
from kopf._core.reactor import inventory, observation

logger = logging.getLogger(__name__)

_original = observation.process_discovered_namespace_event


async def process_namespace_event(
    *,
    raw_event: Any,
    namespaces: Any,
    insights: Any,
    **kwargs: Any,
) -> None:
    if raw_event["type"] is None:
        async with insights.revised:
            observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
            insights.revised.notify_all()
        return
    await _original(raw_event=raw_event, namespaces=namespaces, insights=insights, **kwargs)


def apply() -> None:
    """Idempotent; must run before ``kopf.operator`` starts its namespace observer."""
    # namespace_observer looks the handler up by this module-level name each time it starts.
    observation.process_discovered_namespace_event = process_namespace_event


KEPT_KINDS = frozenset({"LLMGateway", "ProviderPolicy"})
"""Kinds whose objects keep kopf's record between events (for its throttle after an error in
kopf's own processing); a gateway's children and the provider-key Secrets do not."""


class LeanMemories(inventory.ResourceMemories):
    """kopf's per-object records, without a copy of the memo, and none kept for the children."""

    async def recall(
        self,
        raw_body: bodies.RawBody,
        *,
        memobase: ephemera.AnyMemo | None = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> inventory.ResourceMemory:
        key = self._build_key(raw_body)
        memory = self._items.get(key)
        if memory is None:
            if memobase is None:
                memory = inventory.ResourceMemory(noticed_by_listing=noticed_by_listing)
            else:
                memory = inventory.ResourceMemory(noticed_by_listing=noticed_by_listing, memo=memobase)
            if not ephemeral and raw_body.get("kind") in KEPT_KINDS:
                self._items[key] = memory
        return memory
