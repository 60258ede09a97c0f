"""The sample manifests: the valid ones validate and compile, each invalid one is refused by the models.

A cluster test later applies the same files with kubectl and asserts the
``# expect-error:`` substring; here the pydantic twins are held to it offline.
"""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from llmgw_operator.api import crd, gateway, policy
from llmgw_operator.render import pod_rules, proxy_config, resolve

SAMPLES = pathlib.Path(__file__).resolve().parents[3] / "samples"
INVALID = sorted((SAMPLES / "invalid").glob("*.yaml"))
MODELS: dict[str, type[pydantic.BaseModel]] = {
    "LLMGateway": gateway.LLMGatewaySpec,
    "ProviderPolicy": policy.ProviderPolicySpec,
}


def _load(path: pathlib.Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _cel_messages() -> set[str]:
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        found.update(r["message"] for r in node.get("x-kubernetes-validations", []))
        for sub in [
            *node.get("properties", {}).values(),
            node.get("items"),
            node.get("additionalProperties"),
        ]:
            if isinstance(sub, dict):
                walk(sub)

    for definition in crd.all_definitions().values():
        walk(definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return found


def _expected(path: pathlib.Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect-error: "), f"{path.name} must start with '# expect-error: <substring>'"
    return first.removeprefix("# expect-error: ")


def test_the_valid_samples_resolve_and_compile() -> None:
    documents = [_load(p) for p in sorted(SAMPLES.glob("*.yaml"))]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    secrets = {
        s["metadata"]["name"]: resolve.observe_secret(
            {
                "metadata": s["metadata"],
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in s["stringData"].items()},
            }
        )
        for s in by_kind["Secret"]
    }
    policies: dict[str, resolve.Observed] = {
        p["metadata"]["name"]: policy.ProviderPolicySpec.model_validate(p["spec"])
        for p in by_kind["ProviderPolicy"]
    }
    (sample,) = by_kind["LLMGateway"]
    spec = gateway.LLMGatewaySpec.model_validate(sample["spec"])
    assert gateway.name_problem(sample["metadata"]["name"]) is None

    resolution = resolve.gateway_policies(spec, policies, secrets)

    assert resolution.verdict.reason == "Resolved", resolution.verdict.message
    compiled = proxy_config.compile_config(spec, resolution.policies, proxy_config.effective_replicas(spec))
    assert [t.provider for t in compiled.routes[0].targets] == ["primary", "fallback"]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_each_invalid_sample_is_refused(path: pathlib.Path) -> None:
    document = _load(path)
    expected = _expected(path)
    problems: list[str] = []
    if document["kind"] == "LLMGateway" and (problem := gateway.name_problem(document["metadata"]["name"])):
        problems.append(problem)
    try:
        MODELS[document["kind"]].model_validate(document["spec"])
    except pydantic.ValidationError as error:
        problems.append(str(error))
    if document["kind"] == "LLMGateway":
        # The operator's pod rules, with the chart's defaults: their twin of the hostNetwork rule.
        problems += pod_rules.refusals(document["spec"].get("template") or {}, pod_rules.Rules())
    assert problems, f"{path.name} validates but should be refused"
    if expected in _cel_messages():
        # A CEL rule: the operator reports exactly what the API server would.
        assert any(expected in p for p in problems)


def test_every_cel_rule_has_an_invalid_sample() -> None:
    assert _cel_messages() <= {_expected(p) for p in INVALID}
