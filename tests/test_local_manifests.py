"""Manifest loading and the errors `kubeforge run` stops on before anything runs.

Each error case goes through the real CLI (in-process) and checks that the message names
the file, the resource and the field, that the exit code is 2, and that the state directory
was not even created.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubeforge.api import DatasetVersion
from kubeforge.cli.main import app
from kubeforge.local.manifests import ManifestError, load_manifests

DSV = """apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {name: shapes-v1}
spec: {dataset: shapes, source: {uri: s3://raw/shapes/, format: coco}}
"""

TJ = """apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {name: shapes-detector}
spec:
  datasetVersion: shapes-v1
  task: object-detection
  model: {name: ssdlite320_mobilenet_v3_large}
  hyperparameters: {epochs: 3}
"""


def run_cli(tmp_path: Path, files: dict[str, str]) -> tuple[int, str, Path]:
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    for name, text in files.items():
        (mdir / name).write_text(text)
    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["run", "-f", str(mdir), "--state-dir", str(state)])
    return result.exit_code, result.stderr, state


def assert_rejected(tmp_path: Path, files: dict[str, str], *fragments: str) -> str:
    code, err, state = run_cli(tmp_path, files)
    assert code == 2, err
    assert "Traceback" not in err
    assert "nothing was run" in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert not state.exists(), "a rejected run must not touch the state directory"
    return err


def test_unknown_field(tmp_path: Path) -> None:
    bad = TJ.replace("hyperparameters: {epochs: 3}", "hyperparameters: {epochs: 3, batchsize: 4}")
    assert_rejected(tmp_path, {"01-dsv.yaml": DSV, "02-train.yaml": bad},
                    "02-train.yaml: TrainingJob/shapes-detector: spec.hyperparameters.batchsize: unknown field")


def test_wrong_type(tmp_path: Path) -> None:
    bad = TJ.replace("epochs: 3", "epochs: three")
    assert_rejected(tmp_path, {"01-dsv.yaml": DSV, "02-train.yaml": bad},
                    "02-train.yaml: TrainingJob/shapes-detector: spec.hyperparameters.epochs: "
                    "Input should be a valid integer")


def test_negative_epochs_and_every_problem_listed(tmp_path: Path) -> None:
    bad = TJ.replace("epochs: 3", "epochs: -1, batchSize: 0")
    err = assert_rejected(
        tmp_path, {"01-dsv.yaml": DSV, "02-train.yaml": bad},
        "02-train.yaml: TrainingJob/shapes-detector: spec.hyperparameters.epochs: "
        "Input should be greater than or equal to 1",
        "spec.hyperparameters.batchSize: Input should be greater than or equal to 1",
        "2 problems",
    )
    assert err.count("02-train.yaml") == 2


def test_missing_reference(tmp_path: Path) -> None:
    assert_rejected(tmp_path, {"02-train.yaml": TJ},
                    "02-train.yaml: TrainingJob/shapes-detector: spec.datasetVersion: DatasetVersion 'shapes-v1' "
                    "not found in namespace 'default'")


def test_duplicate(tmp_path: Path) -> None:
    assert_rejected(tmp_path, {"all.yaml": DSV + "---\n" + TJ + "---\n" + DSV},
                    "all.yaml (document 3): DatasetVersion/shapes-v1: metadata.name: duplicate",
                    "already defined in", "all.yaml (document 1)")


def test_cycle(tmp_path: Path) -> None:
    a = DSV.replace("format: coco}}", "format: coco}, parent: b}").replace("shapes-v1", "a")
    b = DSV.replace("format: coco}}", "format: coco}, parent: a}").replace("shapes-v1", "b")
    assert_rejected(tmp_path, {"a.yaml": a, "b.yaml": b},
                    "a.yaml: DatasetVersion/a: spec.parent: reference cycle: "
                    "DatasetVersion/a (spec.parent) -> DatasetVersion/b (spec.parent) -> DatasetVersion/a")


def test_bad_kind_and_yaml_syntax(tmp_path: Path) -> None:
    assert_rejected(tmp_path, {"a.yaml": DSV.replace("kind: DatasetVersion", "kind: Dataset"),
                               "b.yml": "kind: [unclosed\n"},
                    "a.yaml: Dataset/shapes-v1: kind: expected one of DatasetVersion",
                    "b.yml: line 2 not valid YAML")


def test_relative_source_resolves_against_the_manifest_directory(tmp_path: Path) -> None:
    (tmp_path / "sub" / "data").mkdir(parents=True)
    manifest = tmp_path / "sub" / "dsv.yaml"
    manifest.write_text(DSV.replace("s3://raw/shapes/", "data"))
    (loaded,) = load_manifests(manifest)
    assert isinstance(loaded.resource, DatasetVersion)
    assert loaded.resource.spec.source.uri == str(tmp_path / "sub" / "data")

    (tmp_path / "s3.yaml").write_text(DSV)
    (s3,) = load_manifests(tmp_path / "s3.yaml")
    assert s3.resource.spec.source.uri == "s3://raw/shapes/"  # type: ignore[union-attr]

    manifest.write_text(DSV.replace("s3://raw/shapes/", "missing"))
    with pytest.raises(ManifestError, match=r"dsv.yaml: DatasetVersion/shapes-v1: spec.source.uri: 'missing' "
                                            r"resolves to .*/sub/missing, which does not exist"):
        load_manifests(manifest)


def test_a_directory_loads_yaml_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(TJ)
    (tmp_path / "a.yml").write_text(DSV)
    (tmp_path / "notes.txt").write_text("not a manifest")
    loaded = load_manifests(tmp_path)
    assert [(item.path.name, item.resource.kind) for item in loaded] == [
        ("a.yml", "DatasetVersion"), ("b.yaml", "TrainingJob")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match=r"no \*.yaml or \*.yml manifests"):
        load_manifests(empty)


def test_several_targets_load_together_like_repeated_kubectl_f(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: kubeforge.io/v1alpha1\nkind: InferenceService\nmetadata: {name: a}\n"
        "spec: {model: {trainingJob: t}}\n")
    (tmp_path / "b.yaml").write_text(
        "apiVersion: kubeforge.io/v1alpha1\nkind: InferenceService\nmetadata: {name: b}\n"
        "spec: {model: {trainingJob: t}}\n")
    loaded = load_manifests([tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "a.yaml"])
    assert [item.resource.name for item in loaded] == ["a", "b"]
