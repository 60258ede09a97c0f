"""The data plane in the CR: the sidecars' ``/status`` reports, aggregated into status fields.

``aggregate`` turns one poll of a gateway's ready pods into an ``Observation``
(counts only, no times); the status fields and the ProvidersHealthy and
ConfigApplied verdicts are computed from it. A pod that did not answer is
*unreporting*: it is counted, and it never makes a provider unhealthy.

An observation carries no clock reading, so an unchanged data plane gives an
equal observation and the operator writes nothing. ``Store`` keeps the latest
observation per gateway; it is plain memory, shared by the poller that fills
it and the reconciler that writes it into the status.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmgw_operator.api import gateway
from llmgw_operator.render.conditions import FALSE, TRUE, UNKNOWN, Verdict, timestamp
from llmgw_proxy import status

Key = tuple[str, str]
"""(namespace, name) of a gateway."""

MAX_NAMED = 5
"""Providers (or reasons) a condition message names before it says how many more."""


@dataclasses.dataclass(frozen=True)
class PodReport:
    pod: str
    report: status.SidecarStatus | None  # None: no answer, or not a report


@dataclasses.dataclass(frozen=True)
class ProviderCounts:
    name: str
    reporting: int = 0
    open: int = 0
    half_open: int = 0
    paused: int = 0

    @property
    def healthy(self) -> bool:
        return self.open == self.half_open == self.paused == 0


@dataclasses.dataclass(frozen=True)
class Observation:
    """One poll of a gateway's ready pods."""

    rendered_hash: str | None
    pods: int = 0
    unreporting: int = 0
    providers: tuple[ProviderCounts, ...] = ()
    up_to_date: int = 0
    outdated: int = 0
    refusals: tuple[tuple[str, int], ...] = ()  # reload reason code -> outdated pods reporting it
    store_unreachable: int = 0  # reporting pods that cannot reach their shared store (Redis)
    budgets: tuple[tuple[str, str, int, int], ...] = ()  # (provider, period, used, limit), highest report

    @property
    def reporting(self) -> int:
        return self.pods - self.unreporting


def aggregate(rendered_hash: str | None, reports: Iterable[PodReport]) -> Observation:
    pods = unreporting = up_to_date = outdated = 0
    counts: dict[str, dict[str, int]] = {}
    refusals: dict[str, int] = {}
    store_unreachable = 0
    budgets: dict[tuple[str, str], tuple[int, int]] = {}
    for pod in reports:
        pods += 1
        report = pod.report
        if report is None:
            unreporting += 1
            continue
        if rendered_hash is not None and report.config_hash == rendered_hash:
            up_to_date += 1
        else:
            outdated += 1
            if report.last_reload_error is not None:
                code = report.last_reload_error.reason_code
                refusals[code] = refusals.get(code, 0) + 1
        if report.shared_store is not None and not report.shared_store.reachable:
            store_unreachable += 1
        for name, provider in report.providers.items():
            for b in provider.budget or ():
                # Every pod reads one count in Redis; the highest is the latest (counts only grow).
                seen = budgets.get((name, b.period))
                if seen is None or b.used > seen[0]:
                    budgets[(name, b.period)] = (b.used, b.limit)
            c = counts.setdefault(name, {"reporting": 0, "open": 0, "half_open": 0, "paused": 0})
            c["reporting"] += 1
            c["open"] += provider.breaker is status.BreakerState.OPEN
            c["half_open"] += provider.breaker is status.BreakerState.HALF_OPEN
            c["paused"] += provider.paused_until is not None
    return Observation(
        rendered_hash=rendered_hash,
        pods=pods,
        unreporting=unreporting,
        providers=tuple(ProviderCounts(name, **c) for name, c in sorted(counts.items())),
        up_to_date=up_to_date,
        outdated=outdated,
        refusals=tuple(sorted(refusals.items())),
        store_unreachable=store_unreachable,
        budgets=tuple((n, p, used, limit) for (n, p), (used, limit) in sorted(budgets.items())),
    )


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def _unreporting(obs: Observation) -> str:
    return f"; {_pods(obs.unreporting)} did not report" if obs.unreporting else ""


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:MAX_NAMED])
    return shown + (f"; and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def providers_verdict(obs: Observation) -> Verdict:
    """ProvidersHealthy: False when a reporting pod has a provider's breaker open or half-open
    (``BreakerOpen``) or paused by a 429 (``RateLimited``); Unknown when no pod reports."""
    if obs.reporting == 0:
        return _no_reports(obs)
    sick = [p for p in obs.providers if not p.healthy]
    if not sick and obs.store_unreachable:
        return Verdict(FALSE, "SharedStoreUnreachable", _store_message(obs) + _unreporting(obs))
    if not sick:
        return Verdict(
            TRUE, "Healthy", f"{_pods(obs.reporting)} report every provider healthy{_unreporting(obs)}"
        )
    parts = []
    for p in sick:
        states = []
        if p.open:
            states.append(f"breaker open in {p.open}")
        if p.half_open:
            states.append(f"half-open in {p.half_open}")
        if p.paused:
            states.append(f"paused by a 429 in {p.paused}")
        parts.append(f"{p.name}: {', '.join(states)} of {_pods(p.reporting)}")
    message = _listed(parts) + _unreporting(obs)
    if obs.store_unreachable:
        message += "; " + _store_message(obs)
    if any(p.open or p.half_open for p in sick):
        return Verdict(FALSE, "BreakerOpen", message)
    return Verdict(FALSE, "RateLimited", message)


def _store_message(obs: Observation) -> str:
    return (
        f"{obs.store_unreachable} of {_pods(obs.reporting)} cannot reach the shared store (Redis): "
        "global limits fall back to the per-pod split and budgets are not enforced there"
    )


def budget_used(observations: Iterable[Observation], policy: str) -> list[dict[str, Any]] | None:
    """A policy's budget periods as the gateways' pods last reported them; None when none did."""
    best: dict[str, tuple[int, int]] = {}
    for obs in observations:
        for name, period, used, limit in obs.budgets:
            if name == policy and (period not in best or used > best[period][0]):
                best[period] = (used, limit)
    if not best:
        return None
    return [{"period": p, "used": u, "limit": lim} for p, (u, lim) in sorted(best.items())]


def config_verdict(obs: Observation) -> Verdict:
    """ConfigApplied: False when a reporting pod runs another config than the rendered one;
    ``ReloadRefused`` (with the sidecars' reason codes) when such pods report a refused reload,
    else ``ReloadPending`` (kubelet has not handed them the new ConfigMap yet)."""
    if obs.rendered_hash is None:
        return Verdict(UNKNOWN, "NotRendered", "the gateway has no rendered config yet")
    if obs.reporting == 0:
        return _no_reports(obs)
    if obs.outdated == 0:
        return Verdict(
            TRUE, "Applied", f"{_pods(obs.up_to_date)} run config {obs.rendered_hash}{_unreporting(obs)}"
        )
    head = f"{obs.outdated} of {_pods(obs.reporting)} run an older config than {obs.rendered_hash}"
    if obs.refusals:
        reasons = _listed([f"{code} in {_pods(n)}" for code, n in obs.refusals])
        return Verdict(FALSE, "ReloadRefused", f"{head}; reload refused: {reasons}{_unreporting(obs)}")
    return Verdict(FALSE, "ReloadPending", f"{head}; not reloaded yet{_unreporting(obs)}")


def _no_reports(obs: Observation) -> Verdict:
    if obs.pods == 0:
        return Verdict(UNKNOWN, "NoReadyPods", "no ready pod to ask")
    return Verdict(UNKNOWN, "NoReports", f"none of the {_pods(obs.pods)} answered GET /status")


def provider_status(
    obs: Observation, previous: Sequence[Mapping[str, Any]], now: datetime.datetime
) -> list[dict[str, Any]]:
    """``status.providers``: each provider's counts; ``lastTransitionTime`` moves when it turns
    unhealthy in some pod or healthy in all (a new provider gets ``now``)."""
    before = {p.get("name"): p for p in previous}
    out = []
    for p in obs.providers[: gateway.MAX_PROVIDERS]:
        old = before.get(p.name)
        was_healthy = old is not None and not (
            old.get("breakerOpen") or old.get("halfOpen") or old.get("paused")
        )
        kept = old is not None and was_healthy == p.healthy and old.get("lastTransitionTime")
        out.append(
            {
                "name": p.name,
                "podsReporting": p.reporting,
                "breakerOpen": p.open,
                "halfOpen": p.half_open,
                "paused": p.paused,
                "lastTransitionTime": str(old["lastTransitionTime"]) if kept and old else timestamp(now),
            }
        )
    return out


def config_status(obs: Observation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "upToDate": obs.up_to_date,
        "outdated": obs.outdated,
        "unreporting": obs.unreporting,
    }
    if obs.rendered_hash is not None:
        out["hash"] = obs.rendered_hash
    return out


class Store:
    """The latest observation per gateway (plain memory: the poller writes, the reconciler reads)."""

    def __init__(self) -> None:
        self.observations: dict[Key, Observation] = {}
        # The webhook's pods of each gateway, by sidecar restart hash (render/injection.py census).
        self.injected: dict[Key, tuple[tuple[str, int], ...]] = {}

    def forget(self, key: Key) -> None:
        self.observations.pop(key, None)
        self.injected.pop(key, None)

    def budget_used(
        self, namespace: str, policy: str, gateways: Iterable[str]
    ) -> list[dict[str, Any]] | None:
        found = [self.observations[(namespace, g)] for g in gateways if (namespace, g) in self.observations]
        return budget_used(found, policy)

    def breaker_open_pods(self, namespace: str, policy: str, gateways: Iterable[str]) -> int | None:
        """Pods of ``gateways`` with ``policy``'s breaker open; None before any of them was polled."""
        found = [self.observations[(namespace, g)] for g in gateways if (namespace, g) in self.observations]
        if not found:
            return None
        return sum(p.open for obs in found for p in obs.providers if p.name == policy)
