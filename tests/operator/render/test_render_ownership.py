"""A child carries its gateway's controller reference and none of the gateway's labels."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw_operator.render import ownership, secret

UID = "0b6e3f5c-1111-4222-8333-944445555666"
GATEWAY: dict[str, Any] = {
    "apiVersion": "llmgateway.io/v1alpha1",
    "kind": "LLMGateway",
    "metadata": {
        "name": "chat",
        "namespace": "team-a",
        "uid": UID,
        "labels": {"argocd.argoproj.io/secret-type": "repository", "team": "a"},
        "annotations": {"note": "x"},
    },
}


def test_adopting_adds_the_controller_reference_and_copies_no_label() -> None:
    rendered = secret.render("chat", "team-a", {"primary": b"k"})
    adopted = ownership.adopt(rendered, GATEWAY)
    assert adopted["metadata"]["labels"] == rendered["metadata"]["labels"]
    assert "argocd.argoproj.io/secret-type" not in adopted["metadata"]["labels"]
    assert "annotations" not in adopted["metadata"]
    assert adopted["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "llmgateway.io/v1alpha1",
            "kind": "LLMGateway",
            "name": "chat",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert "ownerReferences" not in rendered["metadata"]  # the rendered manifest is left as it was


def _live(*references: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "metadata": {"name": "chat-proxy-config", "ownerReferences": list(references)},
    }


@pytest.mark.parametrize(
    ("live", "ours"),
    [
        pytest.param(_live(ownership.owner_reference(GATEWAY)), True, id="ours"),
        pytest.param(_live(), False, id="no-owner"),
        pytest.param({"kind": "ConfigMap", "metadata": {"name": "x"}}, False, id="no-references-at-all"),
        pytest.param(
            _live(ownership.owner_reference(GATEWAY) | {"uid": "another-gateway-of-that-name"}),
            False,
            id="a-former-gateway-of-the-same-name",
        ),
        pytest.param(
            _live(ownership.owner_reference(GATEWAY) | {"controller": False}), False, id="not-as-controller"
        ),
    ],
)
def test_only_a_child_the_gateway_controls_is_its_own(live: dict[str, Any], ours: bool) -> None:
    assert ownership.controlled_by(live, UID) is ours


def test_a_conflict_names_the_object_and_its_controller() -> None:
    other = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": True}
    assert ownership.describe(_live(other)) == "ConfigMap chat-proxy-config (controlled by Deployment web)"
    assert ownership.describe(_live()) == "ConfigMap chat-proxy-config"
