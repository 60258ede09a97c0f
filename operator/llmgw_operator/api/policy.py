"""ProviderPolicy: one upstream provider and how the sidecar treats it.

Field names mirror ``llmgw_proxy.config`` so that compiling a policy into the
proxy config is a mapping, not a translation (``scope`` and ``apiKeySecretRef``
are the only Kubernetes-side additions).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from llmgw_operator.api import common
from llmgw_operator.api import egress as egress_api
from llmgw_proxy import config

KIND = "ProviderPolicy"
PLURAL = "providerpolicies"
SINGULAR = "providerpolicy"
SHORT_NAMES = ("llmpp",)

Seconds = Annotated[float, Field(gt=0, le=3600)]
MODEL_NAME_MAX = 253
ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]
# A header name is an RFC 9110 token; which ones may be forwarded is the proxy config's rule.
ErrorCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
HeaderName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
FORWARD_RULE = "self.all(h, !h.matches('(?i)^(proxy-.*|" + "|".join(sorted(config.NEVER_FORWARDED)) + ")$'))"
FORWARD_MESSAGE = "forwardHeaders may not name a credential, proxy or hop-by-hop header"
MODEL_KEYS_MESSAGE = f"modelRateLimits keys are model names of 1 to {MODEL_NAME_MAX} characters"


class Scope(enum.StrEnum):
    PER_POD = "perPod"
    SHARED = "shared"
    GLOBAL = "global"


class RateLimit(common.Model):
    """Token buckets, refilled continuously. A limit left out is not enforced."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "has(self.requestsPerMinute) || has(self.tokensPerMinute)",
                "rateLimit needs requestsPerMinute or tokensPerMinute",
            )
        )
    )

    requests_per_minute: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Requests per minute."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Prompt plus completion tokens per minute."
    )
    request_burst: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Bucket size for requests; defaults to requestsPerMinute.",
    )
    token_burst: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="Bucket size for tokens; defaults to tokensPerMinute.",
    )
    max_wait: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="Seconds a request may wait for capacity before it is refused with 429.",
    )
    default_max_tokens: int = Field(
        default=256,
        ge=1,
        le=10_000_000,
        description="Completion tokens reserved when a request sets no max_tokens.",
    )
    scope: Scope = Field(
        default=Scope.SHARED,
        description=(
            "shared: the limits are the provider's quota for the whole gateway and the operator splits "
            "them across its pods (ceil(limit / replicas), re-split when replicas change; each gateway "
            "using the policy gets the whole quota). "
            "perPod: every pod enforces the limits as written. "
            "global: one set of buckets in the policy's sharedStore (Redis) for every pod of every "
            "gateway using the policy; while Redis cannot answer, each pod falls back to the shared split."
        ),
    )

    @model_validator(mode="after")
    def _needs_a_limit(self) -> RateLimit:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("rateLimit needs requestsPerMinute or tokensPerMinute")
        return self


class CircuitBreaker(common.Model):
    """Stops calling a failing provider for a while. 429 is never a failure: it pauses instead."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "self.openDuration <= self.maxOpenDuration",
                "circuitBreaker.openDuration must not exceed circuitBreaker.maxOpenDuration",
            )
        )
    )

    consecutive_failures: int | None = Field(
        default=5, ge=1, le=1000, description="Failures in a row that open the breaker."
    )
    failure_ratio: float | None = Field(
        default=None, gt=0, le=1, description="Share of failed requests in the window that opens the breaker."
    )
    window: Seconds = Field(default=30.0, description="Rolling window in seconds for failureRatio.")
    minimum_requests: int = Field(
        default=10, ge=1, le=100_000, description="Requests in the window before failureRatio counts."
    )
    open_duration: Seconds = Field(default=10.0, description="Seconds the breaker stays open the first time.")
    max_open_duration: Seconds = Field(
        default=300.0, description="Cap in seconds for the open duration, which doubles on each failed probe."
    )
    half_open_requests: int = Field(
        default=1, ge=1, le=100, description="Trial requests let through while half-open."
    )
    fail_on: tuple[config.FailureKind, ...] = Field(
        default=(config.FailureKind.SERVER_ERROR, config.FailureKind.TIMEOUT, config.FailureKind.CONNECTION),
        max_length=3,
        description="What counts as a failure: 5xx, timeout, connection.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _open_within_max(self) -> CircuitBreaker:
        if self.open_duration > self.max_open_duration:
            raise ValueError("circuitBreaker.openDuration must not exceed circuitBreaker.maxOpenDuration")
        return self


class Retry(common.Model):
    """Retries against the same target before falling back to the next one."""

    attempts: int = Field(default=2, ge=1, le=10, description="Tries per target, the first included.")
    base_backoff: Seconds = Field(
        default=0.1, description="Seconds before the first retry; doubles, with jitter."
    )
    max_backoff: Seconds = Field(default=5.0, description="Cap in seconds for the backoff.")
    honor_retry_after: bool = Field(default=True, description="Wait as long as an upstream Retry-After asks.")
    max_retry_after: Seconds = Field(
        default=60.0,
        description="Cap in seconds for an upstream Retry-After, as a retry delay and as the provider's "
        "pause after a 429.",
    )
    budget_ratio: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="Retries allowed per request over budgetWindow, on top of budgetMinPerSecond "
        "(per sidecar).",
    )
    budget_min_per_second: float = Field(
        default=1.0, ge=0, le=1000, description="Retries per second allowed whatever the ratio says."
    )
    budget_window: Seconds = Field(default=10.0, description="Seconds over which the retry budget counts.")
    fallback_on_error_codes: tuple[ErrorCode, ...] = Field(
        default=(),
        max_length=32,
        description="Error codes (the error object's code or type) of a 4xx answer that send the "
        "request to the route's next target instead of answering it, e.g. context_length_exceeded "
        "or content_filter. 429, 5xx, timeouts and open breakers move on regardless.",
    )


class Timeouts(common.Model):
    """Upstream timeouts in seconds. ``total`` bounds the whole request, retries and fallbacks included."""

    connect: Seconds = Field(default=5.0, description="Seconds to open the connection.")
    first_byte: Seconds = Field(
        default=60.0, description="Seconds until the upstream's response headers arrive."
    )
    first_event: Seconds = Field(
        default=60.0,
        description="Seconds from a stream's response headers until its first event with data; a "
        "stream that stays silent that long falls back like a failed request.",
    )
    stream_idle: Seconds = Field(
        default=60.0,
        description="Longest silence in seconds of a stream after its first event; then the stream "
        "ends with an error event.",
    )
    total: Seconds = Field(
        default=300.0,
        description="Seconds from the request's arrival until the provider's answer ends, retries and "
        "earlier targets' tries included.",
    )


class CachePolicy(common.Model):
    """Response caching for this provider, in the sidecar's in-memory store (or the sharedStore)."""

    enabled: bool = Field(default=False, description="Cache responses from this provider.")
    ttl: Seconds = Field(default=300.0, description="Seconds a cached response stays fresh.")
    mode: config.CacheMode = Field(
        default=config.CacheMode.DETERMINISTIC,
        description="deterministic: only temperature-0 or seed-pinned requests; all: every request.",
    )
    shared: bool = Field(
        default=False,
        description="Keep entries in the policy's sharedStore (Redis) with their TTL, so a hit in one pod "
        "serves all; the pod's own memory answers while Redis cannot. Needs sharedStore.",
    )


class UpstreamLimits(common.Model):
    """Bounds on the provider's answers and on the sidecar's connections to it.

    An answer that breaks a size bound fails its request with a 502 and its
    connection is closed; a request that finds no free connection within
    ``poolWait`` gets a 503 that never counts against the provider.
    """

    max_response_bytes: int = Field(
        default=32 * config.MiB,
        ge=1 * config.MiB,
        le=1024 * config.MiB,
        description="Largest answer body read whole, after decoding gzip or deflate; raise it for big "
        "embedding batches.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * config.MiB,
        description="Largest response head (and chunked trailers) in bytes.",
    )
    max_headers: int = Field(
        default=128, ge=8, le=10_000, description="Most header (and trailer) fields in one answer."
    )
    max_event_bytes: int = Field(
        default=1 * config.MiB,
        ge=1024,
        le=256 * config.MiB,
        description="Longest server-sent event the sidecar buffers when it must look inside a stream.",
    )
    pool_size: int = Field(
        default=1024,
        ge=1,
        le=65_536,
        description="Connections open at most to the provider; each stream holds one for its length.",
    )
    pool_wait: Seconds = Field(
        default=10.0, description="Seconds a request may wait for a free connection before a 503."
    )


class TokenBudget(common.Model):
    """Prompt plus completion tokens per UTC calendar day and/or month, for every gateway using the policy."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "has(self.tokensPerDay) || has(self.tokensPerMonth)",
                "budget needs tokensPerDay or tokensPerMonth",
            )
        )
    )

    tokens_per_day: int | None = Field(
        default=None, ge=1, le=10**15, description="Tokens per UTC day (resets at 00:00 UTC)."
    )
    tokens_per_month: int | None = Field(
        default=None, ge=1, le=10**15, description="Tokens per UTC calendar month."
    )

    @model_validator(mode="after")
    def _needs_a_period(self) -> TokenBudget:
        if self.tokens_per_day is None and self.tokens_per_month is None:
            raise ValueError("budget needs tokensPerDay or tokensPerMonth")
        return self


class SharedStore(common.Model):
    """The Redis holding the policy's global limits, budget and shared cache (bring your own;
    the Helm chart can deploy a small one for trying it out)."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^(redis|rediss)://[^@]*$",
        description="redis://host:port/db, or rediss:// for TLS; no password in it (passwordSecretRef).",
    )
    password_secret_ref: common.SecretKeyRef | None = Field(
        default=None,
        description="The Secret key holding Redis's password (labelled llmgateway.io/provider-key=true, "
        "like provider keys).",
    )
    username: str | None = Field(default=None, min_length=1, max_length=253, description="Redis ACL user.")
    sentinels: tuple[Annotated[str, Field(max_length=262, pattern=r"^[^:\s]+:[0-9]{1,5}$")], ...] = Field(
        default=(),
        max_length=16,
        description="host:port of Redis Sentinels; when set, the master sentinelMaster is used.",
    )
    sentinel_master: str = Field(
        default="mymaster", min_length=1, max_length=253, description="The Sentinel master's name."
    )
    cluster: bool = Field(
        default=False, description="url names a node of a Redis Cluster; the client finds the others."
    )
    timeout: float = Field(
        default=0.2,
        gt=0,
        le=5,
        description="Seconds one Redis command may take (the sidecar's own load included) before the pod "
        "falls back (see scope: global).",
    )
    max_in_flight: int = Field(
        default=64, ge=1, le=4096, description="Redis commands in flight per pod; past it, the fallback."
    )


SHARED_STATE_RULES = (
    common.cel(
        "has(self.sharedStore) || !has(self.budget)",
        "budget needs sharedStore: a budget counted per pod would be a budget per pod",
    ),
    common.cel(
        "has(self.sharedStore) || !has(self.rateLimit) || self.rateLimit.scope != 'global'",
        "rateLimit.scope global needs sharedStore",
    ),
    common.cel(
        "has(self.sharedStore) || !has(self.modelRateLimits) "
        "|| self.modelRateLimits.all(m, self.modelRateLimits[m].scope != 'global')",
        "modelRateLimits scope global needs sharedStore",
    ),
    common.cel(
        "has(self.sharedStore) || !has(self.cache) || !has(self.cache.shared) || !self.cache.shared",
        "cache.shared needs sharedStore",
    ),
)


class ProviderPolicySpec(common.Model):
    """One upstream provider: where it is, which key to use, and how to treat it."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "self.provider != 'azure-openai' || has(self.apiVersion)",
                "apiVersion is required when provider is azure-openai",
            ),
            common.cel(
                "self.provider == 'openai-compatible' || has(self.apiKeySecretRef)",
                "apiKeySecretRef is required unless provider is openai-compatible",
            ),
            *SHARED_STATE_RULES,
        )
    )

    provider: config.ProviderKind = Field(
        description="openai, azure-openai, openai-compatible (the OpenAI API family) or anthropic "
        "(Anthropic's Messages API). A route's targets must all be of one family."
    )
    base_url: str = Field(
        alias="baseURL",
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Up to and including /v1, e.g. https://api.openai.com/v1.",
    )
    api_version: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Azure OpenAI api-version query parameter; for anthropic, the anthropic-version "
        "header sent when the caller sends none (default 2023-06-01).",
    )
    api_key_secret_ref: common.SecretKeyRef | None = Field(
        default=None,
        description=(
            "The Secret key holding the provider's API key. The Secret must be labelled "
            "llmgateway.io/provider-key=true; the key must be printable ASCII with no whitespace "
            "inside (whitespace around it is dropped), at most 8 KiB."
        ),
    )
    models: tuple[ModelName, ...] | None = Field(
        default=None,
        max_length=128,
        description="Upstream models routes may use with this policy; any model when unset.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    rate_limit: RateLimit | None = Field(default=None, description="Limits for the provider as a whole.")
    model_rate_limits: dict[ModelName, RateLimit] = Field(
        default_factory=dict,
        max_length=64,
        description="Limits per upstream model, on top of rateLimit.",
        # A structural schema cannot bound map keys, so the API server checks ModelName's here.
        json_schema_extra=common.cel_rules(
            common.cel(f"self.all(k, size(k) >= 1 && size(k) <= {MODEL_NAME_MAX})", MODEL_KEYS_MESSAGE)
        ),
    )
    circuit_breaker: CircuitBreaker | None = Field(
        default=None, description="Circuit breaker; none when unset."
    )
    retry: Retry = Field(default_factory=Retry, description="Retries before falling back.")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    cache: CachePolicy = Field(default_factory=CachePolicy, description="Response caching.")
    upstream_limits: UpstreamLimits = Field(
        default_factory=UpstreamLimits, description="Bounds on answers and on the connection pool."
    )
    egress: egress_api.PolicyEgress = Field(
        default_factory=egress_api.PolicyEgress,
        description="How the sidecar reaches this provider: proxy, CA bundle, client certificate.",
    )
    shared_store: SharedStore | None = Field(
        default=None,
        description="Redis for global limits, the budget and the shared cache; every gateway using the "
        "policy shares its state there, under keys named by the policy's namespace and name.",
    )
    budget: TokenBudget | None = Field(
        default=None,
        description="Token budget for every gateway using the policy; past it, 429 insufficient_quota. "
        "Needs sharedStore.",
    )
    forward_headers: tuple[HeaderName, ...] = Field(
        default=(),
        max_length=config.MAX_FORWARD_HEADERS,
        description=(
            "Caller headers sent to the provider besides content-type, accept, user-agent, openai-beta, "
            "traceparent and tracestate. Credentials, proxy and hop-by-hop headers are refused."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            # The API server refuses what the operator would: the same list, from the proxy config.
            **common.cel_rules(common.cel(FORWARD_RULE, FORWARD_MESSAGE)),
        },
    )

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return config.check_forward_headers(value)
        except ValueError as exc:
            raise ValueError(f"{FORWARD_MESSAGE} ({exc})") from None

    @field_validator("model_rate_limits", mode="before")
    @classmethod
    def _model_names(cls, value: Any) -> Any:
        # Before ModelName's own check, so the operator says what the API server's rule says.
        for name in value if isinstance(value, dict) else ():
            if not isinstance(name, str) or not 1 <= len(name) <= MODEL_NAME_MAX:
                raise ValueError(MODEL_KEYS_MESSAGE)
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ProviderPolicySpec:
        if self.provider is config.ProviderKind.AZURE_OPENAI and self.api_version is None:
            raise ValueError("apiVersion is required when provider is azure-openai")
        if self.provider is not config.ProviderKind.OPENAI_COMPATIBLE and self.api_key_secret_ref is None:
            raise ValueError("apiKeySecretRef is required unless provider is openai-compatible")
        if self.shared_store is None:
            if self.budget is not None:
                raise ValueError(
                    "budget needs sharedStore: a budget counted per pod would be a budget per pod"
                )
            if self.rate_limit is not None and self.rate_limit.scope is Scope.GLOBAL:
                raise ValueError("rateLimit.scope global needs sharedStore")
            if any(lim.scope is Scope.GLOBAL for lim in self.model_rate_limits.values()):
                raise ValueError("modelRateLimits scope global needs sharedStore")
            if self.cache.shared:
                raise ValueError("cache.shared needs sharedStore")
        return self


MAX_GATEWAYS = 256


class BudgetUsed(common.Model):
    period: str = Field(max_length=8, description="day or month (UTC).")
    used: int = Field(ge=0, description="Tokens counted in the period, reservations in flight included.")
    limit: int = Field(ge=1, description="The budget for the period.")


class ProviderPolicyStatus(common.Model):
    """Written by the operator: Accepted and SecretResolved, and where the policy is in use."""

    observed_generation: int = Field(default=0, ge=0, description="metadata.generation last acted on.")
    conditions: common.Conditions = ()
    gateways: tuple[str, ...] | None = Field(
        default=None,
        max_length=MAX_GATEWAYS,
        description="LLMGateways of the namespace whose routes use the policy (sorted; the first 256).",
    )
    breaker_open_pods: int | None = Field(
        default=None, ge=0, description="Pods of those gateways that report the provider's breaker open."
    )
    budget_used: tuple[BudgetUsed, ...] | None = Field(
        default=None,
        max_length=2,
        description="The budget's current periods as the pods of those gateways last reported them "
        "(the count lives in Redis; the highest report wins).",
    )


class ProviderPolicy(common.Model):
    """A ProviderPolicy object as read from the API server (metadata left as a plain mapping)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["llmgateway.io/v1alpha1"] = "llmgateway.io/v1alpha1"
    kind: Literal["ProviderPolicy"] = "ProviderPolicy"
    spec: ProviderPolicySpec
    status: ProviderPolicyStatus | None = None
