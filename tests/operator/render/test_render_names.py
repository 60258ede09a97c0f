"""Children have fixed names derived from the gateway's, and carry the common labels."""

from __future__ import annotations

from llmgw_operator.render import names


def test_children_are_named_after_the_gateway() -> None:
    assert names.deployment("chat") == "chat"
    assert names.hpa("chat") == "chat"
    assert names.config_map("chat") == "chat-proxy-config"
    assert names.secret("chat") == "chat-provider-keys"


def test_a_policy_key_file_is_named_after_the_policy() -> None:
    assert names.key_file("primary") == "/etc/llmgw/keys/primary"


def test_labels_name_the_instance_and_the_operator() -> None:
    assert names.labels("chat") == {
        "app.kubernetes.io/name": "llmgw-gateway",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/managed-by": "llmgw-operator",
        "app.kubernetes.io/part-of": "llmgw",
        "llmgateway.io/gateway": "chat",
    }


def test_the_selector_is_a_subset_of_the_labels() -> None:
    assert names.selector_labels("chat").items() <= names.labels("chat").items()
