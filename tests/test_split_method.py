"""TrainingJob spec.split.method: `dataset` trains on the split the version records (image tags train/val),
and is the default when the version records one; the Benchmark's val set follows the run's split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubeforge.api import TrainingJob
from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.synth import generate_shapes_imagefolder
from kubeforge.datasets.versions import load_manifest
from kubeforge.evaluation.groundtruth import select_images
from kubeforge.steps.runs import run_id
from kubeforge.steps.spec import DatasetRef
from kubeforge.store import LocalStore, layout
from kubeforge.testing.train_runs import train_run_spec
from kubeforge_trainers.split import choose_split

KUBEFORGE = Path(sys.executable).with_name("kubeforge")
INPUTS = {"dataset": {"dataset": "shapes", "digest": "ab" * 32}, "init": None}


def _job(**spec: Any) -> TrainingJob:
    return TrainingJob.model_validate({
        "apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "det"},
        "spec": {"datasetVersion": "shapes-v1", "task": "object-detection",
                 "model": {"name": "ssdlite320_mobilenet_v3_large"}, **spec}})


def test_run_ids_of_specs_written_before_split_method_dataset_are_unchanged() -> None:
    # The ids main computed (commit 3939d84, before split.method had `dataset`) for these very specs.
    assert run_id("TrainingJob", _job().spec, INPUTS) == "8f546d23e5"
    assert run_id("TrainingJob", _job(split={"method": "random", "trainPercent": 80, "seed": 0}).spec,
                  INPUTS) == "8f546d23e5"
    assert run_id("TrainingJob", _job(split={"trainPercent": 70, "seed": 3}).spec, INPUTS) == "4e365dbe75"
    # The new default written out (as a cluster's API server fills it in): still the same run.
    assert run_id("TrainingJob", _job(split={"method": "auto"}).spec, INPUTS) == "8f546d23e5"
    # Asking for the recorded split is another run.
    assert run_id("TrainingJob", _job(split={"method": "dataset"}).spec, INPUTS) not in ("8f546d23e5", "4e365dbe75")


def test_a_run_recorded_before_auto_is_the_same_run_where_auto_resolves_to_random() -> None:
    from kubeforge.steps.spec import TrainRun
    from kubeforge.steps.train import run_spec_digest

    run = TrainRun.model_validate({
        "store": "file:///s", "namespace": "default", "name": "clf", "run_id": "abc",
        "spec": {"datasetVersion": "cls", "task": "classification", "model": {"name": "resnet18"}},
        "dataset": {"dataset": "cls", "digest": "ab" * 32}, "experiment_prefix": "experiments/x/runs/abc"})
    # The digest main's train step (commit 3939d84) recorded for this run spec in run_spec.json and
    # experiment_info.json: a rerun of the same run after the upgrade finds its result.
    assert run_spec_digest(run, "random") == "afb7b43e4098bbdd4a35d4bd19346097e09e54a1d0acf7e7803c4b0bf21ff622"
    assert run_spec_digest(run, "dataset") != run_spec_digest(run, "random")


def _images(train: int, val: int, test: int = 0, untagged: int = 0) -> list[tuple[str, list[str]]]:
    out = [(f"train/{i}.png", ["train"]) for i in range(train)] + [(f"val/{i}.png", ["val"]) for i in range(val)]
    out += [(f"test/{i}.png", ["test", "night"]) for i in range(test)]
    return out + [(f"x/{i}.png", ["night"]) for i in range(untagged)]


def test_auto_uses_the_recorded_split_and_says_what_it_left_out() -> None:
    split, line = choose_split("auto", _images(3, 2, test=2, untagged=1), 80.0, 0)
    assert split.method == "dataset"
    assert split.train == ["train/0.png", "train/1.png", "train/2.png"] and split.val == ["val/0.png", "val/1.png"]
    assert "dataset" in line and "3 train, 2 val" in line and "3 not used (2 tagged test, 1 untagged)" in line
    doc = split.to_json()
    assert doc["method"] == "dataset" and doc["requested"] == "auto" and doc["unused"] == {"test": 2, "untagged": 1}
    assert "trainPercent" not in doc


def test_auto_on_a_version_without_a_split_is_the_old_random_split() -> None:
    images = _images(0, 0, test=3, untagged=7)  # test tags alone record no train/val split
    split, line = choose_split("auto", images, 80.0, 0)
    explicit, _ = choose_split("random", images, 80.0, 0)
    assert split.to_json() == explicit.to_json()
    assert split.to_json()["method"] == "random" and len(split.train) == 8 and "records no split" in line


def test_random_ignores_the_recorded_split() -> None:
    split, _ = choose_split("random", _images(5, 5), 50.0, 3)
    assert split.method == "random" and len(split.train) == 5
    assert set(split.train) != {f"train/{i}.png" for i in range(5)}


@pytest.mark.parametrize(("images", "missing"), [((4, 0), "no val images"), ((0, 4), "no train images"),
                                                 ((0, 0), "no train and val images")])
def test_dataset_without_train_or_val_images_names_the_field_and_the_counts(images: tuple[int, int],
                                                                             missing: str) -> None:
    with pytest.raises(ValueError) as err:
        choose_split("dataset", _images(*images, test=1, untagged=2), 80.0, 0)
    message = str(err.value)
    assert "spec.split.method is dataset" in message and missing in message
    assert f"{images[0]} train, {images[1]} val, 1 test, 2 untagged" in message


def test_auto_with_train_tags_but_no_val_is_the_same_error() -> None:
    with pytest.raises(ValueError, match=r"spec.split.method is auto \(the default\) and the version records a split, "
                                         r"but the dataset version records no val images \(3 train, 0 val, 0 test, "
                                         r"1 untagged images by their split tags\); .* set spec.split.method: random"):
        choose_split("auto", _images(3, 0, untagged=1), 80.0, 0)


def test_an_image_in_two_splits_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"a/b\.png: image tags \['train', 'val'\]"):
        choose_split("auto", [("a/b.png", ["val", "train"]), ("c.png", ["train"])], 80.0, 0)


def _yolo_with_split_folders(root: Path) -> Path:
    """A YOLO dataset whose images sit in images/train and images/val (and one in images/test)."""
    gen = root / "gen"
    generate_shapes_imagefolder(gen, n_per_class=3, size=32, seed=4)
    src = root / "yolo"
    pngs = sorted(gen.rglob("*.png"))
    for i, png in enumerate(pngs):
        split = "val" if i % 3 == 0 else "test" if i == 1 else "train"
        (src / "images" / split).mkdir(parents=True, exist_ok=True)
        (src / "labels" / split).mkdir(parents=True, exist_ok=True)
        (src / "images" / split / f"{i:03d}.png").write_bytes(png.read_bytes())
        (src / "labels" / split / f"{i:03d}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (src / "data.yaml").write_text("names: [shape]\n")
    return src


def test_the_benchmarks_val_set_is_the_versions_val_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    src = _yolo_with_split_folders(tmp_path)
    spec = DatasetVersionSpec.model_validate({"dataset": "yolo", "source": {"uri": str(src), "format": "yolo"}})
    result = import_dataset(spec, store, progress=False)
    manifest = load_manifest(store, "yolo", result.digest)
    # What the train step records (the TrainingJob leaves split.method unset) ...
    split, _ = choose_split(_job().spec.split.method, [(im.file_name, im.tags) for im in manifest.images], 80.0, 0)
    doc = json.loads(json.dumps(split.to_json()))  # train_val_split.json
    # ... is what the Benchmark reads for its "val" and "train" sets.
    val, missing = select_images(manifest, "val", doc, "train_val_split.json")
    assert not missing
    val_names = sorted(manifest.images[i].file_name for i in val)
    assert val_names == sorted(str(p.relative_to(src)) for p in (src / "images" / "val").glob("*.png"))
    train, _ = select_images(manifest, "train", doc, "train_val_split.json")
    assert all(manifest.images[i].file_name.startswith("images/train/") for i in train)
    assert len(train) == len(list((src / "images" / "train").glob("*.png")))


@pytest.mark.usefixtures("step_cache")
def test_the_train_step_refuses_method_dataset_on_a_version_without_a_split(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    gen = tmp_path / "cls"
    generate_shapes_imagefolder(gen, n_per_class=2, size=32, seed=1)
    spec = DatasetVersionSpec.model_validate({"dataset": "cls", "source": {"uri": str(gen), "format": "imagefolder"}})
    digest = import_dataset(spec, store, progress=False).digest
    job = {"datasetVersion": "cls-v1", "task": "classification", "model": {"name": "resnet18"},
           "split": {"method": "dataset"},
           "hyperparameters": {"epochs": 1, "batchSize": 2}}
    run = train_run_spec(store, DatasetRef(dataset="cls", digest=digest), "clf", job)
    spec_path, result_path = tmp_path / "run.json", tmp_path / "result.json"
    spec_path.write_text(run.model_dump_json())
    proc = subprocess.run([str(KUBEFORGE), "step", "train", "--spec", str(spec_path), "--result", str(result_path)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode != 0
    assert "spec.split.method is dataset, but the dataset version records no train and val images" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not store.exists(f"{run.experiment_prefix}/{layout.TRAIN_VAL_SPLIT}")


E2E = """apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {name: cls}
spec: {dataset: cls, source: {uri: data, format: imagefolder}}
---
apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {name: clf}
spec:
  datasetVersion: cls
  task: classification
  model: {name: mobilenet_v3_small, imageSize: 32}
  hyperparameters: {epochs: 1, batchSize: 4}
  export: [onnx]
  benchmark: {enabled: false}
---
apiVersion: kubeforge.io/v1alpha1
kind: Benchmark
metadata: {name: clf-val}
spec:
  models: [{trainingJob: clf}]
  split: val
  bootstrap: {resamples: 10}
  speed: {enabled: false}
"""


@pytest.mark.slow  # a real training epoch, export and benchmark: ~30 s
@pytest.mark.usefixtures("step_cache")
def test_a_version_from_train_and_val_folders_is_trained_and_benchmarked_on_its_own_split(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app
    from kubeforge.local.state import StateDir

    gen = tmp_path / "gen"
    generate_shapes_imagefolder(gen, n_per_class=4, size=32, seed=5)
    data = tmp_path / "data"
    for i, png in enumerate(sorted(gen.rglob("*.png"))):  # train/<class>/..., val/<class>/...
        split = "val" if i % 4 == 0 else "train"
        (data / split / png.parent.name).mkdir(parents=True, exist_ok=True)
        (data / split / png.parent.name / png.name).write_bytes(png.read_bytes())
    (tmp_path / "m.yaml").write_text(E2E)
    state, store = tmp_path / "state", tmp_path / "store"
    result = CliRunner().invoke(app, ["run", "-f", str(tmp_path / "m.yaml"), "--state-dir", str(state),
                                      "--store", str(store)])
    assert result.exit_code == 0, result.output
    val_images = sorted(str(p.relative_to(data)) for p in (data / "val").rglob("*.png"))
    train_images = sorted(str(p.relative_to(data)) for p in (data / "train").rglob("*.png"))
    st = LocalStore(store)
    job = StateDir(state).get("TrainingJob", "default", "clf").resource
    prefix = job.status.output_prefix  # type: ignore[union-attr]
    split = st.get_json(f"{prefix}/{layout.TRAIN_VAL_SPLIT}")
    assert (split["method"], split["requested"], split["train"], split["val"]) == (
        "dataset", "auto", train_images, val_images)
    log = (StateDir(state).run_dir("TrainingJob", "default", "clf") / "step.log").read_text()
    assert f"split: dataset (spec.split.method auto; the version records a split): {len(train_images)} train, " \
           f"{len(val_images)} val images by their tags" in log
    bench = StateDir(state).get("Benchmark", "default", "clf-val").resource
    metrics = st.get_json(f"{bench.status.output_prefix}/metrics.json")  # type: ignore[union-attr]
    model = metrics["models"]["clf"]
    assert sorted(model["perImage"]["fileNames"]) == val_images
