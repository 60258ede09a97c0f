"""The sidecar's status report (``status.SidecarStatus``), read from ``state.Live``.

The policies keep time on the event loop's monotonic clock; a report speaks
wall-clock UTC, so each time is moved by the offset between the two clocks at
the moment of the report. Only what the status model holds is read: no key,
no file content, no reload error sentence.
"""

from __future__ import annotations

import datetime
import math

from llmgw_proxy import status
from llmgw_proxy.runtime import state


def build(live: state.Live, wall_now: float) -> status.SidecarStatus:
    """The report as of now; ``wall_now`` is ``time.time()`` read together with ``live.clock()``."""
    mono_now = live.clock()

    def wall(t: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(wall_now - (mono_now - t), datetime.UTC)

    snapshot = live.snapshot
    providers: dict[str, status.ProviderReport] = {}
    for name, provider in (snapshot.providers if snapshot else {}).items():
        fields: dict[str, object] = {}
        gate = provider.breaker
        if gate is not None:
            fields["breaker"] = status.BreakerState(gate.state.value)
            fields["breaker_since"] = wall(gate.since)
            fields["consecutive_failures"] = gate.consecutive_failures
            if gate.last_failure is not None:
                kind, at = gate.last_failure
                fields["last_failure_kind"] = kind.value
                fields["last_failure_at"] = wall(at)
        limiter = provider.limiter
        if limiter is not None:
            if math.isfinite(limiter.paused_until) and limiter.paused_until > mono_now:
                fields["paused_until"] = wall(limiter.paused_until)
            fields["remaining_share"] = limiter.remaining_share()
        if provider.global_limiter is not None and provider.global_limiter.budget is not None:
            fields["budget"] = tuple(
                status.BudgetReport(period=u.period, used=max(0, u.used), limit=u.limit)
                for u in provider.global_limiter.budget_used.values()
            )
        providers[name] = status.ProviderReport.model_validate(fields)
    stats = live.cache.stats
    error = live.last_error_reason
    shared = live.shared
    store = status.SharedStoreReport(reachable=shared.up, since=wall(shared.changed_at)) if shared else None
    return status.SidecarStatus(
        ready=live.ready,
        generation=snapshot.generation if snapshot else 0,
        config_hash=snapshot.config_hash if snapshot else None,
        providers=providers,
        cache=status.CacheReport(entries=stats.entries, bytes=stats.bytes),
        shared_store=store,
        last_reload_error=status.ReloadError(reason_code=error) if error is not None else None,
    )
