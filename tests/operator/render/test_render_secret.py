"""The keys Secret: one base64 entry per policy name, nothing else."""

from __future__ import annotations

import base64

from llmgw_operator.render import names, secret


def test_holds_one_key_per_policy_in_base64() -> None:
    rendered = secret.render("chat", "team-a", {"primary": b"sk-test-123", "fallback": b"\x00\xffbytes"})
    assert rendered["type"] == "Opaque"
    assert rendered["metadata"] == {
        "name": "chat-provider-keys",
        "namespace": "team-a",
        "labels": names.labels("chat") | {"llmgateway.io/provider-key": "rendered"},
    }
    assert {k: base64.b64decode(v) for k, v in rendered["data"].items()} == {
        "primary": b"sk-test-123",
        "fallback": b"\x00\xffbytes",
    }


def test_never_carries_a_key_in_plain_text() -> None:
    rendered = secret.render("chat", "team-a", {"primary": b"sk-test-123"})
    assert "sk-test-123" not in repr(rendered)
    assert "stringData" not in rendered


def test_an_empty_gateway_gets_an_empty_secret_so_the_volume_still_mounts() -> None:
    assert secret.render("chat", "team-a", {})["data"] == {}
