"""Resolving a gateway's policies and keys names what is missing, and never a key's value."""

from __future__ import annotations

import base64
from typing import Any

import hypothesis
import pytest
import renderkit
from hypothesis import strategies as st

from llmgw_operator.render import resolve
from llmgw_operator.render.conditions import FALSE, TRUE
from llmgw_proxy.runtime import keys

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
            renderkit.policies(), {"llm-keys": {"primary": ""}}, "InvalidKey", "primary", id="empty"
        ),
        pytest.param(
            renderkit.policies(), {"llm-keys": resolve.UNMARKED}, "SecretNotMarked", "llm-keys", id="unmarked"
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


def test_a_missing_policy_names_the_namespace_it_was_looked_for_in() -> None:
    policies = {"primary": renderkit.policy_spec()}
    verdict = resolve.gateway_policies(renderkit.gateway_spec(), policies, SECRETS, "team-a").verdict
    assert verdict.reason == "PolicyNotFound"
    assert "namespace team-a" in verdict.message and "fallback" in verdict.message


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


def _key_secret(value: bytes) -> dict[str, Any]:
    return {"llm-keys": {"primary": base64.b64encode(value).decode()}}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(b"\xff\xfe" + KEY, "is not UTF-8", id="not-utf8"),
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"\n", "is empty", id="only-a-newline"),
        pytest.param(KEY[:5] + b"\n" + KEY[5:], "whitespace or a control character", id="inner-newline"),
        pytest.param(KEY[:5] + b" " + KEY[5:], "whitespace or a control character", id="inner-space"),
        pytest.param(KEY[:5] + b"\t" + KEY[5:], "whitespace or a control character", id="tab"),
        pytest.param(KEY + b"\x00", "whitespace or a control character", id="nul"),
        pytest.param(KEY + b"\x7f", "whitespace or a control character", id="del"),
        pytest.param(KEY + "é".encode(), "a non-ASCII character", id="non-ascii"),
        pytest.param(KEY * 1000, "is longer than", id="too-long"),
    ],
)
def test_an_unusable_key_is_invalid_and_never_quoted(value: bytes, problem: str) -> None:
    verdict, key = resolve.secret_key(renderkit.policy_spec(), _key_secret(value))
    assert (verdict.status, verdict.reason, key) == (FALSE, "InvalidKey", None)
    assert problem in verdict.message
    assert "primary" in verdict.message and "llm-keys" in verdict.message
    assert KEY.decode()[:8] not in verdict.message
    gateway = resolve.gateway_policies(renderkit.gateway_spec(), renderkit.policies(), _key_secret(value))
    assert (gateway.verdict.reason, gateway.keys) == ("InvalidKey", {})
    assert KEY.decode()[:8] not in gateway.verdict.message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(KEY, id="bare"),
        pytest.param(KEY + b"\n", id="one-trailing-newline"),
        pytest.param(KEY + b"\r\n", id="crlf"),
        pytest.param(b"  " + KEY + b"\n\n", id="whitespace-around"),
    ],
)
def test_a_usable_key_is_copied_without_the_whitespace_around_it(value: bytes) -> None:
    verdict, key = resolve.secret_key(renderkit.policy_spec(), _key_secret(value))
    assert (verdict.reason, key) == ("SecretFound", KEY)


@pytest.mark.parametrize(
    ("labels", "marked"),
    [
        pytest.param({"llmgateway.io/provider-key": "true"}, True, id="marked"),
        pytest.param(None, False, id="no-labels"),
        pytest.param({"llmgateway.io/provider-key": "yes"}, False, id="another-value"),
        pytest.param({"llmgateway.io/provider-key": "rendered"}, False, id="a-gateways-own-keys"),
        pytest.param({"provider-key": "true"}, False, id="another-prefix"),
    ],
)
def test_only_a_secret_marked_as_a_provider_key_is_read(labels: dict[str, str] | None, marked: bool) -> None:
    live = {"metadata": {"name": "llm-keys", "labels": labels}, "data": SECRETS["llm-keys"]}
    observed = resolve.observe_secret(live)
    assert (observed == SECRETS["llm-keys"]) is marked
    verdict, key = resolve.secret_key(renderkit.policy_spec(), {"llm-keys": observed})
    if marked:
        assert (verdict.reason, key) == ("SecretFound", KEY)
    else:
        assert (verdict.status, verdict.reason, key) == (FALSE, "SecretNotMarked", None)
        assert "llmgateway.io/provider-key=true" in verdict.message


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.one_of(
        st.binary(max_size=64),
        st.text(alphabet=st.characters(max_codepoint=0x80), max_size=64).map(str.encode),
    )
)
def test_the_operator_accepts_exactly_the_keys_the_sidecar_serves(
    tmp_path_factory: Any, value: bytes
) -> None:
    path = tmp_path_factory.mktemp("key") / "primary"
    path.write_bytes(value)
    try:
        served: bytes | None = keys.read(str(path)).reveal().encode()
    except keys.KeyFileError:
        served = None
    verdict, copied = resolve.secret_key(renderkit.policy_spec(), _key_secret(value))
    assert copied == served
    assert verdict.reason == ("SecretFound" if served is not None else "InvalidKey")
