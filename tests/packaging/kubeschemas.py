"""Turn a Kubernetes OpenAPI v2 document (and CRDs) into kubeconform's schema folder.

kubeconform cannot download schemas here, so we write them from the API server
we test against. It looks a resource up by a path template; ours is
``<folder>/{{ .ResourceKind }}{{ .KindSuffix }}{{ .StrictSuffix }}.json`` where
the kind is lowercase and the suffix is ``-<first label of the group>-<version>``
(``-v1`` for the core group), so ``deployment-apps-v1.json`` and
``deployment-apps-v1-strict.json``. As openapi2jsonschema does, each file
stands alone: it keeps the ``$ref``s local by carrying the definitions it
reaches, int-or-string and quantities accept both forms, and the ``-strict``
variant refuses unknown fields.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Schema = dict[str, Any]
_REF = re.compile(r"^#/definitions/(.+)$")
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def location_template(folder: Path) -> str:
    return f"{folder}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}{{{{ .StrictSuffix }}}}.json"


def file_stem(group: str, version: str, kind: str) -> str:
    """The same name kubeconform's schemaPath builds from apiVersion and kind."""
    prefix = f"-{group.split('.')[0].lower()}" if group else ""
    return f"{kind.lower()}{prefix}-{version.lower()}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and (match := _REF.match(ref)):
            yield match.group(1)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _closure(root: str, definitions: dict[str, Schema]) -> list[str]:
    seen: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in definitions:
            continue
        seen.append(name)
        todo.extend(_refs(definitions[name]))
    return seen


def _loosen(node: Any) -> Any:
    """int-or-string fields take both; so do quantities (YAML writes `cpu: 1` as a number)."""
    if isinstance(node, dict):
        if node.get("format") == "int-or-string":
            rest = {k: v for k, v in node.items() if k not in ("type", "format")}
            return {**rest, "oneOf": [{"type": "string"}, {"type": "integer"}]}
        return {k: _loosen(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_loosen(v) for v in node]
    return node


def _strict(node: Any) -> Any:
    """Refuse unknown fields wherever an object lists its properties."""
    if isinstance(node, dict):
        result = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in result
            and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")
        ):
            result["additionalProperties"] = False
        return result
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _standalone(root: str, definitions: dict[str, Schema]) -> Schema:
    reached = {name: _loosen(definitions[name]) for name in _closure(root, definitions)}
    if _QUANTITY in reached:
        reached[_QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    return {"$schema": "http://json-schema.org/draft-04/schema#", **reached[root], "definitions": reached}


def from_openapi_v2(document: Schema) -> dict[str, Schema]:
    """File stem -> schema, for every kind the document defines."""
    definitions: dict[str, Schema] = document.get("definitions", {})
    result: dict[str, Schema] = {}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            stem = file_stem(gvk.get("group", ""), gvk["version"], gvk["kind"])
            # Kinds such as DeleteOptions appear under many groups; keep the first.
            result.setdefault(stem, _standalone(name, definitions))
    return result


def from_crds(crds: Iterable[Schema]) -> dict[str, Schema]:
    """File stem -> schema for every served version of the given CRDs."""
    result: dict[str, Schema] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = copy.deepcopy(version.get("schema", {}).get("openAPIV3Schema", {"type": "object"}))
            properties = schema.setdefault("properties", {})
            properties.setdefault("apiVersion", {"type": "string"})
            properties.setdefault("kind", {"type": "string"})
            properties.setdefault("metadata", {"type": "object"})
            schema["$schema"] = "http://json-schema.org/draft-04/schema#"
            result[file_stem(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return result


def write(schemas: dict[str, Schema], folder: Path) -> Path:
    """Write the loose and the -strict variant of each schema; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, schema in schemas.items():
        (folder / f"{stem}.json").write_text(json.dumps(schema))
        (folder / f"{stem}-strict.json").write_text(json.dumps(_strict(schema)))
    return folder
