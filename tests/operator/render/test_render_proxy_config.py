"""Compiling a gateway and its policies into the proxy config: a field mapping plus the limit split."""

from __future__ import annotations

import math

import pydantic
import pytest
import renderkit
import yaml
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator.api import gateway, policy
from llmgw_operator.render import configmap, proxy_config
from llmgw_proxy import config


def test_providers_are_named_after_the_policies_the_routes_use() -> None:
    compiled = proxy_config.compile_config(
        renderkit.gateway_spec(), renderkit.policies() | {"unused": renderkit.policy_spec()}, replicas=1
    )
    assert sorted(compiled.providers) == ["fallback", "primary"]
    route = compiled.route_for("gpt-4o-mini")
    assert route is not None
    assert [(t.provider, t.model) for t in route.targets] == [("primary", None), ("fallback", "llama3")]


def test_a_policy_with_a_secret_reads_its_key_from_the_file_named_after_it() -> None:
    compiled = proxy_config.compile_config(renderkit.gateway_spec(), renderkit.policies(), replicas=1)
    assert compiled.providers["primary"].api_key_file == "/etc/llmgw/keys/primary"
    assert compiled.providers["fallback"].api_key_file is None


def test_listens_on_loopback_and_serves_probes_on_all_interfaces() -> None:
    spec = renderkit.gateway_spec(proxy={"port": 18000, "adminPort": 19000, "logLevel": "debug"})
    compiled = proxy_config.compile_config(spec, renderkit.policies(), replicas=1)
    assert (compiled.listen.host, compiled.listen.port) == ("127.0.0.1", 18000)
    assert (compiled.admin.host, compiled.admin.port) == ("0.0.0.0", 19000)
    assert compiled.log_level == "debug"


def test_the_gateway_caps_the_upstream_tries_of_one_request() -> None:
    default = proxy_config.compile_config(renderkit.gateway_spec(), renderkit.policies(), replicas=1)
    assert default.max_attempts == 5
    spec = renderkit.gateway_spec(proxy={"maxAttempts": 2})
    assert proxy_config.compile_config(spec, renderkit.policies(), replicas=1).max_attempts == 2


def test_a_missing_policy_is_named() -> None:
    with pytest.raises(KeyError, match="fallback"):
        proxy_config.compile_config(
            renderkit.gateway_spec(), {"primary": renderkit.policy_spec()}, replicas=1
        )


def test_policy_settings_map_field_by_field() -> None:
    spec = renderkit.policy_spec(
        provider="azure-openai",
        apiVersion="2024-06-01",
        timeouts={"connect": 2, "firstByte": 7, "firstEvent": 8, "streamIdle": 9, "total": 30},
        retry={
            "attempts": 4,
            "baseBackoff": 0.5,
            "maxBackoff": 2,
            "honorRetryAfter": False,
            "maxRetryAfter": 9,
            "budgetRatio": 0.5,
            "budgetMinPerSecond": 3,
            "budgetWindow": 20,
            "fallbackOnErrorCodes": ["context_length_exceeded", "content_filter"],
        },
        circuitBreaker={"consecutiveFailures": 3, "failureRatio": 0.5, "openDuration": 5, "failOn": ["5xx"]},
        cache={"enabled": True, "ttl": 60, "mode": "all"},
        forwardHeaders=["X-Tenant", "OpenAI-Project"],
        models=["gpt-4o", "gpt-4o-mini"],
    )
    compiled = proxy_config.compile_config(
        renderkit.gateway_spec(routes=[{"model": "m", "targets": [{"policy": "p"}]}]), {"p": spec}, replicas=1
    )
    provider = compiled.providers["p"]
    assert provider.kind is config.ProviderKind.AZURE_OPENAI
    assert provider.api_version == "2024-06-01"
    assert provider.timeouts == config.Timeouts(
        connect=2, first_byte=7, first_event=8, stream_idle=9, total=30
    )
    assert provider.retry == config.Retry(
        attempts=4,
        base_backoff=0.5,
        max_backoff=2,
        honor_retry_after=False,
        max_retry_after=9,
        budget_ratio=0.5,
        budget_min_per_second=3,
        budget_window=20,
        fallback_on_error_codes=("context_length_exceeded", "content_filter"),
    )
    assert provider.circuit_breaker == config.CircuitBreaker.model_validate(
        {"consecutiveFailures": 3, "failureRatio": 0.5, "openDuration": 5, "failOn": ["5xx"]}
    )
    assert provider.cache == config.CachePolicy(enabled=True, ttl=60, mode=config.CacheMode.ALL)
    assert provider.forward_headers == ("x-tenant", "openai-project")
    assert provider.models == ("gpt-4o", "gpt-4o-mini")


def test_a_policy_without_models_lets_the_sidecar_send_any() -> None:
    compiled = proxy_config.compile_config(renderkit.gateway_spec(), renderkit.policies(), replicas=1)
    assert all(p.models is None and p.forward_headers == () for p in compiled.providers.values())


@pytest.mark.parametrize(
    ("ours", "theirs", "extra"),
    [
        pytest.param(policy.Timeouts, config.Timeouts, set(), id="timeouts"),
        pytest.param(policy.Retry, config.Retry, set(), id="retry"),
        pytest.param(policy.CircuitBreaker, config.CircuitBreaker, set(), id="circuit-breaker"),
        pytest.param(policy.CachePolicy, config.CachePolicy, set(), id="cache"),
        # scope: the policy's three are the proxy's two plus the operator's split (fallbackShare).
        pytest.param(policy.RateLimit, config.RateLimit, {"scope", "fallback_share"}, id="rate-limit"),
        pytest.param(policy.UpstreamLimits, config.UpstreamLimits, set(), id="upstream-limits"),
        pytest.param(policy.TokenBudget, config.TokenBudget, set(), id="budget"),
    ],
)
def test_policy_fields_mirror_the_proxy_config_with_the_same_defaults(
    ours: type[pydantic.BaseModel], theirs: type[pydantic.BaseModel], extra: set[str]
) -> None:
    assert set(ours.model_fields) - extra == set(theirs.model_fields) - extra
    for name, field in theirs.model_fields.items():
        if name in extra:
            continue
        assert ours.model_fields[name].get_default(call_default_factory=True) == field.get_default(
            call_default_factory=True
        ), name


def test_upstream_limits_map_field_by_field() -> None:
    limits = {
        "maxResponseBytes": 1048576,
        "maxHeaderBytes": 8192,
        "maxHeaders": 40,
        "maxEventBytes": 65536,
        "poolSize": 2048,
        "poolWait": 2.5,
    }
    spec = renderkit.policy_spec(upstreamLimits=limits)
    compiled = proxy_config.compile_config(
        renderkit.gateway_spec(routes=[{"model": "m", "targets": [{"policy": "p"}]}]), {"p": spec}, replicas=1
    )
    assert compiled.providers["p"].upstream_limits == config.UpstreamLimits.model_validate(limits)


HPA = {"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}}


@pytest.mark.parametrize(
    ("overrides", "observed", "expected"),
    [
        pytest.param({}, None, 1, id="default-one"),
        pytest.param({"replicas": 4}, None, 4, id="fixed"),
        pytest.param({"replicas": 0}, None, 1, id="scaled-to-zero-still-splits-by-one"),
        pytest.param(HPA, None, 2, id="hpa-before-deployment"),
        pytest.param(HPA, 4, 4, id="hpa-current"),
        pytest.param(HPA, 9, 5, id="hpa-clamped-high"),
        pytest.param(HPA, 0, 2, id="hpa-clamped-low"),
    ],
)
def test_effective_replicas(overrides: dict[str, object], observed: int | None, expected: int) -> None:
    assert proxy_config.effective_replicas(renderkit.gateway_spec(**overrides), observed) == expected


def test_shared_limits_are_split_per_pod_and_per_pod_limits_are_not() -> None:
    shared = renderkit.policy_spec(
        rateLimit={"requestsPerMinute": 100, "tokensPerMinute": 1001, "requestBurst": 10}
    )
    per_pod = renderkit.policy_spec(rateLimit={"requestsPerMinute": 100, "scope": "perPod"})
    spec = renderkit.gateway_spec(
        routes=[
            {"model": "a", "targets": [{"policy": "shared"}]},
            {"model": "b", "targets": [{"policy": "pod"}]},
        ]
    )
    compiled = proxy_config.compile_config(spec, {"shared": shared, "pod": per_pod}, replicas=3)
    limit = compiled.providers["shared"].rate_limit
    assert limit is not None
    assert (limit.requests_per_minute, limit.tokens_per_minute, limit.request_burst) == (34, 334, 4)
    assert limit.token_burst is None
    pod_limit = compiled.providers["pod"].rate_limit
    assert pod_limit is not None
    assert pod_limit.requests_per_minute == 100


def test_per_model_limits_are_split_too() -> None:
    spec = renderkit.policy_spec(modelRateLimits={"gpt-4o": {"tokensPerMinute": 90}})
    compiled = proxy_config.compile_config(
        renderkit.gateway_spec(routes=[{"model": "m", "targets": [{"policy": "p"}]}]), {"p": spec}, replicas=2
    )
    assert compiled.providers["p"].model_rate_limits["gpt-4o"].tokens_per_minute == 45


@given(limit=renderkit.limits, replicas=renderkit.replica_counts)
def test_a_split_never_falls_short_and_overshoots_by_less_than_one_per_pod(limit: int, replicas: int) -> None:
    share = proxy_config.split(limit, replicas)
    assert share is not None
    assert share >= 1
    assert limit <= share * replicas <= limit + replicas - 1
    assert share == math.ceil(limit / replicas)


@given(spec=renderkit.gateway_specs(), replicas=renderkit.replica_counts)
def test_the_compiled_config_survives_the_proxys_own_parser(
    spec: gateway.LLMGatewaySpec, replicas: int
) -> None:
    policies = {
        name: renderkit.policy_spec(rateLimit={"tokensPerMinute": 1000}) for name in spec.policy_names()
    }
    compiled = proxy_config.compile_config(spec, policies, replicas)
    text = yaml.safe_dump(compiled.model_dump(mode="json", by_alias=True))
    assert config.parse(yaml.safe_load(text)) == compiled


@given(requests=st.integers(min_value=1, max_value=10**6), replicas=renderkit.replica_counts)
def test_the_gateway_total_covers_the_shared_quota(requests: int, replicas: int) -> None:
    shared = renderkit.policy_spec(rateLimit={"requestsPerMinute": requests})
    compiled = proxy_config.compile_config(
        renderkit.gateway_spec(routes=[{"model": "m", "targets": [{"policy": "p"}]}]), {"p": shared}, replicas
    )
    limit = compiled.providers["p"].rate_limit
    assert limit is not None and limit.requests_per_minute is not None
    assert requests <= limit.requests_per_minute * replicas < requests + replicas


@given(st.integers(min_value=1, max_value=20), st.sampled_from(["debug", "info", "warning"]))
def test_the_sidecar_hashes_the_configmap_it_reads_as_the_operator_hashes_what_it_rendered(
    replicas: int, level: str
) -> None:
    spec = renderkit.gateway_spec(proxy={"logLevel": level})
    compiled = proxy_config.compile_config(spec, renderkit.policies(), replicas=replicas)
    text = configmap.serialise(compiled)
    assert config.digest(config.parse(yaml.safe_load(text))) == config.digest(compiled)


def test_the_config_hash_ignores_defaults_written_out_and_sees_any_change() -> None:
    doc = {
        "providers": {"p": {"baseUrl": "http://x/v1"}},
        "routes": [{"model": "*", "targets": [{"provider": "p"}]}],
    }
    spelled = {**doc, "version": 1, "maxAttempts": 5, "admin": {"port": 9090}}
    assert config.digest(config.parse(doc)) == config.digest(config.parse(spelled))
    assert config.digest(config.parse(doc)) != config.digest(config.parse({**doc, "maxAttempts": 4}))


def test_a_route_declares_the_endpoints_it_serves_and_anthropic_policies_keep_their_kind() -> None:
    spec = renderkit.gateway_spec(
        routes=[
            {
                "model": "gpt-4o-mini",
                "targets": [{"policy": "primary"}],
                "endpoints": ["responses", "audio/*"],
            },
            {"model": "claude-sonnet", "targets": [{"policy": "claude"}]},
        ]
    )
    claude = renderkit.policy_spec(provider="anthropic", baseURL="https://api.anthropic.com/v1")
    compiled = proxy_config.compile_config(spec, renderkit.policies() | {"claude": claude}, replicas=1)
    assert compiled.routes[0].endpoints == ("responses", "audio")
    assert compiled.routes[1].endpoints is None
    assert compiled.providers["claude"].kind is config.ProviderKind.ANTHROPIC
    assert compiled.family(compiled.routes[1]) is config.ApiFamily.ANTHROPIC


def test_a_route_whose_policies_speak_different_apis_is_refused_when_compiled() -> None:
    # CEL sees one object: the kinds of the policies a route names are checked here (RenderFailed).
    spec = renderkit.gateway_spec(
        routes=[{"model": "any", "targets": [{"policy": "primary"}, {"policy": "claude"}]}]
    )
    claude = renderkit.policy_spec(provider="anthropic", baseURL="https://api.anthropic.com/v1")
    with pytest.raises(pydantic.ValidationError, match="targets mix API families"):
        proxy_config.compile_config(spec, renderkit.policies() | {"claude": claude}, replicas=1)
