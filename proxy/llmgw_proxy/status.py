"""What a sidecar reports on ``GET /status``: the second contract between sidecar and operator.

The sidecar serves this document on its admin listener; the operator reads it
from every ready pod and aggregates it into the gateway's status. Both import
this one model, so the two sides cannot drift apart. Like ``config``, it is
pure pydantic and knows nothing of Kubernetes.

What it never holds: a key, a file's content, or a reload error's sentence
(which may quote a file); a refused reload is reported by its bounded code.
Times are wall-clock UTC; the sidecar converts from its monotonic clock when
it answers.
"""

from __future__ import annotations

import datetime
import enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

STATUS_VERSION = 1
MAX_PROVIDERS = 256
"""Providers one report may hold; the operator refuses a larger report as malformed."""


class _Model(BaseModel):
    # extra="ignore": an older operator reads a newer sidecar's report, skipping fields it does not know.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class ProviderReport(_Model):
    """One provider's policy state in this sidecar."""

    breaker: BreakerState | None = Field(
        None, description="The circuit breaker's state; absent when the provider has no circuitBreaker."
    )
    breaker_since: datetime.datetime | None = Field(
        None, description="When the breaker last changed state (or was created)."
    )
    consecutive_failures: int = Field(
        0, ge=0, description="Failures in a row the breaker counted in its current state."
    )
    last_failure_kind: str | None = Field(
        None, max_length=16, description="What the last failure was: `5xx`, `timeout` or `connection`."
    )
    last_failure_at: datetime.datetime | None = Field(None, description="When the last failure was counted.")
    paused_until: datetime.datetime | None = Field(
        None, description="Set while an upstream 429 pauses the provider: when the pause ends."
    )
    remaining_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The tightest rate-limit bucket's level (provider or model) as a share of its "
        "burst (0 in debt); absent while the provider has no limiter.",
    )
    budget: tuple[BudgetReport, ...] | None = Field(
        None,
        max_length=2,
        description="The token budget's periods as last counted; absent without a budget.",
    )


class BudgetReport(_Model):
    """A token budget's count for its current period, as the shared store last told this sidecar."""

    period: str = Field(max_length=8, description="`day` or `month` (UTC calendar periods).")
    used: int = Field(ge=0, description="Tokens counted in the period, reservations in flight included.")
    limit: int = Field(ge=1, description="The budget for the period.")


class SharedStoreReport(_Model):
    """Whether this sidecar reaches the shared store (Redis) that holds global limits and budgets."""

    reachable: bool = Field(
        description="False while commands fail or time out: global limits use the per-pod fallback, "
        "budgets are not enforced."
    )
    since: datetime.datetime | None = Field(None, description="When reachability last changed.")


class CacheReport(_Model):
    entries: int = Field(0, ge=0, description="Entries held by the cache store.")
    bytes: int = Field(0, ge=0, description="Bytes the cache store accounts for.")


class ReloadError(_Model):
    """The last refused reload, by its bounded code (the sentence stays in the sidecar's log)."""

    reason_code: str = Field(
        max_length=64,
        description="`config_unreadable`, `config_invalid`, a key file's code, or `unexpected`.",
    )


class SidecarStatus(_Model):
    """The document ``GET /status`` answers on the admin listener."""

    version: int = Field(STATUS_VERSION, description="Version of this document's shape.")
    ready: bool = Field(description="Config and keys loaded and not draining, as /readyz says.")
    generation: int = Field(
        0, ge=0, description="Configs this sidecar has served since it started (0: none yet)."
    )
    config_hash: str | None = Field(
        None,
        max_length=64,
        description="Hash of the config being served (see the proxy config reference); the operator "
        "compares it to the config it rendered.",
    )
    providers: dict[str, ProviderReport] = Field(
        default_factory=dict, max_length=MAX_PROVIDERS, description="By provider name, as in the config."
    )
    cache: CacheReport = CacheReport()
    shared_store: SharedStoreReport | None = Field(
        None, description="Set when the config names a shared store (sharedStore)."
    )
    last_reload_error: ReloadError | None = Field(
        None, description="Set while the last reload was refused; cleared once a config is served."
    )
