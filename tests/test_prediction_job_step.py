"""The predict step on its own (`kubeforge step predict`): the tiny grid detector's ONNX export run in-process
on a folder of generated images, predictions written as they come, a real interruption (an unreadable image
in the middle) that keeps them, and a rerun that continues from them; the output is a DatasetVersion with
scores on its annotations. Also the API's one-of rules."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from kubeforge.api import PredictionJob
from kubeforge.datasets.versions import load_manifest
from kubeforge.predict import to_dataset
from kubeforge.predict.threshold import DEFAULT_THRESHOLD
from kubeforge.steps import predict
from kubeforge.steps.errors import StepFailedError
from kubeforge.steps.spec import PredictRun
from kubeforge.store import layout, open_store

EXPERIMENT = "experiments/default_shapes/det_custom/runs/abcdef0123"


def image(path: Path, cells: list[tuple[int, int, int]]) -> None:
    """A 32x32 image, dark, with bright cells (row, col, channel) the grid detector finds."""
    arr = np.full((32, 32, 3), 20, dtype=np.uint8)
    for row, col, channel in cells:
        arr[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8, channel] = 230
    Image.fromarray(arr).save(path)


@pytest.fixture
def world(tmp_path: Path, tiny_detector: Any) -> dict[str, Any]:
    onnx, meta = tiny_detector
    store = open_store((tmp_path / "store").as_uri())
    store.put_file(f"{EXPERIMENT}/{layout.ONNX_EXPORT}", Path(onnx))
    store.put_bytes(f"{EXPERIMENT}/{layout.MODEL_META}", meta.model_dump_json().encode())
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(10):
        image(folder / f"img{i:02d}.png", [(i % 4, (i * 3) % 4, i % 3)] + ([(3, 3, 0)] if i % 2 else []))
    return {"store": store, "folder": folder}


def run_spec(store: Any, folder: Path, **spec: Any) -> PredictRun:
    return PredictRun.model_validate({
        "store": store.uri, "namespace": "default", "name": "pred", "run_id": "0123456789",
        "spec": {"model": {"trainingJob": "det"}, "input": {"source": {"uri": str(folder)}}, **spec},
        "model": {"experiment_prefix": EXPERIMENT, "training_job": "det", "training_run": "abcdef0123"},
        "output_prefix": "predictions/default_pred/runs/0123456789", "output_dataset": "pred"})


def test_an_unreadable_image_stops_the_run_and_a_rerun_continues(world: dict[str, Any]) -> None:
    store, folder = world["store"], world["folder"]
    (folder / "img05.png").write_bytes(b"not a png")  # the middle of the sorted input
    spec = run_spec(store, folder, threshold=0.6)

    with pytest.raises(StepFailedError) as failed:
        predict.run(spec)
    message = str(failed.value)
    assert f"{folder}/img05.png" in message and "not a readable image" in message
    assert "5 predictions kept at" in message and "a rerun continues from them" in message
    progress = store.get_json(f"{spec.output_prefix}/{layout.PROGRESS}")
    assert (progress["phase"], progress["done"], progress["total"]) == ("Failed", 5, 10)
    kept = [json.loads(t) for k in store.list(f"{spec.output_prefix}/parts/")
            for t in store.get_bytes(k).decode().splitlines()]
    assert [line["image"] for line in kept] == [f"img{i:02d}.png" for i in range(5)]

    image(folder / "img05.png", [(1, 1, 2)])  # the file is fixed
    result = predict.run(spec)
    assert result["resumed"] == 5 and result["images"] == 10 and result["progress"]["done"] == 10
    assert result["threshold"] == 0.6 and result["parents"] == [] and result["dataset"] == "pred"
    manifest = load_manifest(store, "pred", result["digest"])
    assert manifest.task == "object-detection" and manifest.class_names() == ["red", "green", "blue"]
    assert len(manifest.images) == 10 and result["predictions"] == len(manifest.annotations)
    # Every image has its bright cell(s); odd images also a red one in the corner cell (3, 3).
    per_image = manifest.annotations_by_image()
    names = [im.file_name for im in manifest.images]
    for name, anns in zip(names, per_image, strict=True):
        i = int(name[3:5])
        cells = 1 if i == 5 else (2 if i % 2 and (i % 4, (i * 3) % 4) != (3, 3) else 1)  # img05: refilled
        assert len(anns) == cells, (name, anns)
        for ann in anns:
            (score,) = [float(t.split("=")[1]) for t in ann.tags if t.startswith("score=")]
            assert 0.6 <= score <= 1.0
    corner = [a for a, anns in enumerate(per_image) for ann in anns if ann.bbox == [24.0, 24.0, 8.0, 8.0]]
    assert corner and all(int(names[a][3:5]) % 2 and names[a] != "img05.png" for a in corner)
    # The version's source record: the model, its TrainingJob run and the threshold.
    source = to_dataset.read_source(store, "pred", result["digest"])
    assert source is not None and source["threshold"] == 0.6 and source["parents"] == []
    assert source["model"]["trainingJob"] == "det" and source["model"]["run"] == "abcdef0123"
    assert source["predictionJob"] == {"namespace": "default", "name": "pred", "run": "0123456789"}
    assert store.exists(layout.dataset_stats_key("pred", result["digest"]))


def test_skip_leaves_an_unreadable_image_out_and_names_it(world: dict[str, Any]) -> None:
    store, folder = world["store"], world["folder"]
    (folder / "img03.png").write_bytes(b"\x89PNG broken")
    result = predict.run(run_spec(store, folder, onInvalidImage="Skip"))
    assert result["images"] == 9 and result["resumed"] == 0
    assert [s["file"] for s in result["skipped"]] == ["img03.png"]
    assert "not a readable image" in result["skipped"][0]["reason"]
    assert result["threshold"] == DEFAULT_THRESHOLD and "no Benchmark" in result["thresholdSource"]
    assert result["progress"]["skipped"] == 1


def doc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeforge.io/v1alpha1", "kind": "PredictionJob", "metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(("spec", "expected"), [
    ({"model": {}, "input": {"video": "a.mp4"}}, "exactly one of inferenceService or trainingJob"),
    ({"model": {"inferenceService": "s", "trainingJob": "t"}, "input": {"video": "a.mp4"}},
     "exactly one of inferenceService or trainingJob"),
    ({"model": {"inferenceService": "s", "run": "abcdef"}, "input": {"video": "a.mp4"}}, "run pins a run"),
    ({"model": {"trainingJob": "t"}, "input": {}}, "exactly one of datasetVersion, source or video"),
    ({"model": {"trainingJob": "t"}, "input": {"video": "a.mp4", "datasetVersion": "d"}},
     "exactly one of datasetVersion, source or video"),
    ({"model": {"trainingJob": "t"}, "input": {"video": "a.mp4"}, "threshold": 1.5}, "less than or equal to 1"),
])
def test_the_api_refuses_what_is_not_one_model_and_one_input(spec: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        PredictionJob.model_validate(doc(**spec))


def test_the_crd_carries_the_same_one_of_rules() -> None:
    import yaml

    from kubeforge.api.crd import crd_for, render

    schema = yaml.safe_load(render(crd_for(PredictionJob)))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    rules = [r["rule"] for r in spec["model"]["x-kubernetes-validations"]]
    assert "has(self.inferenceService) != has(self.trainingJob)" in rules
    message = spec["input"]["x-kubernetes-validations"][0]["message"]
    assert message == "set exactly one of datasetVersion, source or video"


def test_a_video_becomes_a_version_of_its_frames(world: dict[str, Any], tmp_path: Path) -> None:
    from kubeforge.datasets.synth_video import render

    store = world["store"]
    clip = render(n_frames=6, size=32, n_objects=2, seed=3, fps=5).write(tmp_path / "clip.mp4")
    spec = run_spec(store, world["folder"], input={"video": str(clip)}, threshold=0.5)
    result = predict.run(spec)
    assert result["images"] == 6 and result["progress"]["done"] == 6 and result["resumed"] == 0
    manifest = load_manifest(store, "pred", result["digest"])
    assert [im.file_name for im in manifest.images] == [f"clip/frame_{i:06d}.png" for i in range(6)]
    for im in manifest.images:  # each frame stored as the PNG the model saw
        with Image.open(io.BytesIO(store.get_blob(im.blob))) as frame:
            assert frame.format == "PNG" and frame.size == (32, 32)
    lines = [json.loads(t) for k in store.list(f"{spec.output_prefix}/parts/")
             for t in store.get_bytes(k).decode().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    assert [round(line["timestamp"], 3) for line in lines] == [round(i / 5, 3) for i in range(6)]
    source = to_dataset.read_source(store, "pred", result["digest"])
    assert source is not None and source["input"] == {"video": str(clip)} and source["parents"] == []


def test_a_cut_off_video_is_named_in_the_failure(world: dict[str, Any], tmp_path: Path) -> None:
    from kubeforge.datasets.synth_video import render

    store = world["store"]
    clip = render(n_frames=12, size=32, n_objects=2, seed=3, fps=5).write(tmp_path / "cut.mp4")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # a copy that stopped part way: its index (moov, at the end) is lost
    spec = run_spec(store, world["folder"], input={"video": str(clip)}, threshold=0.5)
    with pytest.raises(StepFailedError) as failed:
        predict.run(spec)
    assert f"{clip}: not a readable video" in str(failed.value)
    progress = store.get_json(f"{spec.output_prefix}/{layout.PROGRESS}")
    assert progress["phase"] == "Failed" and progress["done"] == 0
