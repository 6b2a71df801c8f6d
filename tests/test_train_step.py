"""The train step end to end: `kubeforge step train` in a subprocess on tiny synthetic data,
then the artifacts, the export, resume and rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from kubeforge.models.catalog import REPORTED_METRICS
from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, Store, layout
from kubeforge.testing.shapes import classification_version, shapes_version
from kubeforge.testing.train_runs import stop_after_first_epoch, train_run_spec

torch.set_num_threads(2)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("step_cache")]
KUBEFORGE = Path(sys.executable).with_name("kubeforge")
EXPECTED = [layout.CHECKPOINT_BEST, layout.CHECKPOINT_LAST, layout.ONNX_EXPORT, layout.MODEL_META,
            layout.HYPERPARAMETERS, layout.TRAIN_VAL_SPLIT, layout.RUN_SPEC, layout.PROGRESS, layout.METRICS_LOG,
            layout.EXPERIMENT_INFO]


def _detection_version(store: Store, src: Path) -> DatasetRef:
    """A shapes detection dataset put into the store directly (blobs, then the manifest)."""
    return shapes_version(store, src, n_images=24, size=96, seed=1)


def _classification_version(store: Store, src: Path) -> DatasetRef:
    return classification_version(store, src, n_per_class=10, size=64, seed=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    root = tmp_path_factory.mktemp("train")
    return LocalStore(root / "store")


def _run_spec(store: LocalStore, ref: DatasetRef, name: str, job: dict[str, Any]) -> TrainRun:
    return train_run_spec(store, ref, name, job)


def _step(spec: TrainRun, tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    spec_path, result_path = tmp / f"{spec.name}.json", tmp / f"{spec.name}.result.json"
    spec_path.write_text(spec.model_dump_json())
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(KUBEFORGE), "step", "train", "--spec", str(spec_path), "--result", str(result_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    return proc, json.loads(result_path.read_text()) if result_path.exists() else None


def _check_experiment(store: LocalStore, spec: TrainRun, result: dict[str, Any], epochs: int) -> ModelMeta:
    prefix = spec.experiment_prefix
    paths = {rel: Path(store.url(f"{prefix}/{rel}")) for rel in EXPECTED}
    missing = [rel for rel, p in paths.items() if not p.is_file()]
    assert not missing, f"missing artifacts {missing}"
    info = json.loads(paths[layout.EXPERIMENT_INFO].read_text())
    assert info["status"] == "Succeeded" and info["result"] == result
    for key in info["artifacts"].values():
        assert store.exists(key), key
    # experiment_info.json is written last: nothing in the experiment is newer.
    newest = max(Path(store.url(k)).stat().st_mtime_ns for k in store.list(prefix + "/"))
    assert paths[layout.EXPERIMENT_INFO].stat().st_mtime_ns == newest
    progress = json.loads(paths[layout.PROGRESS].read_text())
    assert (progress["epoch"], progress["epochs"], progress["phase"]) == (epochs, epochs, "Succeeded")
    lines = paths[layout.METRICS_LOG].read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, epochs + 1))
    run_spec = json.loads(paths[layout.RUN_SPEC].read_text())
    assert run_spec["versions"]["torch"] == torch.__version__ and run_spec["datasetDigest"] == spec.dataset.digest
    assert TrainRun.model_validate(run_spec["runSpec"]) == spec  # enough to replay
    assert result["progress"]["epoch"] == epochs and result["datasetDigest"] == spec.dataset.digest
    assert result["onnxParityMaxAbsDiff"] < 1e-3
    assert result["bestMetric"]["epoch"] in range(1, epochs + 1)
    # What the task reports is what validationMetric may pick (the API refuses anything else).
    assert {k for k in result["metrics"] if k.startswith("val_")} == set(REPORTED_METRICS[spec.spec.task])

    meta = ModelMeta.model_validate_json(paths[layout.MODEL_META].read_text())
    session = ort.InferenceSession(str(paths[layout.ONNX_EXPORT]), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == meta.input.name
    assert [d if isinstance(d, int) else -1 for d in inp.shape] == meta.input.shape
    assert [o.name for o in session.get_outputs()] == [o.name for o in meta.outputs]
    batch = 1 if meta.input.shape[0] == 1 else 3
    outs = session.run(None, {inp.name: np.random.default_rng(0).random((batch, *meta.input.shape[1:]),
                                                                        dtype=np.float32)})
    for spec_out, arr in zip(meta.outputs, outs, strict=True):
        assert arr.ndim == len(spec_out.shape) and str(arr.dtype) == spec_out.dtype
        assert all(s in (-1, a) for s, a in zip(spec_out.shape, arr.shape, strict=True))

    ckpt = torch.load(paths[layout.CHECKPOINT_LAST], weights_only=True)
    assert ckpt["epoch"] == epochs and ckpt["classes"] == meta.classes
    assert set(ckpt) >= {"model", "optimizer", "lr_scheduler", "args", "best"}
    return meta


def test_classification_step_end_to_end(store: LocalStore, tmp_path: Path) -> None:
    ref = _classification_version(store, tmp_path / "src")
    spec = _run_spec(store, ref, "cls", {
        "datasetVersion": "shapes-cls-v1", "task": "classification", "model": {"name": "resnet18"},
        "classes": ["triangle", "circle"],
        "hyperparameters": {"epochs": 2, "batchSize": 8, "scheduler": {"type": "cosine", "warmupIterations": 2}},
    })
    proc, result = _step(spec, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result is not None and result["bestMetric"]["name"] == "val_accuracy"
    meta = _check_experiment(store, spec, result, epochs=2)
    assert meta.classes == ["triangle", "circle"] and meta.outputs[0].shape == [-1, 2]
    assert meta.input.dynamic_batch and meta.input.height == 64

    # Rerun with the same spec: the recorded result, nothing retrained or rewritten.
    info_path = Path(store.url(f"{spec.experiment_prefix}/{layout.EXPERIMENT_INFO}"))
    before = info_path.stat().st_mtime_ns
    proc2, result2 = _step(spec, tmp_path)
    assert proc2.returncode == 0 and result2 == result and info_path.stat().st_mtime_ns == before

    # A run interrupted after its last epoch (info and export lost) resumes instead of retraining.
    info_path.unlink()
    store.delete(f"{spec.experiment_prefix}/{layout.ONNX_EXPORT}")
    resumed = train.run(spec)
    info = json.loads(info_path.read_text())
    assert info["resumed"] is True and info["epochsRun"] == 0
    assert resumed["bestMetric"] == result["bestMetric"] and store.exists(f"{spec.experiment_prefix}/export/model.onnx")


def test_detection_step_end_to_end(store: LocalStore, tmp_path: Path) -> None:
    ref = _detection_version(store, tmp_path / "src")
    spec = _run_spec(store, ref, "det", {
        "datasetVersion": "shapes-v1", "task": "object-detection",
        "model": {"name": "ssdlite320_mobilenet_v3_large", "imageSize": 96},
        "hyperparameters": {"epochs": 2, "batchSize": 4, "checkpointEvery": 1,
                            "scheduler": {"type": "step", "stepSize": 1, "warmupIterations": 3}},
    })
    proc, result = _step(spec, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result is not None and result["bestMetric"]["name"] == "val_AP"
    meta = _check_experiment(store, spec, result, epochs=2)
    assert meta.classes == ["circle", "square", "triangle"] and meta.input.shape == [1, 3, 96, 96]
    for epoch in (1, 2):
        assert store.exists(f"{spec.experiment_prefix}/checkpoints/epoch_{epoch:04d}.pt")
    parity = store.get_json(f"{spec.experiment_prefix}/{layout.EXPERIMENT_INFO}")["onnxParity"]
    # An untrained detector has many near-tie low scores; only the tail may differ between runtimes.
    assert parity["images"] == 3 and parity["matched"] > 0
    assert parity["unmatched"] <= 0.1 * (parity["matched"] + parity["unmatched"]), parity


def test_resume_continues_after_the_checkpointed_epoch(store: LocalStore, tmp_path: Path) -> None:
    """Kill-and-restart, in process: a run whose store holds only epoch 1 trains epoch 2 only."""
    ref = _classification_version(store, tmp_path / "src")
    spec = _run_spec(store, ref, "cls-resume", {
        "datasetVersion": "shapes-cls-v1", "task": "classification", "model": {"name": "mobilenet_v3_small"},
        "hyperparameters": {"epochs": 2, "batchSize": 8, "checkpointEvery": 1},
    })
    full = train.run(spec)
    prefix = spec.experiment_prefix
    # Roll the experiment back to "stopped after epoch 1".
    first = stop_after_first_epoch(store, prefix)
    again = train.run(spec)
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["resumed"] is True and info["epochsRun"] == 1
    relog = store.get_bytes(f"{prefix}/{layout.METRICS_LOG}").decode().splitlines()
    assert [json.loads(x)["epoch"] for x in relog] == [1, 2] and relog[0] == first
    # Same batches, flips and optimizer state: epoch 2 retrained gives epoch 2's numbers again.
    assert again["metrics"]["train_loss"] == pytest.approx(full["metrics"]["train_loss"], rel=1e-3)
    assert torch.load(Path(store.url(f"{prefix}/{layout.CHECKPOINT_LAST}")), weights_only=True)["epoch"] == 2


def test_bad_specs_fail_naming_the_field(store: LocalStore, tmp_path: Path) -> None:
    ref = _classification_version(store, tmp_path / "src")
    base = {"datasetVersion": "v1", "task": "classification", "model": {"name": "resnet18"}}
    with pytest.raises(ValueError, match=r"hyperparameters\.optimizer\.momentum"):
        train.run(_run_spec(store, ref, "bad-hp", {**base, "hyperparameters": {
            "optimizer": {"type": "AdamW", "momentum": 0.5}}}))
    with pytest.raises(ValueError, match=r"spec\.classes.*hexagon"):
        train.run(_run_spec(store, ref, "bad-classes", {**base, "classes": ["hexagon"]}))
    with pytest.raises(ValueError, match=r"spec\.task"):
        train.run(_run_spec(store, ref, "bad-task", {**base, "task": "object-detection",
                                                      "model": {"name": "ssdlite320_mobilenet_v3_large"}}))
    # An unknown model never reaches a step: the run spec (like every manifest) refuses it.
    with pytest.raises(ValueError, match=r"spec\.model\.name: no torchvision model 'resnet9000'.*resnet18"):
        _run_spec(store, ref, "bad-model", {**base, "model": {"name": "resnet9000"}})
