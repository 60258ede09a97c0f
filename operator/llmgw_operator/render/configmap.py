"""The ConfigMap holding the compiled proxy config, serialised byte-stably."""

from __future__ import annotations

from typing import Any

import yaml

from llmgw_operator.render import names
from llmgw_proxy import config

HEADER = "# Compiled by llmgw-operator from the LLMGateway and its ProviderPolicies. Do not edit.\n"


def serialise(document: config.ProxyConfig) -> str:
    """Same config, same bytes: keys sorted, JSON-compatible values, no anchors or timestamps.

    Only fields that differ from their defaults are written (plus ``version``).
    A sidecar refuses fields it does not know, so a field added in a later
    release, left at its default, must not appear: that keeps older sidecars
    (pinned images, pods mid-rollout) reading configs from a newer operator.
    The flip side: within one config version a default never changes.
    """
    data = config.canonical(document)
    return HEADER + yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)


def render(gateway: str, namespace: str, document: config.ProxyConfig) -> dict[str, Any]:
    metadata = names.metadata(names.config_map(gateway), namespace, gateway)
    metadata["annotations"] = {names.CONFIG_DIGEST_ANNOTATION: config.digest(document)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {names.CONFIG_KEY: serialise(document)},
    }
