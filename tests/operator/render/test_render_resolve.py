"""Resolving a gateway's policies and keys names what is missing, and never a key's value."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import renderkit

from llmgw_operator.render import resolve
from llmgw_operator.render.conditions import FALSE, TRUE

KEY = b"sk-test-do-not-leak"
SECRETS = {"llm-keys": {"primary": base64.b64encode(KEY).decode()}}


def test_resolves_policies_and_reads_their_keys() -> None:
    result = resolve.gateway_policies(renderkit.gateway_spec(), renderkit.policies(), SECRETS)
    assert (result.verdict.status, result.verdict.reason) == (TRUE, "Resolved")
    assert sorted(result.policies) == ["fallback", "primary"]
    assert result.keys == {"primary": KEY}


@pytest.mark.parametrize(
    ("policies", "secrets", "reason", "named"),
    [
        pytest.param(
            {"primary": renderkit.policy_spec()}, SECRETS, "PolicyNotFound", "fallback", id="no-policy"
        ),
        pytest.param(
            renderkit.policies() | {"fallback": "baseURL: String should match pattern"},
            SECRETS,
            "PolicyInvalid",
            "fallback",
            id="invalid-policy",
        ),
        pytest.param(renderkit.policies(), {}, "SecretNotFound", "llm-keys", id="no-secret"),
        pytest.param(
            renderkit.policies(), {"llm-keys": {"other": "eA=="}}, "SecretKeyMissing", "primary", id="no-key"
        ),
        pytest.param(
            renderkit.policies(), {"llm-keys": {"primary": ""}}, "SecretKeyMissing", "primary", id="empty"
        ),
        pytest.param(
            renderkit.policies()
            | {"fallback": renderkit.policy_spec(apiKeySecretRef=None, models=["mistral"])},
            SECRETS,
            "ModelNotAllowed",
            "llama3 via fallback",
            id="model-not-allowed",
        ),
    ],
)
def test_names_what_is_missing(
    policies: dict[str, Any], secrets: dict[str, Any], reason: str, named: str
) -> None:
    verdict = resolve.gateway_policies(renderkit.gateway_spec(), policies, secrets).verdict
    assert (verdict.status, verdict.reason) == (FALSE, reason)
    assert named in verdict.message
    assert KEY.decode() not in verdict.message


def test_an_allowed_model_resolves() -> None:
    policies = renderkit.policies() | {
        "fallback": renderkit.policy_spec(apiKeySecretRef=None, models=["llama3"])
    }
    assert resolve.gateway_policies(renderkit.gateway_spec(), policies, SECRETS).verdict.status == TRUE


def test_a_policy_without_a_secret_needs_none() -> None:
    verdict, key = resolve.secret_key(renderkit.policy_spec(apiKeySecretRef=None), {})
    assert (verdict.status, verdict.reason, key) == (TRUE, "NoSecretNeeded", None)


def test_a_found_key_is_reported_by_name_only() -> None:
    verdict, key = resolve.secret_key(renderkit.policy_spec(), SECRETS)
    assert (verdict.status, verdict.reason, key) == (TRUE, "SecretFound", KEY)
    assert KEY.decode() not in verdict.message
