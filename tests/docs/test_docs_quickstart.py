"""docs/quickstart.md as a newcomer follows it: every block, in order, the local way.

The blocks are read out of the page, so the page cannot drift from what is
tested. Shell blocks run in one bash session whose exported variables carry
from block to block (as in one terminal), in a folder that holds the
repository's Makefile, chart and virtualenv the way its root does. A block
marked ``<!-- quickstart: background until "TEXT" -->`` is what the page says
to run in another terminal: it is started, with the session's variables, and
the walk goes on once TEXT is in its output. ``<!-- quickstart: skip (why) -->``
marks the few blocks for a real cluster only. YAML blocks are saved under the
file name their first line gives; Python blocks run with the session's
`python`. The provider key is typed at the page's prompt (stdin).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docskit
import pytest

from llmgw_dev import cluster, demo, fake_provider

PAGE = docskit.ROOT / "docs" / "quickstart.md"
KEY = "sk-quickstart-not-a-real-key"
# What the page's commands expect to find in the folder they run from (the repository's root).
LINKED = ("Makefile", "pyproject.toml", ".venv", "helm", "samples")
PORTS = (8080, 9090, 18080, 9443)  # the gateway's sidecar, the page's fake provider, the webhook
BLOCK_TIMEOUT = 900  # seconds; the first block may build the pinned binaries
BACKGROUND_TIMEOUT = 120
_UNTIL = re.compile(r'^background until "(.+)"$')
_SKIP = re.compile(r"^skip \(.+\)$")


def blocks() -> list[docskit.Block]:
    return [b for b in docskit.code_blocks(PAGE.read_text()) if b.language in ("sh", "yaml", "python")]


# -- the page's shape (no cluster) ------------------------------------------------------------------


def test_every_marker_is_one_the_walk_understands() -> None:
    markers = [b.marker for b in blocks() if b.marker]
    assert markers, "the page marks no background block: the walk would run the operator in the foreground"
    assert [m for m in markers if not (_UNTIL.match(m) or _SKIP.match(m))] == []


def test_every_yaml_block_names_its_file_and_the_page_applies_it() -> None:
    page = PAGE.read_text()
    for block in blocks():
        if block.language == "yaml":
            name = block.code.splitlines()[0].removeprefix("# ").strip()
            assert re.fullmatch(r"[\w.-]+\.yaml", name), f"line {block.line}: first line names no file"
            assert f"kubectl apply -f {name}" in page


def test_the_page_runs_the_operator_and_the_sidecar_the_local_way() -> None:
    background = [b.code for b in blocks() if _UNTIL.match(b.marker)]
    assert any("llmgw-operator --all-namespaces --standalone" in code for code in background)
    assert any("llmgw-dev sidecar --gateway team-a/chat" in code for code in background)
    skipped = [b for b in blocks() if _SKIP.match(b.marker)]
    assert all("port-forward" in b.code or "docker" in b.code for b in skipped)


def test_the_key_is_typed_at_a_prompt_into_a_private_file() -> None:
    shell = "".join(b.code for b in blocks() if b.language == "sh")
    assert re.search(r"umask 077; read -rsp ", shell)
    assert "--from-file=primary=./openai.key" in shell
    assert "llmgateway.io/provider-key=true" in shell


# -- the walk ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Session:
    """One terminal's worth of state, plus the other terminals the page opens."""

    work: Path
    env: dict[str, str]
    state: Path
    logs: list[tuple[str, Path]] = dataclasses.field(default_factory=list)
    background: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)

    def script(self, code: str, *, keep: bool) -> str:
        save = f"export -p > {self.state}\n" if keep else ""
        return f"set -euo pipefail\n. {self.state}\n{code}\n{save}"

    def run(self, block: docskit.Block) -> str:
        code = block.code
        if block.language == "python":
            code = f"python - <<'QUICKSTART_PY'\n{code}QUICKSTART_PY\n"
        proc = subprocess.run(
            ["bash", "-c", self.script(code, keep=True)],
            cwd=self.work,
            env=self.env,
            input=KEY + "\n",
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        assert proc.returncode == 0, (
            f"docs/quickstart.md line {block.line} failed ({proc.returncode}):\n{block.code}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}\n{self.tails()}"
        )
        return proc.stdout

    def start(self, block: docskit.Block, until: str) -> None:
        log = self.work / f"background-{block.line}.log"
        self.logs.append((block.code.strip(), log))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", self.script(block.code, keep=False)],
                cwd=self.work,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.background.append(proc)
        deadline = time.monotonic() + BACKGROUND_TIMEOUT
        while until not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"line {block.line} exited ({proc.returncode}):\n{self.tails()}"
            assert time.monotonic() < deadline, f"line {block.line} never printed {until!r}\n{self.tails()}"
            time.sleep(0.1)  # polling another process's output: nothing to await

    def tails(self) -> str:
        return "\n".join(
            f"--- {what}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            for what, log in self.logs
        )

    def stop(self) -> None:
        for proc in reversed(self.background):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@contextlib.contextmanager
def session(tmp_path: Path, name: str) -> Iterator[Session]:
    work = tmp_path / "checkout"
    work.mkdir()
    for entry in LINKED:
        (work / entry).symlink_to(docskit.ROOT / entry)
    state = tmp_path / "exports.sh"
    state.write_text("")
    # A newcomer's shell: no kubectl, helm or venv on PATH until the page's `eval` puts them there.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path))}
    env["LLMGW_CLUSTER"] = name
    for passed in ("LLMGW_CACHE", "KUBEBUILDER_ASSETS", "GOPATH", "GOMODCACHE", "GOCACHE", "TMPDIR"):
        if passed in os.environ:
            env[passed] = os.environ[passed]
    walk = Session(work, env, state)
    try:
        yield walk
    finally:
        walk.stop()
        # A walk that failed before the page's last block leaves the cluster up: stop it.
        with contextlib.suppress(cluster.ClusterError):
            cluster.down(cluster.Cluster.load(name))


@pytest.mark.cluster
@pytest.mark.binaries
@pytest.mark.slow
def test_the_quickstart_runs_as_written_on_the_local_control_plane(tmp_path: Path) -> None:
    if os.geteuid() != 0 and shutil.which("unshare") is None:
        pytest.skip("llmgw-dev sidecar mounts volumes in a private mount namespace: it needs unshare")
    busy = [p for p in PORTS if not demo.port_free(p)]
    assert not busy, f"the quickstart's fixed ports are in use: {busy}"

    outputs: dict[int, str] = {}
    with session(tmp_path, f"quickstart-{os.getpid()}") as walk:
        for block in blocks():
            until = _UNTIL.match(block.marker)
            if _SKIP.match(block.marker):
                continue
            if until:
                walk.start(block, until.group(1))
            elif block.language == "yaml":
                name = block.code.splitlines()[0].removeprefix("# ").strip()
                (walk.work / name).write_text(block.code)
            else:
                outputs[block.line] = walk.run(block)
        sidecar_log = walk.tails()

    said = "\n".join(outputs.values())
    # The curl and the openai client both got the provider's answer, through the sidecar.
    assert said.count(fake_provider.REPLY) >= 2, said[-3000:]
    assert re.search(r'llmgw_requests_total\{[^}]*status="200"\} [1-9]', said), said[-3000:]
    # curl prints /readyz's body without a newline: the metrics follow on the same line.
    assert '{"status": "ready", "generation": 1}' in said
    # The key typed at the prompt reached the sidecar's key file, and nowhere it should not.
    assert KEY not in said and KEY not in sidecar_log
    assert not (walk.work / "openai.key").exists()


# -- the block reader itself ---------------------------------------------------------------------


def test_code_blocks_keep_order_language_and_the_marker_just_above() -> None:
    text = (
        "intro\n```sh\necho one\n```\n"
        '<!-- quickstart: background until "up" -->\n```sh\nserve\n```\n'
        "<!-- quickstart: skip (why) -->\n\n```yaml\n# a.yaml\nx: 1\n```\n"
    )
    found = docskit.code_blocks(text)
    assert [(b.language, b.code, b.marker) for b in found] == [
        ("sh", "echo one\n", ""),
        ("sh", "serve\n", 'background until "up"'),
        ("yaml", "# a.yaml\nx: 1\n", ""),  # a blank line between: the marker is not this block's
    ]
    assert found[0].line == 2
