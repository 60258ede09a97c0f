"""The sidecars' reports aggregated: counts, the ProvidersHealthy and ConfigApplied verdicts, Events."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator.api import gateway
from llmgw_operator.render import conditions, dataplane
from llmgw_operator.render.conditions import FALSE, TRUE, UNKNOWN
from llmgw_operator.render.dataplane import PodReport
from llmgw_proxy import status

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)
HASH = "0123456789abcdef"
LATER = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def report(
    config_hash: str = HASH, error: str | None = None, **providers: dict[str, Any]
) -> status.SidecarStatus:
    return status.SidecarStatus(
        ready=True,
        generation=1,
        config_hash=config_hash,
        providers={n: status.ProviderReport.model_validate(p) for n, p in providers.items()},
        last_reload_error=status.ReloadError(reason_code=error) if error else None,
    )


HEALTHY = {"breaker": "closed"}
OPEN = {"breaker": "open", "consecutiveFailures": 0, "lastFailureKind": "5xx"}


def pods(*reports: status.SidecarStatus | None) -> list[PodReport]:
    return [PodReport(f"pod-{i}", r) for i, r in enumerate(reports)]


def test_all_pods_healthy_and_current() -> None:
    obs = dataplane.aggregate(HASH, pods(report(a=HEALTHY, b={}), report(a=HEALTHY, b={})))
    assert obs.providers == (dataplane.ProviderCounts("a", 2), dataplane.ProviderCounts("b", 2))
    assert dataplane.providers_verdict(obs) == conditions.Verdict(
        TRUE, "Healthy", "2 pods report every provider healthy"
    )
    assert dataplane.config_verdict(obs).status == TRUE
    assert dataplane.config_status(obs) == {"hash": HASH, "upToDate": 2, "outdated": 0, "unreporting": 0}


def test_an_open_breaker_names_the_provider_and_the_pod_counts() -> None:
    obs = dataplane.aggregate(HASH, pods(report(primary=OPEN), report(primary=HEALTHY), None))
    verdict = dataplane.providers_verdict(obs)
    assert verdict == conditions.Verdict(
        FALSE, "BreakerOpen", "primary: breaker open in 1 of 2 pods; 1 pod did not report"
    )


def test_a_429_pause_alone_is_rate_limited() -> None:
    paused = {"pausedUntil": LATER.isoformat()}
    obs = dataplane.aggregate(HASH, pods(report(fallback=paused), report(fallback={})))
    assert dataplane.providers_verdict(obs) == conditions.Verdict(
        FALSE, "RateLimited", "fallback: paused by a 429 in 1 of 2 pods"
    )


def test_unreporting_pods_never_flip_health_and_none_reporting_is_unknown() -> None:
    assert dataplane.providers_verdict(dataplane.aggregate(HASH, pods(None, None))).status == UNKNOWN
    assert dataplane.providers_verdict(dataplane.aggregate(HASH, [])).reason == "NoReadyPods"
    obs = dataplane.aggregate(HASH, pods(report(a=HEALTHY), None))
    assert dataplane.providers_verdict(obs).status == TRUE
    assert dataplane.config_status(obs)["unreporting"] == 1


def test_a_refused_reload_is_config_not_applied_with_its_reason_and_count() -> None:
    obs = dataplane.aggregate(
        HASH, pods(report(), report("fedcba9876543210", "key_unreadable"), report("fedcba9876543210"))
    )
    verdict = dataplane.config_verdict(obs)
    assert (verdict.status, verdict.reason) == (FALSE, "ReloadRefused")
    assert verdict.message == (
        f"2 of 3 pods run an older config than {HASH}; reload refused: key_unreadable in 1 pod"
    )
    pending = dataplane.aggregate(HASH, pods(report(), report("fedcba9876543210")))
    assert dataplane.config_verdict(pending).reason == "ReloadPending"
    assert dataplane.config_verdict(dataplane.aggregate(None, pods(report()))).reason == "NotRendered"


def test_a_provider_keeps_its_transition_time_until_its_health_changes() -> None:
    healthy = dataplane.aggregate(HASH, pods(report(a=HEALTHY)))
    first = dataplane.provider_status(healthy, [], T0)
    assert first == [
        {
            "name": "a",
            "podsReporting": 1,
            "breakerOpen": 0,
            "halfOpen": 0,
            "paused": 0,
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]
    assert dataplane.provider_status(healthy, first, T1) == first
    opened = dataplane.provider_status(dataplane.aggregate(HASH, pods(report(a=OPEN))), first, T1)
    assert opened[0]["lastTransitionTime"] == "2026-01-02T03:05:05Z"


def test_events_only_on_the_transitions_an_sre_acts_on() -> None:
    def cond(type_: str, status_: str, reason: str) -> dict[str, str]:
        return {"type": type_, "status": status_, "reason": reason}

    ph, ca = conditions.PROVIDERS_HEALTHY, conditions.CONFIG_APPLIED
    assert conditions.data_plane_event(None, cond(ph, TRUE, "Healthy")) is None
    assert conditions.data_plane_event(None, cond(ph, FALSE, "BreakerOpen")) == (
        "Warning",
        "ProviderUnhealthy",
    )
    assert conditions.data_plane_event(cond(ph, FALSE, "BreakerOpen"), cond(ph, FALSE, "BreakerOpen")) is None
    assert conditions.data_plane_event(cond(ph, FALSE, "BreakerOpen"), cond(ph, TRUE, "Healthy")) == (
        "Normal",
        "ProviderRecovered",
    )
    assert conditions.data_plane_event(cond(ph, TRUE, "Healthy"), cond(ph, UNKNOWN, "NoReports")) is None
    assert conditions.data_plane_event(cond(ca, TRUE, "Applied"), cond(ca, FALSE, "ReloadPending")) is None
    assert conditions.data_plane_event(
        cond(ca, FALSE, "ReloadPending"), cond(ca, FALSE, "ReloadRefused")
    ) == (
        "Warning",
        "ConfigNotApplied",
    )


def test_the_store_counts_open_breakers_per_policy_across_the_gateways_using_it() -> None:
    store = dataplane.Store()
    assert store.breaker_open_pods("ns", "a", ["g1"]) is None
    store.observations[("ns", "g1")] = dataplane.aggregate(HASH, pods(report(a=OPEN), report(a=OPEN)))
    store.observations[("ns", "g2")] = dataplane.aggregate(HASH, pods(report(a=OPEN, b=HEALTHY)))
    store.observations[("other", "g1")] = dataplane.aggregate(HASH, pods(report(a=OPEN)))
    assert store.breaker_open_pods("ns", "a", ["g1", "g2"]) == 3
    assert store.breaker_open_pods("ns", "b", ["g1", "g2"]) == 0
    store.forget(("ns", "g1"))
    assert store.breaker_open_pods("ns", "a", ["g1", "g2"]) == 1


provider_reports = st.fixed_dictionaries(
    {},
    optional={
        "breaker": st.sampled_from(["closed", "open", "half_open"]),
        "pausedUntil": st.just(LATER.isoformat()),
    },
)
reports_ = st.one_of(
    st.none(),
    st.builds(
        lambda h, err, provs: report(h, err, **provs),
        st.sampled_from([HASH, "fedcba9876543210"]),
        st.sampled_from([None, "config_invalid", "key_unreadable"]),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), provider_reports, max_size=3),
    ),
)


@given(st.lists(reports_, max_size=12))
def test_counts_add_up_and_the_verdicts_agree_with_them(reports: list[status.SidecarStatus | None]) -> None:
    obs = dataplane.aggregate(HASH, pods(*reports))
    assert obs.pods == len(reports)
    assert obs.up_to_date + obs.outdated == obs.reporting == sum(r is not None for r in reports)
    assert sum(n for _, n in obs.refusals) <= obs.outdated
    for p in obs.providers:
        assert max(p.open, p.half_open, p.paused) <= p.reporting <= obs.reporting
        assert p.open + p.half_open <= p.reporting
    healthy = dataplane.providers_verdict(obs)
    if obs.reporting == 0:
        assert healthy.status == UNKNOWN
    else:
        assert (healthy.status == TRUE) == all(p.healthy for p in obs.providers)
        for p in obs.providers:
            assert (f"{p.name}: " in healthy.message) == (not p.healthy)
    applied = dataplane.config_verdict(obs)
    assert (applied.status == TRUE) == (obs.reporting > 0 and obs.outdated == 0)
    # The status the reconciler writes is valid against the CRD's model.
    gateway.LLMGatewayStatus.model_validate(
        {"providers": dataplane.provider_status(obs, [], T0), "config": dataplane.config_status(obs)}
    )
    # An unchanged data plane aggregates equal: the operator then writes nothing.
    assert dataplane.aggregate(HASH, pods(*reports)) == obs
