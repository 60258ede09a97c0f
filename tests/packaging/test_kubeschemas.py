"""The OpenAPI-to-kubeconform conversion, on small hand-made documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubeschemas
import pytest

WIDGET = "io.example.v1.Widget"
SPEC = "io.example.v1.WidgetSpec"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
DOCUMENT: dict[str, Any] = {
    "definitions": {
        WIDGET: {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "spec": {"$ref": f"#/definitions/{SPEC}"},
            },
            "x-kubernetes-group-version-kind": [
                {"group": "widgets.example.io", "version": "v1", "kind": "Widget"}
            ],
        },
        SPEC: {
            "type": "object",
            "properties": {
                "port": {"type": "string", "format": "int-or-string"},
                "size": {"$ref": f"#/definitions/{QUANTITY}"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            },
        },
        QUANTITY: {"type": "string"},
        "io.example.v1.Unrelated": {"type": "object", "properties": {"x": {"type": "string"}}},
        "io.k8s.api.core.v1.ConfigMap": {
            "type": "object",
            "properties": {"data": {"type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "ConfigMap"}],
        },
    }
}


@pytest.mark.parametrize(
    ("group", "version", "kind", "stem"),
    [
        pytest.param("", "v1", "ConfigMap", "configmap-v1", id="core"),
        pytest.param("apps", "v1", "Deployment", "deployment-apps-v1", id="short-group"),
        pytest.param(
            "rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterrole-rbac-v1", id="dotted-group"
        ),
        pytest.param("kopf.dev", "v1", "KopfPeering", "kopfpeering-kopf-v1", id="crd-group"),
    ],
)
def test_names_files_as_kubeconform_looks_them_up(group: str, version: str, kind: str, stem: str) -> None:
    assert kubeschemas.file_stem(group, version, kind) == stem


def test_writes_one_standalone_schema_per_kind_carrying_only_reached_definitions() -> None:
    schemas = kubeschemas.from_openapi_v2(DOCUMENT)
    assert set(schemas) == {"widget-widgets-v1", "configmap-v1"}
    widget = schemas["widget-widgets-v1"]
    assert widget["properties"]["spec"] == {"$ref": f"#/definitions/{SPEC}"}
    assert set(widget["definitions"]) == {WIDGET, SPEC, QUANTITY}


def test_int_or_string_and_quantities_accept_both_forms() -> None:
    widget = kubeschemas.from_openapi_v2(DOCUMENT)["widget-widgets-v1"]
    assert widget["definitions"][SPEC]["properties"]["port"] == {
        "oneOf": [{"type": "string"}, {"type": "integer"}]
    }
    assert widget["definitions"][QUANTITY] == {"oneOf": [{"type": "string"}, {"type": "number"}]}


def test_strict_variant_refuses_unknown_fields_except_where_kubernetes_keeps_them(tmp_path: Path) -> None:
    kubeschemas.write(kubeschemas.from_openapi_v2(DOCUMENT), tmp_path)
    loose = json.loads((tmp_path / "widget-widgets-v1.json").read_text())
    strict = json.loads((tmp_path / "widget-widgets-v1-strict.json").read_text())
    assert "additionalProperties" not in loose
    assert strict["additionalProperties"] is False
    spec = strict["definitions"][SPEC]
    assert spec["additionalProperties"] is False
    assert "additionalProperties" not in spec["properties"]["extra"]
    config_map = json.loads((tmp_path / "configmap-v1-strict.json").read_text())
    assert config_map["properties"]["data"]["additionalProperties"] == {"type": "string"}


def test_crd_schemas_gain_the_fields_every_object_has() -> None:
    crd: dict[str, Any] = {
        "spec": {
            "group": "kopf.dev",
            "names": {"kind": "KopfPeering"},
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {"status": {"type": "object"}}}
                    },
                }
            ],
        }
    }
    schema = kubeschemas.from_crds([crd])["kopfpeering-kopf-v1"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "status"}
    assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"].keys() == {"status"}


def test_location_template_names_the_folder_and_kubeconforms_variables(tmp_path: Path) -> None:
    assert kubeschemas.location_template(tmp_path) == (
        f"{tmp_path}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}{{{{ .StrictSuffix }}}}.json"
    )
