"""Policies with global limits, budgets and a shared cache: the operator's side (resolve, compile, status)."""

from __future__ import annotations

import base64
import pathlib

import renderkit
import yaml

from llmgw_operator.api import policy
from llmgw_operator.render import dataplane, names, proxy_config, resolve
from llmgw_operator.render.conditions import FALSE, TRUE
from llmgw_proxy import config, status

PASSWORD = b"redis-password-not-in-config"
SECRETS = {
    "llm-keys": {"primary": base64.b64encode(b"sk-key").decode()},
    "redis": {"password": base64.b64encode(PASSWORD).decode()},
}
STORE = {"url": "redis://redis:6379/0", "passwordSecretRef": {"name": "redis", "key": "password"}}


def global_policies() -> dict[str, resolve.Observed]:
    return {
        "primary": renderkit.policy_spec(
            sharedStore=STORE,
            rateLimit={"requestsPerMinute": 100, "tokensPerMinute": 9_000, "scope": "global"},
            modelRateLimits={"m": {"requestsPerMinute": 10}},
            budget={"tokensPerMonth": 1_000_000},
            cache={"enabled": True, "shared": True},
        ),
        "fallback": renderkit.policy_spec(baseURL="http://127.0.0.1:18081/v1", apiKeySecretRef=None),
    }


def test_a_global_limit_is_compiled_whole_with_the_replicas_as_its_fallback_share() -> None:
    resolution = resolve.gateway_policies(renderkit.gateway_spec(), global_policies(), SECRETS)
    assert resolution.verdict.status == TRUE, resolution.verdict.message
    assert resolution.keys[names.STORE_PASSWORD_KEY] == PASSWORD
    compiled = proxy_config.compile_config(renderkit.gateway_spec(), resolution.policies, 3, "team-a")
    primary = compiled.providers["primary"]
    assert primary.rate_limit == config.RateLimit(
        requests_per_minute=100, tokens_per_minute=9_000, scope="global", fallback_share=3
    )
    assert primary.model_rate_limits["m"].requests_per_minute == 4  # a shared limit, still split
    assert primary.shared_id == "team-a/primary"
    assert primary.budget == config.TokenBudget(tokens_per_month=1_000_000)
    assert primary.cache.shared
    assert compiled.providers["fallback"].shared_id is None
    assert compiled.shared_store == config.SharedStore(
        url="redis://redis:6379/0", password_file="/etc/llmgw/keys/_shared-store-password"
    )
    assert PASSWORD.decode() not in compiled.model_dump_json()


def test_two_policies_of_one_gateway_must_name_one_shared_store() -> None:
    policies = global_policies()
    policies["fallback"] = renderkit.policy_spec(
        apiKeySecretRef=None, sharedStore={"url": "redis://other:6379"}
    )
    verdict = resolve.gateway_policies(renderkit.gateway_spec(), policies, SECRETS).verdict
    assert (verdict.status, verdict.reason) == (FALSE, "SharedStoreConflict")
    assert "primary (redis://redis:6379/0)" in verdict.message and "redis://other:6379" in verdict.message


def test_an_unreadable_store_password_is_named_and_never_quoted() -> None:
    verdict = resolve.gateway_policies(
        renderkit.gateway_spec(), global_policies(), {"llm-keys": SECRETS["llm-keys"]}
    ).verdict
    assert (verdict.status, verdict.reason) == (FALSE, "SharedStoreUnresolved")
    assert "primary (Redis password: Secret redis not found)" in verdict.message


def _report(reachable: bool, used: int) -> status.SidecarStatus:
    budget = [status.BudgetReport(period="month", used=used, limit=1000)]
    return status.SidecarStatus(
        ready=True,
        providers={"primary": status.ProviderReport(budget=budget)},
        shared_store=status.SharedStoreReport(reachable=reachable),
    )


def test_pods_that_cannot_reach_redis_make_providers_unhealthy_with_their_own_reason() -> None:
    obs = dataplane.aggregate(
        None, [dataplane.PodReport("a", _report(False, 10)), dataplane.PodReport("b", _report(True, 30))]
    )
    verdict = dataplane.providers_verdict(obs)
    assert (verdict.status, verdict.reason) == (FALSE, "SharedStoreUnreachable")
    assert verdict.message.startswith("1 of 2 pods cannot reach the shared store (Redis)")
    assert dataplane.budget_used([obs], "primary") == [{"period": "month", "used": 30, "limit": 1000}]
    assert dataplane.budget_used([obs], "fallback") is None
    healthy = dataplane.aggregate(None, [dataplane.PodReport("a", _report(True, 10))])
    assert dataplane.providers_verdict(healthy).status == TRUE


def test_the_redis_sample_policy_is_valid_and_compiles_to_a_global_limit() -> None:
    sample = pathlib.Path(__file__).resolve().parents[3] / "samples" / "redis" / "providerpolicy-global.yaml"
    document = yaml.safe_load(sample.read_text())
    spec = policy.ProviderPolicySpec.model_validate(document["spec"])
    gateway = renderkit.gateway_spec(routes=[{"model": "m", "targets": [{"policy": "global"}]}])
    compiled = proxy_config.compile_config(gateway, {"global": spec}, 2, "team-a")
    limit = compiled.providers["global"].rate_limit
    assert limit is not None and (limit.scope, limit.fallback_share) == (config.LimitScope.GLOBAL, 2)
    assert compiled.shared_store is not None and compiled.shared_store.password_file is None
