"""Commands and paths the docs and the chart's NOTES show agree with what the code does."""

from __future__ import annotations

import re

import docskit

from llmgw_operator.render import names
from llmgw_proxy import cli as proxy_cli

PAGES = sorted([docskit.ROOT / "README.md", *(docskit.ROOT / "docs").rglob("*.md")])
NOTES = docskit.ROOT / "helm" / "llmgw" / "templates" / "NOTES.txt"


def config_paths(text: str) -> list[str]:
    return re.findall(r"--config\s+(/\S+)", text)


def test_every_sidecar_config_path_shown_is_where_the_operator_mounts_the_config() -> None:
    shown = {
        f"{page.relative_to(docskit.ROOT)}: {path}"
        for page in PAGES
        for path in config_paths(page.read_text())
        if path.startswith("/etc/")
    }
    shown |= {f"llmgw-proxy --help: {p}" for p in config_paths(proxy_cli.__doc__ or "")}
    assert shown, "the scan found no --config path: the pattern no longer matches the docs"
    assert {s for s in shown if not s.endswith(": " + names.CONFIG_FILE)} == set()


def test_the_chart_notes_name_sample_files_that_exist() -> None:
    named = re.findall(r"\bsamples/[\w./-]+\.yaml", NOTES.read_text())
    assert named, "the NOTES name no sample file"
    assert [n for n in named if not (docskit.ROOT / n).is_file()] == []


def test_the_notes_apply_every_manifest_from_samples() -> None:
    # A newcomer copying the line gets a gateway whose policies and Secret all exist.
    named = set(re.findall(r"\bsamples/[\w.-]+\.yaml", NOTES.read_text()))
    top_level = {f"samples/{p.name}" for p in (docskit.ROOT / "samples").glob("*.yaml")}
    assert named == top_level


def test_rbac_checks_in_the_docs_name_a_subresource_the_way_kubectl_reads_it() -> None:
    # `kubectl auth can-i patch llmgateways/status` asks about a resource named
    # "llmgateways/status" and answers "no" on a correct install.
    for page in PAGES:
        for line in page.read_text().splitlines():
            assert not re.search(r"can-i\s+\S+\s+\S+/status", line), f"{page.name}: {line.strip()}"
