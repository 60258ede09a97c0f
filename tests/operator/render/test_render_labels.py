"""Every rendered child carries the common labels, only those, and no owner reference (added on apply)."""

from __future__ import annotations

from typing import Any

import renderkit
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator.api import gateway
from llmgw_operator.render import configmap, deployment, hpa, names, proxy_config, secret


def _children(name: str, spec: gateway.LLMGatewaySpec) -> list[dict[str, Any]]:
    policies = {p: renderkit.policy_spec() for p in spec.policy_names()}
    compiled = proxy_config.compile_config(spec, policies, proxy_config.effective_replicas(spec))
    children = [
        configmap.render(name, "ns", compiled),
        secret.render(name, "ns", {p: b"k" for p in policies}),
        deployment.render(name, "ns", spec, image="img", native_sidecar=True),
    ]
    scaler = hpa.render(name, "ns", spec)
    return children + ([scaler] if scaler is not None else [])


@given(name=renderkit.names, spec=renderkit.gateway_specs())
def test_every_child_carries_the_labels(name: str, spec: gateway.LLMGatewaySpec) -> None:
    for child in _children(name, spec):
        # The keys Secret alone is also marked, for the operator's server-side Secret selector.
        extra = {names.PROVIDER_KEY_LABEL: "rendered"} if child["kind"] == "Secret" else {}
        assert child["metadata"]["labels"] == names.labels(name) | extra, child["kind"]
        assert child["metadata"]["namespace"] == "ns"
        assert "ownerReferences" not in child["metadata"]


@given(name=renderkit.names, spec=renderkit.gateway_specs(), native=st.booleans())
def test_pods_carry_the_labels_under_the_applications_own(
    name: str, spec: gateway.LLMGatewaySpec, native: bool
) -> None:
    pod_labels = deployment.render(name, "ns", spec, image="img", native_sidecar=native)["spec"]["template"][
        "metadata"
    ]["labels"]
    assert names.selector_labels(name).items() <= pod_labels.items()
    assert set(names.labels(name)) <= set(pod_labels)
