"""`kubeforge run` prints each failed step's whole reason after its table (the table's OUTPUT column holds its
first 100 characters only), through the real runner and the real `kubeforge step dataset-version`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.local.state import StateDir

DOC = ("apiVersion: kubeforge.io/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: {name}}}\n"
       "spec: {{dataset: shapes, source: {{uri: {uri}, format: coco}}}}\n")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_run_prints_the_whole_reason_of_each_failed_step(tmp_path: Path) -> None:
    # A long path, so the reason runs far past the table's column and the console's 160 characters.
    broken = tmp_path / "a-rather-long-folder-name-for-raw-data" / "exported-by-the-labelling-team" / "shapes"
    generate_shapes_coco(broken, n_images=2, size=32, seed=1, max_objects=1)
    coco = json.loads((broken / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    (broken / "annotations.json").write_text(json.dumps(coco))
    text = DOC.format(name="broken", uri=broken) + "---\n" + DOC.format(name="empty", uri=tmp_path / "empty")
    (tmp_path / "m.yaml").write_text(text)
    (tmp_path / "empty").mkdir()
    state = tmp_path / "state"

    result = CliRunner().invoke(app, ["run", "-f", str(tmp_path / "m.yaml"), "--state-dir", str(state)])
    assert result.exit_code == 1, result.output
    out = result.stdout
    table, after = out.split("2 of 2 resources failed", 1)
    for name in ("broken", "empty"):
        message = StateDir(state).get("DatasetVersion", "default", name).resource.status.message  # type: ignore[union-attr]
        assert message
        assert _squash(f"DatasetVersion/{name}: {message}") in _squash(after), (name, message, after)
    broken_message = StateDir(state).get("DatasetVersion", "default", "broken").resource.status.message  # type: ignore[union-attr]
    assert len(broken_message) > 160 and "category" in broken_message
    assert str(broken / "annotations.json") in broken_message
    assert "kubeforge run" in table  # the table's title: the reasons come after it
    assert all(len(line) <= 160 for line in after.splitlines())  # wrapped to the console
