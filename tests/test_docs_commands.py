"""Every ```sh block of the README's data section, of docs/datasets.md and of docs/serving.md runs as printed, from the
repository root, after the state `make demo` leaves.

The state is built the way the demo builds it, only smaller: `kubeforge datasets synth shapes --out
examples/quickstart/data/shapes` (16 images instead of 500) and the quickstart's DatasetVersion
`shapes-v1` run by `kubeforge run` (the demo's training, benchmark and service are not what these
commands read). Each block then runs in that scratch copy with bash (`set -euo pipefail`), in document
order, with the real CLI. A block that needs what a test cannot have (a cluster, S3 credentials, a
change not merged yet) is marked on the line before it:

    <!-- not-run: why -->

and is skipped; a block with commands that is neither a ```sh block nor marked fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import kubeforge

REPO = Path(__file__).resolve().parents[1]
# (file, the section whose blocks run: its heading, or None for the whole file)
DOCS = [("README.md", "## Data versioning"), ("docs/datasets.md", None), ("docs/serving.md", None)]
MARK = re.compile(r"<!--\s*not-run:\s*(?P<why>.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# A command word followed by a space or the line end: `export.json` in a file tree is not a command.
COMMAND = re.compile(r"^\s*(\$ )?(kubeforge|source|kubectl|helm|docker|make|export)(\s|$)", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    where: str  # file:line
    lang: str
    body: str
    not_run: str | None  # the reason, when marked


def _section(text: str, heading: str | None) -> tuple[str, int]:
    """The section's text and the line it starts on (a heading's section ends at the next of its level)."""
    if heading is None:
        return text, 1
    start = text.index(heading + "\n")
    level = heading.split(" ")[0]
    end = text.find(f"\n{level} ", start + len(heading))
    return text[start:end if end >= 0 else len(text)], text.count("\n", 0, start) + 1


def blocks(path: str, heading: str | None) -> list[Block]:
    text, first_line = _section((REPO / path).read_text(), heading)
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip().splitlines()
        mark = MARK.fullmatch(before[-1].strip()) if before else None
        line = first_line + text.count("\n", 0, m.start())
        out.append(Block(f"{path}:{line}", m.group("lang"), m.group("body"), mark.group("why") if mark else None))
    return out


ALL = [b for path, heading in DOCS for b in blocks(path, heading)]


def test_every_command_block_is_runnable_or_marked() -> None:
    assert any(b.lang == "sh" and b.not_run is None for b in ALL)
    for b in ALL:
        if b.not_run is not None:
            assert b.not_run, f"{b.where}: a not-run mark says why"
            assert b.lang == "sh", f"{b.where}: only ```sh blocks run, so only they need a not-run mark"
        elif b.lang != "sh":
            assert not COMMAND.search(b.body), (
                f"{b.where}: a ```{b.lang} block with commands: make it ```sh (then it runs in this test) or "
                "mark it <!-- not-run: why -->")


def _scratch(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the repository's examples with the state `make demo` leaves (small), and the user's env."""
    root = tmp / "repo"
    shutil.copytree(REPO / "examples", root / "examples",
                    ignore=shutil.ignore_patterns("data", "__pycache__", "*.egg-info"))
    for doc in ("README.md", "docs"):
        src = REPO / doc
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / doc)
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    # The CLI of this checkout (the venv may hold another one installed in editable mode).
    trainers = importlib.util.find_spec("kubeforge_trainers")
    assert trainers is not None and trainers.origin is not None
    source = [str(Path(kubeforge.__file__).parents[1]), str(Path(trainers.origin).parents[1])]
    # The user's shell after `make demo`: no state or store moved elsewhere (the step cache stays the test's).
    env = {k: v for k, v in os.environ.items() if k not in ("KUBEFORGE_STATE_DIR", "KUBEFORGE_STORE")}
    env.update(PYTHONPATH=os.pathsep.join(source), OMP_NUM_THREADS="2",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    for cmd in (["datasets", "synth", "shapes", "--out", "examples/quickstart/data/shapes", "--images", "16",
                 "--size", "64", "--seed", "7"],
                ["run", "-f", "examples/quickstart/01-dataset.yaml"]):
        proc = subprocess.run(["kubeforge", *cmd], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, env


@pytest.mark.slow  # `kubeforge run -f examples/datasets/` trains for an epoch: ~20 s
@pytest.mark.usefixtures("step_cache")
def test_command_blocks_run_as_printed_after_make_demo(tmp_path: Path) -> None:
    root, env = _scratch(tmp_path)
    ran = []
    for b in ALL:
        if b.lang != "sh" or b.not_run is not None:
            continue
        proc = subprocess.run(["bash", "-c", "set -euo pipefail\nset -x\n" + b.body], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{b.where}: exit {proc.returncode}\n{b.body}\n{proc.stdout[-3000:]}" \
                                     f"\n{proc.stderr[-3000:]}"
        ran.append(b.where)
    assert any(w.startswith("README.md") for w in ran) and any(w.startswith("docs/") for w in ran), ran
