"""Corrections to kopf internals that the operator depends on, applied once before kopf starts.

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

from kopf._core.reactor import observation

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
