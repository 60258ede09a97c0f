"""The generated CRDs admit the valid samples and refuse each invalid one with the expected error.

A small stand-in for the API server's validation: structural defaulting, the
schema checks the samples exercise, list-map keys, and the CEL rules evaluated
with cel-python. The real API server (a later cluster test) is the judge of
CEL cost and of exact wording; this catches a wrong rule before then.
"""

from __future__ import annotations

import copy
import pathlib
import re
from typing import Any

import celpy
import celpy.adapter
import celpy.evaluation
import pytest
import yaml

from llmgw_operator.api import crd

SAMPLES = pathlib.Path(__file__).resolve().parents[3] / "samples"
SCHEMAS = {
    d["spec"]["names"]["kind"]: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for d in crd.all_definitions().values()
}
CEL = celpy.Environment()


def _default(schema: dict[str, Any], value: Any) -> Any:
    """Fill defaults the way the API server does: only under objects that are present."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _default(sub, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = _default(schema["additionalProperties"], value[key])
    elif isinstance(value, list) and "items" in schema:
        return [_default(schema["items"], v) for v in value]
    return value


def _errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f'{path}: Unsupported value: "{value}"')
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        found.append(f"{path}: Invalid value: \"{value}\": {path} in body should match '{schema['pattern']}'")
    if isinstance(value, list) and len(value) < schema.get("minItems", 0):
        found.append(f"{path}: {path} in body should have at least {schema['minItems']} items")
    if isinstance(value, dict):
        found += [
            f"{path}.{name}: Required value" for name in schema.get("required", []) if name not in value
        ]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                found += _errors(sub, value[name], f"{path}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            for key, sub_value in value.items():
                found += _errors(schema["additionalProperties"], sub_value, f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        keys = schema.get("x-kubernetes-list-map-keys")
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if keys and isinstance(item, dict):
                key = tuple(item.get(k) for k in keys)
                if key in seen:
                    found.append(f"{path}[{i}]: Duplicate value: {dict(zip(keys, key, strict=True))}")
                seen.add(key)
            found += _errors(schema["items"], item, f"{path}[{i}]")
    found += _rules(schema, value, path)
    return found


def _rules(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    found = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = CEL.program(CEL.compile(rule["rule"]))
        try:
            passed = bool(program.evaluate({"self": celpy.adapter.json_to_cel(value)}))
        except celpy.evaluation.CELEvalError as error:
            # The API server refuses an object whose rule fails to evaluate, too.
            found.append(f"{path}: Invalid value: rule {rule['rule']!r} failed to evaluate: {error}")
            continue
        if not passed:
            found.append(f"{path}: Invalid value: {rule['message']}")
    return found


def admit(document: dict[str, Any]) -> list[str]:
    """The API server's refusals for ``document``; empty when it would be stored."""
    schema = SCHEMAS[document["kind"]]
    value = _default(schema, copy.deepcopy(document))
    root = _rules(schema, value, "<root>")
    inner = [
        e
        for name in ("spec",)
        if name in value
        for e in _errors(schema["properties"][name], value[name], name)
    ]
    missing = [f"{name}: Required value" for name in schema["required"] if name not in value]
    return root + missing + inner


VALID = [p for p in sorted(SAMPLES.glob("*.yaml")) if yaml.safe_load(p.read_text())["kind"] in SCHEMAS]
INVALID = sorted((SAMPLES / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_admits_the_valid_samples(path: pathlib.Path) -> None:
    assert admit(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_refuses_each_invalid_sample_with_the_expected_error(path: pathlib.Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect-error: ")
    errors = admit(yaml.safe_load(path.read_text()))
    assert errors, f"{path.name} was admitted"
    assert any(expected in e for e in errors), errors


def test_every_rule_compiles() -> None:
    def rules(node: dict[str, Any]) -> list[str]:
        found = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        for sub in [
            *node.get("properties", {}).values(),
            node.get("items"),
            node.get("additionalProperties"),
        ]:
            if isinstance(sub, dict):
                found += rules(sub)
        return found

    compiled = [CEL.compile(rule) for schema in SCHEMAS.values() for rule in rules(schema)]
    assert len(compiled) >= 9
