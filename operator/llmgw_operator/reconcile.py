"""Reconcile = observe, render (pure), apply, write status. Nothing else.

A gateway whose policies do not resolve keeps its children as they are: its
pods go on serving the last good config while the status names what is
missing, and the next event that fixes it (a policy or Secret appearing)
triggers another pass. The same holds for a pod template the operator refuses
and for a child name held by an object the gateway does not control: nothing
is written, and the status says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import pydantic

from llmgw_operator import kube, references
from llmgw_operator.api import common, gateway, policy
from llmgw_operator.render import (
    children,
    conditions,
    dataplane,
    deployment,
    injection,
    names,
    ownership,
    pod_rules,
    resolve,
)
from llmgw_operator.render.conditions import FALSE, TRUE, UNKNOWN, Verdict

logger = logging.getLogger(__name__)

Now = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def refused_by_api(error: kube.ApiError) -> bool:
    """A 4xx that names a problem with what was sent, not a conflict, a throttle or a missing object."""
    return 400 <= error.status < 500 and error.status not in (404, 409, 429)


def _wanted_kinds(spec: gateway.LLMGatewaySpec) -> frozenset[str]:
    """The child kinds the gateway's spec asks for (render/children.py renders the same)."""
    if spec.injected:
        return frozenset({"ConfigMap", "Secret"})
    if spec.autoscaling is None:
        return frozenset({"ConfigMap", "Secret", "Deployment"})
    return frozenset({"ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler"})


def _apply_stages(manifests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The children in the order they may be applied: what the pods mount (ConfigMap, Secret) at
    once, then what makes pods (the Deployment, then its HPA), so no pod starts without its files."""
    first = [m for m in manifests if m["kind"] in ("ConfigMap", "Secret")]
    rest = [m for m in manifests if m["kind"] not in ("ConfigMap", "Secret")]
    return [stage for stage in (first, *([m] for m in rest)) if stage]


class NameConflict(RuntimeError):
    """A child's name is held by an object the gateway does not control.

    Raised after the status says so, to have the work queue look again with
    backoff (up to a minute): the object that blocks the name is not the
    operator's, so no watch event of its own reaches the operator when it goes.
    """


@dataclasses.dataclass
class Reconciler:
    client: kube.Client
    default_image: str
    native_sidecar: bool = True
    pod_rules: pod_rules.Rules = dataclasses.field(default_factory=pod_rules.Rules)
    now: Now = _utcnow
    # What the sidecars last reported (the poller fills it): ProvidersHealthy, ConfigApplied,
    # status.providers and status.config. Before a gateway's first poll they are left as they are.
    data_plane: dataplane.Store = dataclasses.field(default_factory=dataplane.Store)
    # Each gateway's conditions as last computed, {type: status}: the operator's metrics count them.
    gateway_states: dict[tuple[str, str], dict[str, str]] = dataclasses.field(default_factory=dict)
    # The gateways whose spec names a policy, (namespace, policy) -> names, from the watches; None
    # (or returning None) until every gateway has been seen once: a policy pass then lists them.
    policy_users: Callable[[str, str], Iterable[str] | None] | None = None

    # -- LLMGateway -----------------------------------------------------------------

    async def gateway(self, body: Mapping[str, Any]) -> None:
        try:
            await self._gateway(body, fresh=False)
        except kube.Exists as e:
            # A child was taken for absent and its create-only apply found the name held: by an
            # object made in the moment before the watch of others' objects told of it, or one of
            # the operator's whose label was taken off by hand. Nothing was changed by that apply;
            # go again, reading the children from the API.
            meta = body["metadata"]
            logger.info("gateway %s/%s: %s; reading its children again", meta["namespace"], meta["name"], e)
            await self._gateway(body, fresh=True)

    async def _gateway(self, body: Mapping[str, Any], *, fresh: bool) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            spec = gateway.LLMGatewaySpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as e:
            invalid = Verdict(FALSE, "InvalidSpec", common.explain(e))
            # The children are left as they were, so the status counts the pods they still run.
            await self._gateway_status(body, invalid, invalid, await self._own_deployment(body))
            return

        observed = await self._observe_policies(namespace, spec.policy_names())
        secrets = await self._observe_secrets(namespace, observed.values())
        resolution = resolve.gateway_policies(spec, observed, secrets, namespace)
        live = await self._observe_children(name, namespace, _wanted_kinds(spec), fresh)
        uid = meta["uid"]
        live_deployment = live.get("Deployment")
        if live_deployment is not None and not ownership.controlled_by(live_deployment, uid):
            live_deployment = None  # not ours: its rollout says nothing about this gateway

        # Injection mode's pods are the users' own: the webhook adds only the sidecar, so there is
        # no template of theirs the operator would create pods from.
        refused = pod_rules.refusals(spec.template, self.pod_rules) if spec.template is not None else []
        refused += pod_rules.sidecar_refusals(spec.proxy, self.pod_rules)
        if refused:
            reconciled = Verdict(FALSE, "PodTemplateRefused", "nothing applied: " + "; ".join(refused))
            await self._gateway_status(body, resolution.verdict, reconciled, live_deployment)
            return
        if resolution.verdict.status != TRUE:
            reconciled = Verdict(
                FALSE, "PoliciesUnresolved", "children left as they were: " + resolution.verdict.message
            )
            await self._gateway_status(body, resolution.verdict, reconciled, live_deployment)
            return

        observed_replicas = (live_deployment or {}).get("spec", {}).get("replicas")
        counted = self.data_plane.injected.get((namespace, name), ())
        try:
            kids = children.render(
                name,
                namespace,
                spec,
                resolution,
                observed_replicas=observed_replicas,
                default_image=self.default_image,
                native_sidecar=self.native_sidecar,
                injected_pods=sum(n for _, n in counted),
            )
        except (ValueError, pydantic.ValidationError) as e:
            message = common.explain(e) if isinstance(e, pydantic.ValidationError) else str(e)
            reconciled = Verdict(FALSE, "RenderFailed", message)
            await self._gateway_status(body, resolution.verdict, reconciled, live_deployment)
            return

        # A foreign HPA under the gateway's name blocks only a gateway that wants one.
        wanted = {m["kind"] for m in kids.manifests()}
        foreign = [
            ownership.describe(o)
            for kind, o in live.items()
            if kind in wanted and not ownership.controlled_by(o, uid)
        ]
        if foreign:
            reconciled = Verdict(
                FALSE,
                "NameConflict",
                "nothing applied: the gateway's child names are taken by objects it does not control: "
                + ", ".join(foreign)
                + "; rename the gateway or remove those objects",
            )
            await self._gateway_status(body, resolution.verdict, reconciled, live_deployment)
            raise NameConflict(reconciled.message)

        changed = []
        for stage in _apply_stages(kids.manifests()):
            outcomes = await asyncio.gather(
                *(self.client.apply(ownership.adopt(m, body), live.get(m["kind"])) for m in stage),
                return_exceptions=True,
            )
            for manifest, outcome in zip(stage, outcomes, strict=True):
                if outcome is True:
                    changed.append(manifest["kind"])
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is None:
                continue
            taken = next((o for o in outcomes if isinstance(o, kube.Exists)), None)
            if taken is not None:
                raise taken
            refusal = next((o for o in outcomes if isinstance(o, kube.ApiError) and refused_by_api(o)), None)
            if refusal is None:
                raise failed
            # The API refused an object (e.g. a pod template it rejects): say so in the status, then
            # fail the pass so the queue retries with backoff (RBAC may be fixed meanwhile).
            kind = stage[outcomes.index(refusal)]["kind"]
            reconciled = Verdict(FALSE, "ApplyRefused", f"the API refused the {kind}: {refusal.message}")
            await self._gateway_status(body, resolution.verdict, reconciled, live_deployment)
            raise refusal
        hpa = live.get("HorizontalPodAutoscaler")
        if kids.hpa is None and hpa is not None and ownership.controlled_by(hpa, uid):
            await self.client.delete("HorizontalPodAutoscaler", namespace, names.hpa(name))
            changed.append("HorizontalPodAutoscaler (deleted)")
        if kids.deployment is None and live_deployment is not None:
            # The template was removed: the gateway now injects into the users' pods instead.
            await self.client.delete("Deployment", namespace, names.deployment(name))
            changed.append("Deployment (deleted)")
            live_deployment = None
        if "Deployment" in changed:
            live_deployment = await self.client.get("Deployment", namespace, names.deployment(name))
        if changed:
            logger.info("gateway %s/%s: applied %s", namespace, name, ", ".join(changed))
        applied = ", ".join(m["kind"].replace("HorizontalPodAutoscaler", "HPA") for m in kids.manifests())
        reconciled = Verdict(
            TRUE, "Applied", applied + " applied" + (" (injection mode)" if spec.injected else "")
        )
        image = deployment.image_for(spec, self.default_image)
        rollout = None
        if spec.injected or counted:
            current = deployment.restart_hash(spec, image)
            rollout = {"image": image, **injection.rollout(counted, current)}
        await self._gateway_status(body, resolution.verdict, reconciled, live_deployment, injected=rollout)

    async def _own_deployment(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = body["metadata"]
        live = await self.client.child("Deployment", meta["namespace"], names.deployment(meta["name"]))
        return live if live is not None and ownership.controlled_by(live, meta["uid"]) else None

    async def _observe_children(
        self, name: str, namespace: str, wanted: frozenset[str], fresh: bool
    ) -> dict[str, dict[str, Any]]:
        """Every live object under a child's name, by kind, whoever controls it.

        The ``wanted`` kinds are read as ``kube.Client.child`` reads (the
        cached client: its copy, the API only for a name someone else may
        hold), or as ``get`` reads when ``fresh``. A child taken for absent is
        applied create-only (``kube.Client.apply``), so a name taken since is
        refused, not applied over. A kind the gateway does not want is only
        peeked at (the cached client does not ask the API for it): one of the
        operator's own is watched and so at hand, to be deleted, and anyone
        else's does not block the gateway.
        """
        kinds = (
            ("ConfigMap", names.config_map(name)),
            ("Secret", names.secret(name)),
            ("Deployment", names.deployment(name)),
            ("HorizontalPodAutoscaler", names.hpa(name)),
        )
        read = self.client.get if fresh else self.client.child
        # At once: three GETs one after another were three of the round trips a pass waited for, in
        # a queue whose passes are bounded by how long each takes.
        lives = await asyncio.gather(
            *(
                (self.client.peek if kind not in wanted else read)(kind, namespace, child)
                for kind, child in kinds
            )
        )
        return {kind: live for (kind, _), live in zip(kinds, lives, strict=True) if live is not None}

    async def _observe_policies(self, namespace: str, wanted: tuple[str, ...]) -> dict[str, resolve.Observed]:
        observed: dict[str, resolve.Observed] = {}
        for policy_name in wanted:
            found = await self.client.get("ProviderPolicy", namespace, policy_name)
            if found is None:
                continue
            try:
                observed[policy_name] = policy.ProviderPolicySpec.model_validate(found.get("spec") or {})
            except pydantic.ValidationError as e:
                observed[policy_name] = common.explain(e)
        return observed

    async def _observe_secrets(
        self, namespace: str, observed: Iterable[resolve.Observed]
    ) -> dict[str, resolve.ObservedSecret]:
        """Every Secret a valid policy references: its data if marked as a provider key, else UNMARKED."""
        secrets: dict[str, resolve.ObservedSecret] = {}
        for spec in observed:
            ref = spec.api_key_secret_ref if isinstance(spec, policy.ProviderPolicySpec) else None
            if ref is None or ref.name in secrets:
                continue
            found = await self.client.get("Secret", namespace, ref.name)
            if found is not None:
                secrets[ref.name] = resolve.observe_secret(found)
        return secrets

    async def _gateway_status(
        self,
        body: Mapping[str, Any],
        policies: Verdict,
        reconciled: Verdict,
        deployment: Mapping[str, Any] | None,
        *,
        injected: dict[str, Any] | None = None,
    ) -> None:
        meta = body["metadata"]
        old = dict(body.get("status") or {})
        generation = int(meta.get("generation") or 0)
        replicas, ready = conditions.replica_counts(deployment)
        new = {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "conditions": conditions.gateway_conditions(
                old.get("conditions") or [],
                generation=generation,
                now=self.now(),
                policies=policies,
                reconciled=reconciled,
                deployment=deployment,
                injection=(body.get("spec") or {}).get("template") is None,
            ),
        }
        if injected is not None:
            new["injection"] = injected
        self._data_plane_status(meta["namespace"], meta["name"], old, new, generation)
        written = cast(list[dict[str, Any]], new["conditions"])
        self.gateway_states[(meta["namespace"], meta["name"])] = {c["type"]: c["status"] for c in written}
        await self._write_status("LLMGateway", body, old, new)

    def _data_plane_status(
        self, namespace: str, name: str, old: Mapping[str, Any], new: dict[str, Any], generation: int
    ) -> None:
        obs = self.data_plane.observations.get((namespace, name))
        if obs is None:
            return
        now = self.now()
        for type_, verdict in (
            (conditions.PROVIDERS_HEALTHY, dataplane.providers_verdict(obs)),
            (conditions.CONFIG_APPLIED, dataplane.config_verdict(obs)),
        ):
            new["conditions"] = conditions.set_condition(
                new["conditions"], type_, verdict, generation=generation, now=now
            )
        new["providers"] = dataplane.provider_status(obs, old.get("providers") or [], now)
        new["config"] = dataplane.config_status(obs)

    # -- ProviderPolicy -------------------------------------------------------------

    async def policy(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        try:
            spec = policy.ProviderPolicySpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as e:
            accepted = conditions.accepted(common.explain(e))
            secret = Verdict(UNKNOWN, "PolicyInvalid", "the policy is invalid")
        else:
            accepted = conditions.accepted(None)
            secrets = await self._observe_secrets(meta["namespace"], [spec])
            secret, _ = resolve.secret_key(spec, secrets)
        old = dict(body.get("status") or {})
        generation = int(meta.get("generation") or 0)
        new = {
            "observedGeneration": generation,
            "conditions": conditions.policy_conditions(
                old.get("conditions") or [],
                generation=generation,
                now=self.now(),
                accepted=accepted,
                secret=secret,
            ),
        }
        await self._policy_usage(meta["namespace"], meta["name"], new)
        await self._write_status("ProviderPolicy", body, old, new)

    async def _policy_usage(self, namespace: str, name: str, new: dict[str, Any]) -> None:
        """``gateways`` from ``policy_users`` once it knows them, else from the API (so a restart
        never writes a half-known list), and
        ``breakerOpenPods`` and ``budgetUsed`` once one of them was polled (and reported a budget)."""
        known = self.policy_users(namespace, name) if self.policy_users is not None else None
        if known is not None:
            users = sorted(known)
        else:
            users = []
            for gw in await self.client.list_objects("LLMGateway", namespace):
                spec = gw.get("spec")
                if isinstance(spec, Mapping) and name in references.policies_of(spec):
                    users.append(str(gw["metadata"]["name"]))
            users.sort()
        new["gateways"] = users[: policy.MAX_GATEWAYS]
        open_pods = self.data_plane.breaker_open_pods(namespace, name, users)
        if open_pods is not None:
            new["breakerOpenPods"] = open_pods
        used = self.data_plane.budget_used(namespace, name, users)
        if used is not None:
            new["budgetUsed"] = used

    # -- shared ---------------------------------------------------------------------

    async def _write_status(
        self, kind: str, body: Mapping[str, Any], old: Mapping[str, Any], new: dict[str, Any]
    ) -> None:
        if all(old.get(k) == v for k, v in new.items()):
            return
        meta = body["metadata"]
        await self.client.patch_status(kind, meta["namespace"], meta["name"], new)
        before = {c["type"]: c for c in old.get("conditions") or []}
        events: list[tuple[str, str, str]] = []  # type, reason, message
        for condition in new["conditions"]:
            prior = before.get(condition["type"])
            if condition["type"] in (conditions.PROVIDERS_HEALTHY, conditions.CONFIG_APPLIED):
                event = conditions.data_plane_event(prior, condition)
                if event is not None:
                    events.append((event[0], event[1], condition["message"]))
                continue
            if prior is not None and (prior["status"], prior["reason"]) == (
                condition["status"],
                condition["reason"],
            ):
                continue
            if conditions.rollout_progress(prior, condition):
                continue
            warning = condition["status"] == FALSE and condition["type"] != conditions.READY
            events.append(
                (
                    "Warning" if warning else "Normal",
                    condition["reason"],
                    f"{condition['type']}={condition['status']}: {condition['message']}",
                )
            )
        # At once, not one after another: a new gateway's first pass sends three, and the pass (and
        # the next one in its queue) waited for each round trip in turn.
        await asyncio.gather(*(self.client.event(body, type_=t, reason=r, message=m) for t, r, m in events))
