"""docs/runbook.md explains every condition reason the operator can set and every alert the chart ships."""

from __future__ import annotations

import re

import docskit
import pytest

from llmgw_operator.render import conditions

RUNBOOK = docskit.ROOT / "docs" / "runbook.md"
REASON_SOURCES = [
    docskit.ROOT / "operator/llmgw_operator/render/conditions.py",
    docskit.ROOT / "operator/llmgw_operator/render/resolve.py",
    docskit.ROOT / "operator/llmgw_operator/reconcile.py",
    docskit.ROOT / "operator/llmgw_operator/render/dataplane.py",
]
RULES = docskit.ROOT / "helm/llmgw/templates/prometheusrule.yaml"
CONDITION_TYPES = [
    conditions.READY,
    conditions.RECONCILED,
    conditions.POLICIES_RESOLVED,
    conditions.ACCEPTED,
    conditions.SECRET_RESOLVED,
    conditions.PROVIDERS_HEALTHY,
    conditions.CONFIG_APPLIED,
]


def operator_reasons() -> set[str]:
    found: set[str] = set()
    for path in REASON_SOURCES:
        found |= docskit.verdict_reasons(path.read_text(), str(path))
    return found


def chart_alerts() -> set[str]:
    # The file is a template, not YAML until rendered; alert names are plain text in it.
    return set(re.findall(r"^\s*-\s*alert:\s*(\w+)\s*$", RULES.read_text(), re.MULTILINE))


def first_column(text: str, header: str) -> set[str]:
    return {
        name
        for table in docskit.tables(text)
        if table.header and table.header[0].lower() == header.lower()
        for cell in table.column(0)
        for name in docskit.code_names(cell)
    }


def test_the_code_sets_reasons_at_all() -> None:
    # Guards the scan: if it read nothing, the next tests would pass vacuously.
    assert {"Available", "Applied", "Resolved", "SecretFound", "PolicyNotFound"} <= operator_reasons()


def test_every_reason_the_operator_sets_is_in_a_runbook_table() -> None:
    missing = operator_reasons() - first_column(RUNBOOK.read_text(), "Reason")
    assert sorted(missing) == [], "add these reasons to docs/runbook.md"


def test_every_reason_in_the_runbook_is_one_the_operator_sets() -> None:
    stale = first_column(RUNBOOK.read_text(), "Reason") - operator_reasons()
    assert sorted(stale) == [], "docs/runbook.md lists reasons the operator never sets"


@pytest.mark.parametrize("condition_type", CONDITION_TYPES)
def test_every_condition_type_has_a_section(condition_type: str) -> None:
    headings = [line for _, line in docskit.unfenced_lines(RUNBOOK.read_text()) if line.startswith("#")]
    assert any(re.search(rf"`{condition_type}`", h) for h in headings)


def test_every_alert_in_the_chart_is_in_the_runbook_and_no_other() -> None:
    assert chart_alerts()
    assert first_column(RUNBOOK.read_text(), "Alert") == chart_alerts()


# -- the reason scanner itself ------------------------------------------------------------------


def test_reads_literal_reasons_positional_and_keyword() -> None:
    source = "a = Verdict(TRUE, 'One', 'm')\nb = conditions.Verdict(FALSE, reason='Two')\n"
    assert docskit.verdict_reasons(source) == {"One", "Two"}


def test_reads_reasons_from_a_loop_over_a_literal_table() -> None:
    source = (
        "for reason, what in (('Missing', 'x'), ('Broken', 'y')):\n"
        "    if what:\n"
        "        return Verdict(FALSE, reason, what)\n"
    )
    assert docskit.verdict_reasons(source) == {"Missing", "Broken"}


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("v = Verdict(FALSE, compute(), 'm')\n", id="call"),
        pytest.param("v = Verdict(FALSE, f'{kind}Missing')\n", id="f-string"),
        pytest.param("for reason in names():\n    Verdict(FALSE, reason)\n", id="loop-over-a-call"),
    ],
)
def test_refuses_a_reason_it_cannot_read(source: str) -> None:
    with pytest.raises(docskit.UnreadableReason):
        docskit.verdict_reasons(source)
