"""kopf's per-event diff base and INFO lines are off, and only while no handler needs them."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
import pytest

from llmgw_operator import handlers, kopf_lean

SAMPLE: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d", "namespace": "n", "labels": {"a": "b"}},
    "spec": {"replicas": 1},
    "status": {"readyReplicas": 1},
}


def test_the_operators_handlers_need_no_diff_base() -> None:
    assert handlers.GATEWAYS  # imported: the decorators registered the handlers
    assert kopf_lean.change_handlers(kopf.get_default_registry()) == []
    kopf_lean.check_registry(kopf.get_default_registry())


def test_a_handler_that_reads_changes_refuses_the_lean_settings() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.update("example.com", "v1", "things", registry=registry)
    def on_update(**_: object) -> None:
        return None

    @kopf.on.event("example.com", "v1", "things", registry=registry)
    def on_event(**_: object) -> None:
        return None

    needing = kopf_lean.change_handlers(registry)
    assert len(needing) == 1 and needing[0].endswith("on_update"), needing
    with pytest.raises(RuntimeError, match="on_update"):
        kopf_lean.check_registry(registry)


def test_the_diff_base_keeps_nothing() -> None:
    storage = kopf_lean.NoDiffBase()
    body = kopf.Body(cast(kopf.RawBody, SAMPLE))
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch


@pytest.mark.parametrize(("verbose", "level"), [(False, logging.WARNING), (True, logging.NOTSET)])
def test_kopfs_per_object_lines_are_quiet_unless_verbose(
    verbose: bool, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = logging.getLogger(kopf_lean.OBJECT_LOGGER)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    settings = kopf.OperatorSettings()
    kopf_lean.apply(settings, verbose=verbose)
    assert isinstance(settings.persistence.diffbase_storage, kopf_lean.NoDiffBase)
    assert logger.level == level
