"""The generated CRDs are structural, carry the CEL rules, and show conditions as columns."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw_operator.api import crd, structural


def _schema(definition: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for sub in node.get("properties", {}).values():
        nodes += _walk(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            nodes += _walk(node[key])
    return nodes


DEFINITIONS = [
    pytest.param(crd.llmgateway(), id="llmgateway"),
    pytest.param(crd.providerpolicy(), id="policy"),
]


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_schemas_are_structural(definition: dict[str, Any]) -> None:
    assert structural.problems(_schema(definition)) == []


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_only_the_pod_template_and_resources_keep_unknown_fields(definition: dict[str, Any]) -> None:
    spec = _schema(definition)["properties"]["spec"]
    free = [
        name
        for name, node in {
            **spec["properties"],
            **spec["properties"].get("proxy", {}).get("properties", {}),
        }.items()
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert set(free) <= {"template", "resources"}
    assert all(
        not n.get("x-kubernetes-preserve-unknown-fields")
        for n in _walk(_schema(definition)["properties"]["status"])
    )


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_every_string_and_list_under_a_cel_rule_is_bounded(definition: dict[str, Any]) -> None:
    # The API server estimates rule cost from these bounds and refuses unbounded ones.
    for node in _walk(_schema(definition)["properties"]["spec"]):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, node
        if node["type"] == "array":
            assert "maxItems" in node, node


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_is_namespaced_with_a_status_subresource_and_short_names(definition: dict[str, Any]) -> None:
    spec = definition["spec"]
    assert spec["scope"] == "Namespaced"
    assert spec["versions"][0]["subresources"] == {"status": {}}
    assert spec["names"]["shortNames"]
    assert spec["names"]["categories"] == ["llm"]


def test_gateway_columns_read_the_ready_condition() -> None:
    columns = {
        c["name"]: c["jsonPath"] for c in crd.llmgateway()["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Replicas"] == ".status.replicas"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_route_models_are_a_list_map_keyed_by_model() -> None:
    routes = _schema(crd.llmgateway())["properties"]["spec"]["properties"]["routes"]
    assert routes["x-kubernetes-list-type"] == "map"
    assert routes["x-kubernetes-list-map-keys"] == ["model"]
    assert "model" in routes["items"]["required"]


def test_exclusive_bounds_use_the_openapi_v3_boolean_form() -> None:
    ttl = _schema(crd.providerpolicy())["properties"]["spec"]["properties"]["cache"]["properties"]["ttl"]
    assert ttl["minimum"] == 0
    assert ttl["exclusiveMinimum"] is True


def test_optional_fields_are_neither_required_nor_nullable() -> None:
    spec = _schema(crd.providerpolicy())["properties"]["spec"]
    assert spec["required"] == ["provider", "baseURL"]
    assert "nullable" not in spec["properties"]["apiVersion"]
    assert "default" not in spec["properties"]["apiVersion"]


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        pytest.param({"properties": {}}, "<root>: no type", id="missing-type"),
        pytest.param({"type": "object", "properties": {"a": {"$ref": "#/x"}}}, ".a: no type", id="ref-left"),
        pytest.param({"type": "string", "anyOf": [{}]}, "<root>: anyOf", id="any-of"),
        pytest.param(
            {"type": "number", "exclusiveMinimum": 0}, "exclusiveMinimum must be a boolean", id="excl"
        ),
    ],
)
def test_problems_names_what_is_not_structural(schema: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in structural.problems(schema))


def test_conversion_refuses_a_union_it_cannot_express() -> None:
    with pytest.raises(structural.NotStructural, match="anyOf"):
        structural.convert({"anyOf": [{"type": "string"}, {"type": "integer"}]})


# -- what `kubectl explain` shows ----------------------------------------------------------------


def _spec_field(definition: dict[str, Any], *path: str) -> dict[str, Any]:
    node: dict[str, Any] = _schema(definition)["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    return node


@pytest.mark.parametrize(
    ("path", "says"),
    [
        (("rateLimit", "scope"), "Default: shared."),
        (("rateLimit", "maxWait"), "Default: 0."),
        (("apiVersion",), "Rule: apiVersion is required when provider is azure-openai."),
        (("provider",), "Rule: apiVersion is required when provider is azure-openai."),
        (("apiKeySecretRef",), "Rule: apiKeySecretRef is required unless provider is openai-compatible."),
    ],
)
def test_policy_descriptions_say_the_default_and_the_rules_that_involve_the_field(
    path: tuple[str, ...], says: str
) -> None:
    assert says in _spec_field(crd.providerpolicy(), *path)["description"]


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_every_scalar_default_is_in_its_description(definition: dict[str, Any]) -> None:
    for node in _walk(_schema(definition)["properties"]["spec"]):
        default = node.get("default")
        if isinstance(default, bool | int | float | str):
            assert "Default: " in node["description"], node


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_every_rule_message_reaches_a_description(definition: dict[str, Any]) -> None:
    spec = _schema(definition)["properties"]["spec"]
    for node in _walk(spec):
        for rule in node.get("x-kubernetes-validations", []):
            assert f"Rule: {rule['message']}." in node["description"]


def test_a_field_named_in_a_rule_is_matched_as_a_whole_name() -> None:
    assert crd._named("apiVersion", "apiVersion is required")
    assert not crd._named("port", "proxy.adminPort and proxy.portal differ")
    assert not crd._named("port", "proxy.port must differ")  # a path names a nested field, not this one


def test_the_reference_page_keeps_defaults_and_rules_in_their_own_columns() -> None:
    plain = _spec_field(crd.providerpolicy(explain=False), "rateLimit", "scope")["description"]
    assert "Default:" not in plain
