"""Turn a pydantic JSON Schema into a Kubernetes structural schema (OpenAPI v3.0 subset).

Structural means: ``$ref`` resolved inline, a ``type`` on every node, no
``anyOf`` with a null branch (an optional field is simply not ``required``),
no ``additionalProperties`` beside ``properties``. Anything this module does not
know how to translate is an error, so a new model feature cannot slip an
invalid schema into a CRD unnoticed.
"""

from __future__ import annotations

from typing import Any

JsonSchema = dict[str, Any]

# Keywords copied as they are.
_PLAIN = frozenset(
    {
        "type",
        "description",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "format",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
    }
)
# Keywords with no structural meaning, dropped.
_DROPPED = frozenset({"title", "$defs", "propertyNames", "additionalProperties"})


class NotStructural(ValueError):
    pass


def convert(schema: JsonSchema) -> JsonSchema:
    """The structural form of a pydantic ``model_json_schema(by_alias=True)``."""
    defs: dict[str, JsonSchema] = schema.get("$defs", {})
    return _node(schema, defs, "")


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    """Inline a ``$ref`` and unwrap an optional ``anyOf: [X, null]``; sibling keys win."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = defs[ref.rsplit("/", 1)[-1]]
        # The field's own description beats the referenced class's docstring.
        node = {**_resolve(target, defs, path), **node}
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        branches = [b for b in any_of if b != {"type": "null"}]
        if len(branches) != 1:
            raise NotStructural(f"{path or '<root>'}: anyOf with {len(branches)} non-null branches")
        node = {**_resolve(branches[0], defs, path), **node}
        if node.get("default", ...) is None:
            del node["default"]
    all_of = node.pop("allOf", None)
    if all_of is not None:
        if len(all_of) != 1:
            raise NotStructural(f"{path or '<root>'}: allOf with {len(all_of)} branches")
        node = {**_resolve(all_of[0], defs, path), **node}
    return node


def _node(raw: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    node = _resolve(raw, defs, path)
    out: JsonSchema = {}
    if "const" in node:
        out["enum"] = [node.pop("const")]
    if "type" not in node and "enum" in node:
        node["type"] = _enum_type(node["enum"], path)
    for key, value in node.items():
        if key in _PLAIN:
            out[key] = value
        elif key in _DROPPED:
            continue
        elif key == "default":
            if value is not None:
                out["default"] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 spells a number; OpenAPI v3.0 a boolean beside minimum/maximum.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out["properties"] = {name: _node(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out["items"] = _node(value, defs, f"{path}[]")
        elif key == "required":
            out["required"] = list(value)
        else:
            raise NotStructural(f"{path or '<root>'}: keyword {key!r} is not supported")
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        if "properties" in out:
            raise NotStructural(f"{path}: both properties and additionalProperties")
        out["additionalProperties"] = _node(additional, defs, f"{path}.*")
    elif additional is True and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise NotStructural(f"{path}: a free-form object must set x-kubernetes-preserve-unknown-fields")
    if "type" not in out:
        raise NotStructural(f"{path or '<root>'}: no type")
    return _ordered(out)


def _enum_type(values: list[Any], path: str) -> str:
    kinds = {type(v) for v in values}
    if kinds == {str}:
        return "string"
    if kinds == {int}:
        return "integer"
    raise NotStructural(f"{path}: enum of mixed or unsupported types {kinds}")


_ORDER = ("type", "description")


def _ordered(node: JsonSchema) -> JsonSchema:
    """Type and description first, the rest sorted: stable, readable YAML."""
    head = {k: node[k] for k in _ORDER if k in node}
    return head | {k: node[k] for k in sorted(node) if k not in head}


def problems(schema: JsonSchema, path: str = "") -> list[str]:
    """Every reason ``schema`` (already converted) would not be structural; empty when it is."""
    found: list[str] = []
    where = path or "<root>"
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
        found.append(f"{where}: no type")
    for key in ("$ref", "anyOf", "oneOf", "allOf", "not", "const", "uniqueItems"):
        if key in schema:
            found.append(f"{where}: {key}")
    if "properties" in schema and "additionalProperties" in schema:
        found.append(f"{where}: both properties and additionalProperties")
    if schema.get("additionalProperties") is False:
        found.append(f"{where}: additionalProperties false")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not isinstance(schema[key], bool):
            found.append(f"{where}: {key} must be a boolean")
    for name, sub in schema.get("properties", {}).items():
        found += problems(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += problems(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += problems(schema["additionalProperties"], f"{path}.*")
    return found
