"""Reading the project's Markdown and code the way the docs tests need: links, anchors, tables, reasons.

Pure functions over text, so each is specified on small examples before it is
trusted with the real pages.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target "title") and ![alt](target); the target stops at whitespace or ')'.
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def unfenced_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines outside fenced code, with inline code blanked out: links in code are not links."""
    for number, line in unfenced_lines(text):
        yield number, _INLINE_CODE.sub("", line)


def links(text: str) -> list[tuple[int, str]]:
    """Every link target in prose, with its line number."""
    return [(n, m.group(1)) for n, line in prose_lines(text) for m in _LINK.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a linked heading anchors on its text
    kept = "".join(ch for ch in text.lower() if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Anchors a page offers: one per heading (repeats numbered -1, -2, ...) and explicit <a id>."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in unfenced_lines(text):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) is not None


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """``file:line: target (why)`` for each relative link of ``page`` that leads nowhere."""
    problems = []
    text = page.read_text()
    for number, target in links(text):
        if is_external(target):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif root.resolve() not in (dest, *dest.parents):
            problems.append(f"{where} (outside the repository)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            problems.append(f"{where} (no heading with anchor #{fragment})")
    return problems


@dataclasses.dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, index: int = 0) -> list[str]:
        return [row[index] for row in self.rows if len(row) > index]


def _cells(line: str) -> tuple[str, ...]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return tuple(cell.strip() for cell in re.split(r"(?<!\\)\|", inner))


def tables(text: str) -> list[Table]:
    """GitHub-flavoured pipe tables outside code fences."""
    out: list[Table] = []
    lines = text.splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fenced = not fenced
        elif (
            not fenced
            and line.lstrip().startswith("|")
            and i + 1 < len(lines)
            and re.fullmatch(r"\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*", lines[i + 1])
        ):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(Table(header, tuple(rows)))
            continue
        i += 1
    return out


def code_names(cell: str) -> list[str]:
    """The names written as inline code in a table cell."""
    return re.findall(r"`([^`]+)`", cell)


# -- condition reasons in the operator's code ---------------------------------------------------


class UnreadableReason(ValueError):
    """A Verdict whose reason is neither a literal nor a loop variable over literals."""


def _loop_values(loop: ast.For, name: str) -> list[str] | None:
    """Values ``name`` takes in ``for (a, name, ...) in ((lit, lit, ...), ...)``, if that is the shape."""
    if isinstance(loop.target, ast.Name):
        if loop.target.id != name or not isinstance(loop.iter, ast.Tuple | ast.List):
            return None
        items: list[ast.expr] = list(loop.iter.elts)
    elif isinstance(loop.target, ast.Tuple) and isinstance(loop.iter, ast.Tuple | ast.List):
        positions = [i for i, t in enumerate(loop.target.elts) if isinstance(t, ast.Name) and t.id == name]
        if not positions:
            return None
        items = []
        for element in loop.iter.elts:
            if not isinstance(element, ast.Tuple):
                return None
            items.append(element.elts[positions[0]])
    else:
        return None
    values = [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    return values if len(values) == len(items) else None


def verdict_reasons(source: str, filename: str = "<source>") -> set[str]:
    """Every reason a ``Verdict(status, reason, ...)`` call in ``source`` can carry.

    A reason is a string literal, or a loop variable bound from a literal
    table; anything else raises UnreadableReason, so a new way of building
    reasons makes the docs test fail instead of silently checking less.
    """
    tree = ast.parse(source, filename)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    reasons: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called != "Verdict":
            continue
        arg = next((k.value for k in node.keywords if k.arg == "reason"), None)
        if arg is None and len(node.args) >= 2:
            arg = node.args[1]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            reasons.add(arg.value)
            continue
        values = None
        if isinstance(arg, ast.Name):
            scope: ast.AST | None = parents.get(node)
            while scope is not None and values is None:
                if isinstance(scope, ast.For):
                    values = _loop_values(scope, arg.id)
                scope = parents.get(scope)
        if values is None:
            raise UnreadableReason(f"{filename}:{node.lineno}: cannot read the reason of {ast.unparse(node)}")
        reasons.update(values)
    return reasons


# -- paths and tests named in prose -------------------------------------------------------------

TOP_LEVEL = ("proxy/", "operator/", "dev/", "helm/", "tests/", "crds/", "samples/", "docs/", ".ci/")
_CODE_SPAN = re.compile(r"`([^`\s]+)`")


def named_paths(text: str) -> list[tuple[int, str]]:
    """Repository paths written as inline code (``tests/x.py::test_y`` included), outside fences.

    Globs and placeholders (``*``, ``<...>``) are not paths and are left out.
    """
    return [
        (number, span)
        for number, line in unfenced_lines(text)
        for span in _CODE_SPAN.findall(line)
        if span.startswith(TOP_LEVEL) and not re.search(r"[*<>{}]", span)
    ]


def missing_named_paths(page: Path, root: Path = ROOT) -> list[str]:
    """``file:line: path`` for each named path that does not exist, or test function it does not define."""
    problems = []
    for number, span in named_paths(page.read_text()):
        path_part, _, test = span.partition("::")
        where = f"{page.relative_to(root)}:{number}: {span}"
        target = root / path_part.rstrip("/")
        if not target.exists():
            problems.append(f"{where} (no such path)")
        elif test and test not in _defined_functions(target):
            problems.append(f"{where} (no such test in {path_part})")
    return problems


def _defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


# -- the commands a page shows ------------------------------------------------------------------

_MARKER = re.compile(r"^<!--\s*quickstart:\s*(.*?)\s*-->\s*$")
_FENCE_OPEN = re.compile(r"^```(\w*)\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its text, its first line and the marker comment above it."""

    language: str
    code: str
    line: int
    marker: str = ""


def code_blocks(text: str) -> list[Block]:
    """Fenced blocks in page order; ``marker`` is a ``<!-- quickstart: ... -->`` comment just above."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        above = _MARKER.match(lines[start - 1]) if start > 0 else None
        blocks.append(
            Block(opened.group(1), "\n".join(body) + "\n", start + 1, above.group(1) if above else "")
        )
        i += 1
    return blocks
