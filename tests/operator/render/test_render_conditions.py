"""Conditions in metav1 shape: transition times move only with status; verdicts come from observations."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator.render import conditions
from llmgw_operator.render.conditions import FALSE, TRUE, UNKNOWN, Verdict

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_timestamps_are_rfc3339_utc_with_a_z() -> None:
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    assert conditions.timestamp(T0.astimezone(tokyo)) == "2026-01-02T03:04:05Z"


def test_a_new_condition_is_stamped_with_now() -> None:
    out = conditions.set_condition([], "Ready", Verdict(TRUE, "Available", "ok"), generation=3, now=T0)
    assert out == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Available",
            "message": "ok",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]


def test_a_message_is_bounded_whatever_the_resource_author_wrote() -> None:
    long = Verdict(FALSE, "PodTemplateRefused", "container " + "c" * 100_000 + ": privileged")
    (out,) = conditions.set_condition([], "Reconciled", long, generation=1, now=T0)
    assert len(out["message"]) == conditions.MAX_MESSAGE
    assert out["message"].endswith("(truncated)")


def test_the_transition_time_stays_while_the_status_does() -> None:
    first = conditions.set_condition(
        [], "Ready", Verdict(FALSE, "RolloutInProgress", "1 of 2"), generation=1, now=T0
    )
    second = conditions.set_condition(
        first, "Ready", Verdict(FALSE, "ReplicasUnavailable", "x"), generation=2, now=T1
    )
    assert second[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert (second[0]["reason"], second[0]["observedGeneration"]) == ("ReplicasUnavailable", 2)


def test_the_transition_time_moves_when_the_status_does() -> None:
    first = conditions.set_condition([], "Ready", Verdict(FALSE, "RolloutInProgress"), generation=1, now=T0)
    second = conditions.set_condition(first, "Ready", Verdict(TRUE, "Available"), generation=1, now=T1)
    assert second[0]["lastTransitionTime"] == conditions.timestamp(T1)


@given(
    statuses=st.lists(st.sampled_from([TRUE, FALSE, UNKNOWN]), min_size=1, max_size=8),
    types=st.lists(st.sampled_from(["Ready", "Reconciled", "PoliciesResolved"]), min_size=1, max_size=8),
)
def test_one_entry_per_type_and_others_untouched(statuses: list[Any], types: list[str]) -> None:
    current: list[dict[str, Any]] = []
    for i, (status, type_) in enumerate(zip(statuses, types, strict=False)):
        before = {c["type"]: c for c in current if c["type"] != type_}
        current = conditions.set_condition(
            current, type_, Verdict(status, "Because"), generation=i, now=T0 + datetime.timedelta(seconds=i)
        )
        assert sorted(c["type"] for c in current) == sorted({*before, type_})
        assert {c["type"]: c for c in current if c["type"] != type_} == before


def _deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    desired: int = 2,
    updated: int = 2,
    replicas: int = 2,
    available: int = 2,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
        },
    }


@pytest.mark.parametrize(
    ("observed", "status", "reason"),
    [
        pytest.param(None, FALSE, "DeploymentNotFound", id="missing"),
        pytest.param(_deployment(observed=1), FALSE, "RolloutPending", id="generation-not-observed"),
        pytest.param(_deployment(updated=1, replicas=3), FALSE, "RolloutInProgress", id="old-pods-left"),
        pytest.param(_deployment(available=1), FALSE, "ReplicasUnavailable", id="not-enough-available"),
        pytest.param(
            _deployment(desired=0, updated=0, replicas=0, available=0), FALSE, "ScaledToZero", id="zero"
        ),
        pytest.param(_deployment(), TRUE, "Available", id="available"),
    ],
)
def test_deployment_readiness(observed: dict[str, Any] | None, status: Any, reason: str) -> None:
    verdict = conditions.deployment_ready(observed)
    assert (verdict.status, verdict.reason) == (status, reason)


def test_replica_counts_read_the_deployment_status() -> None:
    assert conditions.replica_counts(_deployment(replicas=3, available=1)) == (3, 1)
    assert conditions.replica_counts(None) == (0, 0)


def test_a_gateway_is_not_ready_while_its_policies_are_unresolved() -> None:
    policies = Verdict(FALSE, "PolicyNotFound", "ProviderPolicy not found: fallback")
    out = conditions.gateway_conditions(
        [],
        generation=4,
        now=T0,
        policies=policies,
        reconciled=Verdict(TRUE, "Applied"),
        deployment=_deployment(),
    )
    by_type = {c["type"]: c for c in out}
    assert set(by_type) == {"Ready", "Reconciled", "PoliciesResolved"}
    assert by_type["PoliciesResolved"]["reason"] == "PolicyNotFound"
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "PoliciesUnresolved")
    assert "fallback" in by_type["Ready"]["message"]
    assert all(c["observedGeneration"] == 4 for c in out)


def test_an_invalid_gateway_is_not_ready_for_its_own_reason_not_its_policies() -> None:
    invalid = Verdict(FALSE, "InvalidSpec", "spec.template: the container name llmgw-proxy is reserved")
    out = conditions.gateway_conditions(
        [], generation=2, now=T0, policies=invalid, reconciled=invalid, deployment=_deployment()
    )
    ready = conditions.find(out, conditions.READY)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "llmgw-proxy is reserved" in ready["message"]


def test_a_gateway_is_ready_when_everything_is() -> None:
    out = conditions.gateway_conditions(
        [],
        generation=1,
        now=T0,
        policies=Verdict(TRUE, "Resolved"),
        reconciled=Verdict(TRUE, "Applied"),
        deployment=_deployment(),
    )
    assert conditions.is_true(out, "Ready")


def test_a_gateway_whose_children_failed_to_apply_is_not_ready() -> None:
    ready = conditions.gateway_ready(
        Verdict(TRUE, "Resolved"), Verdict(FALSE, "ApplyFailed", "no"), _deployment()
    )
    assert (ready.status, ready.reason) == (FALSE, "NotReconciled")


def test_policy_conditions() -> None:
    out = conditions.policy_conditions(
        [],
        generation=1,
        now=T0,
        accepted=conditions.accepted("apiVersion is required when provider is azure-openai"),
        secret=Verdict(TRUE, "NoSecretNeeded"),
    )
    by_type = {c["type"]: c for c in out}
    assert (by_type["Accepted"]["status"], by_type["Accepted"]["reason"]) == ("False", "Invalid")
    assert conditions.accepted(None).status == TRUE
    assert by_type["SecretResolved"]["status"] == "True"


def test_the_steps_of_a_rollout_go_without_events_and_what_starts_or_ends_one_does_not() -> None:
    pending = {"type": "Ready", "status": "False", "reason": "RolloutPending"}
    rolling = {"type": "Ready", "status": "False", "reason": "ReplicasUnavailable"}
    assert conditions.rollout_progress(None, pending)
    assert conditions.rollout_progress(pending, rolling)
    # News: a ready gateway starting a rollout, another condition, the end of it.
    assert not conditions.rollout_progress(
        {"type": "Ready", "status": "True", "reason": "Available"}, rolling
    )
    # Not news: the rollout after a problem (its end has the Resolved and Applied Events).
    assert conditions.rollout_progress({**rolling, "reason": "NotReconciled"}, rolling)
    assert not conditions.rollout_progress(None, {**rolling, "reason": "ScaledToZero"})
    assert not conditions.rollout_progress(None, {**rolling, "type": "Reconciled"})
    assert not conditions.rollout_progress(rolling, {**rolling, "status": "True", "reason": "Available"})
