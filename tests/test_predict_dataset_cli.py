"""`kubeforge predict SERVICE PATH --format dataset --output NAME`: the predictions become a DatasetVersion, written
by the PredictionJob's step, against the real tritonserver serving the tiny grid detector as InferenceService `grid`
of a local state directory (one server for the module)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.versions import list_versions, load_manifest
from kubeforge.local.state import ENV_STATE_DIR, Record, StateDir
from kubeforge.models.meta import ModelMeta
from kubeforge.predict import to_dataset
from kubeforge.serving.triton_server import TritonProcess
from kubeforge.store import LocalStore, layout
from kubeforge.testing.triton_serving import registered_service

pytestmark = pytest.mark.triton
W, H = 64, 48  # a detector cell is 16x12 here
BRIGHT, DIM = 220, 150  # scores about 0.86 and 0.59: a threshold of 0.7 keeps the bright cells only


@dataclass
class World:
    state: Path
    store: LocalStore
    proc: TritonProcess
    meta: ModelMeta

    def run(self, *args: str) -> Any:
        env = {ENV_STATE_DIR: str(self.state), "KUBEFORGE_STORE": self.store.uri}
        return CliRunner().invoke(app, ["predict", *args], env=env)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_detector: tuple[Path, ModelMeta],
          triton_backend_dir: Path) -> Iterator[World]:
    onnx, meta = tiny_detector
    state = tmp_path_factory.mktemp("predict-dataset") / "state"
    with registered_service(state, onnx, meta, "grid", triton_backend_dir, training_job="grid-detector") as proc:
        yield World(state, LocalStore(state / "store"), proc, meta)


def photos(folder: Path, count: int) -> dict[str, list[tuple[int, tuple[float, float, float, float]]]]:
    """Images with a bright cell of the first class and, on odd ones, a dim cell of the second; returns each
    file's true (class index, COCO box) objects by its path relative to the folder."""
    truth = {}
    for i in range(count):
        img = Image.new("RGB", (W, H))
        objects = []
        for cell, level, label in [(i % 16, BRIGHT, 0), *([((i * 5 + 3) % 16, DIM, 1)] if i % 2 else [])]:
            colour = [0, 0, 0]
            colour[label] = level
            box = ((cell % 4) * 16, (cell // 4) * 12, 16, 12)
            img.paste(tuple(colour), (box[0], box[1], box[0] + 16, box[1] + 12))
            objects.append((label, tuple(map(float, box))))
        name = f"{'sub/' if i % 3 == 0 else ''}img{i:02d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(folder / name)
        truth[name] = sorted(objects)
    return truth


def digest_of(output: str, dataset: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(f"wrote: {dataset}@")]
    return line.removeprefix(f"wrote: {dataset}@")


def inference_count(proc: TritonProcess) -> int:
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(proc.grpc_url).get_inference_statistics("grid", as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def test_a_folder_becomes_a_version_and_a_version_its_parent(world: World, tmp_path: Path) -> None:
    truth = photos(tmp_path / "photos", 6)
    result = world.run("grid", str(tmp_path / "photos"), "--format", "dataset", "--output", "preds")
    assert result.exit_code == 0, result.output
    digest = digest_of(result.stdout, "preds")
    assert "6 images, 9 predictions, 0 skipped" in result.stdout and "parent: none" in result.stdout

    manifest = load_manifest(world.store, "preds", digest)
    assert manifest.task == "object-detection"
    classes = {c.id: c.name for c in manifest.categories}
    found: dict[str, list[tuple[int, tuple[float, ...]]]] = {im.file_name: [] for im in manifest.images}
    for ann in manifest.annotations:
        name = manifest.images[ann.image].file_name
        label = world.meta.classes.index(classes[ann.category_id])
        found[name].append((label, tuple(ann.bbox)))
        [tag] = ann.tags  # each object with its confidence (the cell's mean, blurred a little by the resize)
        assert tag.startswith("score=") and abs(float(tag[6:]) - (BRIGHT if label == 0 else DIM) / 255) < 0.05
    assert {name: sorted(objects) for name, objects in found.items()} == truth

    source = to_dataset.read_source(world.store, "preds", digest)
    assert source is not None
    assert source["command"]["name"] == "kubeforge predict" and "predictionJob" not in source
    experiment = layout.run_output_prefix(layout.experiment_prefix("default", "shapes", "grid-detector", "torch"), "r1")
    assert source["model"] == {"trainingJob": "grid-detector", "run": "r1", "inferenceService": "grid",
                               "experimentPrefix": experiment, "task": "object-detection"}
    assert source["threshold"] == 0.5 and source["thresholdSource"].startswith("default")
    assert source["parents"] == [] and source["input"] == {"source": {"uri": str(tmp_path / "photos")}}

    # The version as input (a digest prefix will do): its parent; an existing dataset gets a new version on top.
    result = world.run("grid", f"dataset:preds@{digest[:8]}", "-f", "dataset", "-o", "preds", "--threshold", "0.7")
    assert result.exit_code == 0, result.output
    again = digest_of(result.stdout, "preds")
    assert again != digest and set(list_versions(world.store, "preds")) >= {digest, again}
    assert load_manifest(world.store, "preds", digest).digest() == digest  # the first version untouched
    derived = load_manifest(world.store, "preds", again)
    assert [im.file_name for im in derived.images] == [im.file_name for im in manifest.images]
    assert len(derived.annotations) == 6  # the bright cells only
    assert sorted(a.tags for a in derived.annotations) == sorted(a.tags for a in manifest.annotations
                                                                 if float(a.tags[0][6:]) >= 0.7)
    assert derived.categories == manifest.categories  # the parent's class ids kept
    source = to_dataset.read_source(world.store, "preds", again)
    assert source is not None
    assert source["parents"] == [{"dataset": "preds", "digest": digest}]
    assert source["threshold"] == 0.7 and source["thresholdSource"] == "--threshold"
    assert f"parent: preds@{digest[:12]}" in result.stdout


def test_what_cannot_be_a_version_fails_before_any_request(world: World, tmp_path: Path) -> None:
    photos(tmp_path / "photos", 2)
    folder = str(tmp_path / "photos")
    before = inference_count(world.proc)
    cases = [
        (["grid", folder, "-f", "dataset"], "--format dataset needs --output NAME"),
        (["grid", folder, folder, "-f", "dataset", "-o", "x"], "one PATH makes one version; got 2"),
        (["grid", str(tmp_path / "photos" / "img01.png"), "-f", "dataset", "-o", "x"], "img01.png: an image;"),
        (["grid", folder, "-f", "dataset", "-o", "Bad_Name"], "--output 'Bad_Name': a dataset name is"),
        (["grid", folder, "-f", "dataset", "-o", "x", "--url", world.proc.grpc_url], "--url: not with --format"),
        (["grid", "dataset:nope@abcdef", "-f", "dataset", "-o", "x"], "nope"),
        (["nosuch", folder, "-f", "dataset", "-o", "x"], "nosuch"),
    ]
    for args, message in cases:
        result = world.run(*args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)

    # A semantic segmentation model (its model meta says so): refused before any image is sent or stored.
    experiment = "experiments/default_shapes/sem_torch/runs/r1"
    sem = world.meta.model_copy(update={"task": "semantic-segmentation"})
    world.store.put_bytes(f"{experiment}/{layout.MODEL_META}", sem.model_dump_json().encode())
    grid = StateDir(world.state).get("InferenceService", "default", "grid")
    resource = grid.resource.model_copy(deep=True)
    resource.metadata.name = "sem"
    assert resource.status is not None
    resource.status.experiment_prefix = experiment
    resource.status.model_name = "grid"  # the same server answers: what matters is that nothing is asked
    StateDir(world.state).save(Record(resource, store=world.store.uri))
    result = world.run("sem", folder, "-f", "dataset", "-o", "segs")
    assert result.exit_code == 1, result.output
    assert "a semantic-segmentation model's predictions cannot be a DatasetVersion" in result.stderr
    assert inference_count(world.proc) == before
    assert list(world.store.list(layout.prediction_prefix("default", "segs"))) == []
    assert list_versions(world.store, "segs") == []


def test_a_video_becomes_a_version_of_its_frames(world: World, tmp_path: Path) -> None:
    from kubeforge.predict.video import AnnotatedVideoWriter
    from kubeforge.serving.client import Prediction

    clip = tmp_path / "clip.mp4"
    with AnnotatedVideoWriter(clip, fps=10.0) as writer:
        for _ in range(4):  # a bright cell of the first class in the second row of every frame
            img = Image.new("RGB", (W, H))
            img.paste((BRIGHT, 0, 0), (16, 12, 32, 24))
            writer.write(img, Prediction(image="", width=W, height=H, task="object-detection"))
    result = world.run("grid", str(clip), "-f", "dataset", "-o", "clip-preds")
    assert result.exit_code == 0, result.output
    manifest = load_manifest(world.store, "clip-preds", digest_of(result.stdout, "clip-preds"))
    assert [im.file_name for im in manifest.images] == [f"clip/frame_{f:06d}.png" for f in range(4)]
    assert [ann.image for ann in manifest.annotations] == [0, 1, 2, 3]
    assert all(abs(a - b) <= 2.0 for ann in manifest.annotations for a, b in zip(ann.bbox, (16, 12, 16, 12),
                                                                                 strict=True))
    source = to_dataset.read_source(world.store, "clip-preds", manifest.digest())
    assert source is not None and source["input"] == {"video": str(clip)} and source["parents"] == []
