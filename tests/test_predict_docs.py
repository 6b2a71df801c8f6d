"""Every ```sh block of docs/predict.md and of the README's "Predict on a folder or a video" runs as printed, in
order, with the real CLI, against a served model registered as the local runner registers it: InferenceService
`shapes` in a state directory, its repository written by the serve step into the store and served by the real
tritonserver.
The model is the tiny grid detector (what it finds on the shapes does not matter here; the commands do).
Blocks that need what a test cannot have are marked `<!-- not-run: why -->` (checked as in test_docs_commands).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeforge.local.state import ENV_STATE_DIR
from kubeforge.models.meta import ModelMeta
from kubeforge.testing.triton_serving import registered_service

pytestmark = pytest.mark.triton
REPO = Path(__file__).resolve().parents[1]
DOCS = [("docs/predict.md", None), ("README.md", "## Predict on a folder or a video")]


def _docs_module():  # type: ignore[no-untyped-def]
    """test_docs_commands' block reader (one parser for every docs test)."""
    spec = importlib.util.spec_from_file_location("docs_commands", REPO / "tests" / "test_docs_commands.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


DOCS_COMMANDS = _docs_module()
ALL = [b for path, heading in DOCS for b in DOCS_COMMANDS.blocks(path, heading)]


def test_every_command_block_is_runnable_or_marked() -> None:
    assert sum(b.lang == "sh" and b.not_run is None for b in ALL) >= 5
    for b in ALL:
        if b.not_run is not None:
            assert b.not_run and b.lang == "sh", b.where
        elif b.lang != "sh":
            assert not DOCS_COMMANDS.COMMAND.search(b.body), f"{b.where}: commands outside a ```sh block"


@pytest.fixture
def serving_state(tmp_path: Path, tiny_detector: tuple[Path, ModelMeta], triton_backend_dir: Path
                  ) -> Iterator[dict[str, str]]:
    """The user's environment with InferenceService `shapes` serving, as after `make demo`."""
    onnx, meta = tiny_detector
    state = tmp_path / "state"
    with registered_service(state, onnx, meta, "shapes", triton_backend_dir):
        source = [str(REPO / "operator"), str(REPO / "trainers")]
        env = {k: v for k, v in os.environ.items() if k != "KUBEFORGE_STORE"}
        env.update({ENV_STATE_DIR: str(state), "PYTHONPATH": os.pathsep.join(source), "OMP_NUM_THREADS": "2",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
        yield env


@pytest.mark.usefixtures("step_cache")
def test_command_blocks_run_as_printed(serving_state: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "benchmarks").symlink_to(REPO / "benchmarks")
    ran = []
    for b in ALL:
        if b.lang != "sh" or b.not_run is not None:
            continue
        proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + b.body], cwd=work, env=serving_state,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{b.where}: exit {proc.returncode}\n{b.body}\n{proc.stdout[-3000:]}" \
                                     f"\n{proc.stderr[-3000:]}"
        ran.append(b.where)
    assert any(w.startswith("README.md") for w in ran) and any(w.startswith("docs/") for w in ran), ran
    assert (work / "results.images.json").is_file() and any((work / "annotated").iterdir())
