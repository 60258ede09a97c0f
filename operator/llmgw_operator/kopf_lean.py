"""What kopf does on every watch event that this operator does not use, turned off.

The operator's handlers are all ``@kopf.on.event``: each event only feeds the
watches' copy and triggers a work queue (handlers.py). kopf still, for every
event of every watched kind:

- builds a diff base: a deep copy of the whole body (a Deployment's status and
  managedFields included) and a diff against the last stored one, which only
  ``on.create``/``on.update``/``on.resume`` handlers read. At 5,000 gateways,
  about 50,000 events, that was a tenth of the operator's busy time.
- logs ``Handler '...' succeeded.`` at INFO: one line per event and handler,
  another tenth, and nothing an operator's user reads.

``NoDiffBase`` builds nothing. It is only right while no handler needs a diff:
``check_registry`` refuses to start otherwise, so a future ``on.update`` cannot
silently see every change as "no change".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

OBJECT_LOGGER = "kopf.objects"
"""kopf's per-object log lines (handler outcomes); their warnings and errors still show."""


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing: every event's essence is empty, nothing is stored."""

    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def change_handlers(registry: Any) -> list[str]:
    """Ids of the registered handlers that read a diff base (kopf's changing and spawning kinds)."""
    # Private attributes: kopf has no public listing of these two registries, which are what its
    # event processing consults for causes that read the diff base.
    return [str(h.id) for kind in (registry._changing, registry._spawning) for h in kind.get_all_handlers()]


def check_registry(registry: Any) -> None:
    """Raise if a handler needs the diff base that ``NoDiffBase`` does not keep."""
    needing = change_handlers(registry)
    if needing:
        raise RuntimeError(
            "kopf_lean.NoDiffBase keeps no diff base, but these handlers need one: " + ", ".join(needing)
        )


def apply(settings: kopf.OperatorSettings, *, verbose: bool) -> None:
    """Called from the startup handler: no diff base, and kopf's per-event INFO lines only when
    ``--verbose`` or ``--debug`` asked for detail."""
    check_registry(kopf.get_default_registry())
    settings.persistence.diffbase_storage = NoDiffBase()
    if not verbose:
        logging.getLogger(OBJECT_LOGGER).setLevel(logging.WARNING)
