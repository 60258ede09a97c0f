"""The child kinds the reconcile pass reads live are those the renderer makes, for every spec shape."""

from __future__ import annotations

import base64

import pytest
import renderkit

from llmgw_operator import reconcile
from llmgw_operator.render import children, resolve

SECRETS = {"llm-keys": {"primary": base64.b64encode(b"sk-1").decode()}}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"replicas": 3},
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70}},
        {"template": None},
    ],
)
def test_wanted_kinds_match_the_rendered_children(overrides: dict[str, object]) -> None:
    spec = renderkit.gateway_spec(**overrides)
    resolution = resolve.gateway_policies(spec, renderkit.policies(), SECRETS)
    rendered = children.render(
        "chat", "ns", spec, resolution, observed_replicas=None, default_image="img:1", native_sidecar=True
    )
    assert reconcile._wanted_kinds(spec) == {m["kind"] for m in rendered.manifests()}
