"""`kubeforge get kubeforge` lists every kind, as `kubectl get kubeforge` does with the CRDs' category."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kubeforge.api import KINDS, parse_resource
from kubeforge.api.crd import crd_filename
from kubeforge.api.registry import kinds_for
from kubeforge.cli.main import app
from kubeforge.local.state import Record, StateDir

REPO = Path(__file__).resolve().parents[1]
GV = "kubeforge.io/v1alpha1"


def _seed(state: StateDir) -> None:
    """One resource of each of two kinds, as a run leaves them."""
    for obj in (
        {"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": "shapes-v1"},
         "spec": {"dataset": "shapes", "source": {"uri": "data/shapes", "format": "coco"}},
         "status": {"phase": "Succeeded", "digest": "a" * 64}},
        {"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": "det"},
         "spec": {"datasetVersion": "shapes-v1", "task": "object-detection",
                  "model": {"name": "ssdlite320_mobilenet_v3_large"}},
         "status": {"phase": "Running"}},
    ):
        state.save(Record(parse_resource(obj)))


def test_every_crd_carries_the_category_that_the_cli_resolves() -> None:
    for cls in KINDS.values():
        crd = yaml.safe_load((REPO / "crds" / crd_filename(cls)).read_text())
        assert crd["spec"]["names"]["categories"] == ["kubeforge"], cls.__name__
    assert kinds_for("kubeforge") == list(KINDS.values())
    assert kinds_for("tj") == [KINDS["TrainingJob"]]
    with pytest.raises(KeyError, match=r"unknown kind 'nope'.*category kubeforge"):
        kinds_for("nope")


def test_get_kubeforge_lists_every_kind(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    _seed(state)
    runner = CliRunner()
    result = runner.invoke(app, ["get", "kubeforge", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("datasetversion.kubeforge.io/shapes-v1 ") for line in lines), result.output
    assert any(line.startswith("trainingjob.kubeforge.io/det ") for line in lines), result.output
    assert result.output.count("NAME") == 2  # one table per kind that has resources

    one = runner.invoke(app, ["get", "kubeforge", "det", "-o", "yaml", "--state-dir", str(tmp_path)])
    assert one.exit_code == 0, one.output
    items = yaml.safe_load(one.output)["items"]
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [("TrainingJob", "det")]

    missing = runner.invoke(app, ["get", "kubeforge", "nothing", "--state-dir", str(tmp_path)])
    assert missing.exit_code == 2
    assert "no resource named 'nothing'" in missing.output


def test_get_unknown_kind_names_the_category(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["get", "widgets", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown kind 'widgets'" in result.output and "kubeforge" in result.output
