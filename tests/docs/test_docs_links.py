"""Every relative link in the top-level pages and docs/ leads to a file in the repository, and to a
heading there."""

from __future__ import annotations

from pathlib import Path

import docskit
import pytest

# Only the pages that exist: test_the_pages_the_brief_names_exist says which must.
TOP_LEVEL = [p for p in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md") if (docskit.ROOT / p).is_file()]
PAGES = sorted([*(docskit.ROOT / p for p in TOP_LEVEL), *(docskit.ROOT / "docs").rglob("*.md")])


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(docskit.ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_an_existing_file_and_anchor(page: Path) -> None:
    assert docskit.broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(docskit.ROOT)) for p in PAGES])
def test_every_path_and_test_named_in_code_exists(page: Path) -> None:
    assert docskit.missing_named_paths(page) == []


def test_the_pages_the_brief_names_exist() -> None:
    names = {str(p.relative_to(docskit.ROOT)) for p in PAGES}
    wanted = {
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "docs/index.md",
        "docs/quickstart.md",
        "docs/architecture.md",
        "docs/runbook.md",
        "docs/security.md",
        "docs/upgrading.md",
        "docs/development.md",
        "docs/metrics.md",
    }
    assert wanted <= names


def test_the_index_links_every_page_under_docs() -> None:
    index = docskit.ROOT / "docs" / "index.md"
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for _, target in docskit.links(index.read_text())
        if not docskit.is_external(target)
    }
    pages = {p.resolve() for p in (docskit.ROOT / "docs").rglob("*.md") if p != index}
    assert sorted(str(p.relative_to(docskit.ROOT)) for p in pages - linked) == []


# -- the checker itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        pytest.param("other.md", None, id="existing-file"),
        pytest.param("other.md#a-heading-with-code", None, id="existing-anchor"),
        pytest.param("other.md#second-1", None, id="numbered-repeat-heading"),
        pytest.param("#local-section", None, id="anchor-on-the-same-page"),
        pytest.param("https://example.com/missing.md", None, id="external-links-are-not-checked"),
        pytest.param("missing.md", "no such file", id="missing-file"),
        pytest.param("other.md#nowhere", "no heading with anchor #nowhere", id="missing-anchor"),
        pytest.param("#nowhere", "no heading with anchor #nowhere", id="missing-local-anchor"),
        pytest.param("../../outside.md", "outside the repository", id="outside-the-repository"),
    ],
)
def test_the_checker_reports_exactly_the_broken_links(
    tmp_path: Path, target: str, problem: str | None
) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "outside.md").write_text("# Outside\n")
    (root / "docs" / "other.md").write_text("# A heading with `code`\n\n## Second\n\n## Second\n")
    page = root / "docs" / "page.md"
    page.write_text(f"# Page\n\n## Local section\n\nSee [there]({target}).\n")

    found = docskit.broken_links(page, root)

    if problem is None:
        assert found == []
    else:
        assert found == [f"docs/page.md:5: {target} ({problem})"]


def test_links_inside_code_are_not_links() -> None:
    text = "```\n[a](missing.md)\n```\nand `[b](missing.md)` and [c](real.md)\n"
    assert docskit.links(text) == [(4, "real.md")]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        pytest.param("Quick start", "quick-start", id="spaces"),
        pytest.param("`llmgw-dev cluster up|status|down`", "llmgw-dev-cluster-upstatusdown", id="code"),
        pytest.param("Ready / Reconciled: what's next?", "ready--reconciled-whats-next", id="punctuation"),
        pytest.param("snake_case stays", "snake_case-stays", id="underscore"),
    ],
)
def test_anchors_follow_githubs_slugs(heading: str, anchor: str) -> None:
    assert docskit.slug(heading) == anchor


@pytest.mark.parametrize(
    ("span", "problem"),
    [
        pytest.param("tests/t.py", None, id="existing-file"),
        pytest.param("tests/t.py::test_real", None, id="existing-test"),
        pytest.param("tests/", None, id="existing-folder"),
        pytest.param("tests/gone.py", "no such path", id="missing-file"),
        pytest.param("tests/t.py::test_gone", "no such test in tests/t.py", id="missing-test"),
        pytest.param("tests/*.py", None, id="globs-are-not-paths"),
        pytest.param("llmgw_proxy/x.py", None, id="only-paths-from-the-top-level-count"),
    ],
)
def test_the_path_checker_reports_exactly_the_missing_paths(
    tmp_path: Path, span: str, problem: str | None
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("async def test_real():\n    pass\n")
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\nSee `{span}`.\n\n```\n`tests/not-checked-in-fences.py`\n```\n")

    found = docskit.missing_named_paths(page, tmp_path)

    assert found == ([] if problem is None else [f"page.md:3: {span} ({problem})"])
