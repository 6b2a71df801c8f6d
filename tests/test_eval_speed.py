"""Speed rows of the benchmark (evaluation.speed): structure, skip reasons and batching flags.

Timings are not testable for values; what is tested is that each runtime that can run the model is
timed at each batch size (a tiny classifier trained here, so torch rebuilds it from its checkpoint),
that one which cannot is skipped with its reason, and Triton through a real served model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeforge.api.benchmark import SpeedSpec
from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.steps.spec import BenchmarkModel, BenchmarkRun, BenchmarkTriton, DatasetRef
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import classification_version
from kubeforge.testing.train_runs import train_run_spec

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

ROW_KEYS = {"runtime", "batchSize", "medianMs", "p95Ms", "imagesPerSecond", "batched"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, BenchmarkModel, ModelMeta, Path, DatasetRef]:
    """A resnet18 classifier trained one epoch on 32 px shapes, with an OpenVINO IR export."""
    root = tmp_path_factory.mktemp("speed")
    store = LocalStore(root / "store")
    ref = classification_version(store, root / "src", n_per_class=8, size=32, seed=3)
    spec = train_run_spec(store, ref, "cls", {
        "datasetVersion": "shapes-cls-v1", "task": "classification",
        "model": {"name": "resnet18", "imageSize": 32}, "classes": ["triangle", "circle"],
        "export": ["onnx", "openvino"], "hyperparameters": {"epochs": 1, "batchSize": 4},
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(train.ENV_CACHE_DIR, str(tmp_path_factory.getbasetemp() / "cache"))
        train.run(spec)
    prefix = spec.experiment_prefix
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    onnx = root / "model.onnx"
    store.get_file(f"{prefix}/{layout.ONNX_EXPORT}", onnx)
    return store, BenchmarkModel(training_job="cls", experiment_prefix=prefix), meta, onnx, ref


def _check_structure(speed: dict[str, Any], spec: SpeedSpec, meta: ModelMeta) -> None:
    assert speed["inputSize"] == [meta.input.height, meta.input.width]
    assert (speed["warmup"], speed["runs"]) == (spec.warmup, spec.runs)
    assert isinstance(speed["device"], str) and speed["device"]
    for row in speed["rows"]:
        assert set(row) == ROW_KEYS
        assert row["batchSize"] in spec.batch_sizes
        assert 0 < row["medianMs"] <= row["p95Ms"]
        assert row["imagesPerSecond"] == pytest.approx(row["batchSize"] / row["medianMs"] * 1000, rel=1e-3)
    json.dumps(speed)  # metrics.json holds it as is


def test_trained_classifier_is_timed_on_torch_onnxruntime_and_openvino(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kubeforge.evaluation.speed import measure_speed

    store, ref, meta, onnx, _ = trained
    spec = SpeedSpec(batch_sizes=[1, 3], warmup=1, runs=3)
    speed = measure_speed(spec, store, ref, meta, onnx, tmp_path / "a")
    _check_structure(speed, spec, meta)
    timed = {(r["runtime"], r["batchSize"]) for r in speed["rows"]}
    assert timed == {(rt, b) for rt in ("torch", "onnxruntime", "openvino") for b in (1, 3)}
    assert all(r["batched"] for r in speed["rows"])  # a classifier's export takes a batch per call
    assert speed["skipped"] == [{"runtime": "triton", "reason": "no InferenceService named in "
                                                                "spec.speed.inferenceService"}]
    assert speed["device"].startswith("cpu (")

    # Without the IR the TrainingJob exported, OpenVINO converts the ONNX; runtimes not asked for are absent.
    store.delete(f"{ref.experiment_prefix}/{layout.OPENVINO_EXPORT}")
    only = SpeedSpec(batch_sizes=[2], warmup=0, runs=1, runtimes=["openvino"])
    speed = measure_speed(only, store, ref, meta, onnx, tmp_path / "b")
    assert [(r["runtime"], r["batchSize"]) for r in speed["rows"]] == [("openvino", 2)] and speed["skipped"] == []


def test_batch_sizes_past_the_time_budget_are_skipped_with_the_reason(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kubeforge.evaluation.speed import measure_speed

    store, ref, meta, onnx, _ = trained
    # A budget no timing fits in: every size of every runtime is skipped, each with its reason.
    spec = SpeedSpec(batch_sizes=[4, 1, 2], warmup=0, runs=2, runtimes=["onnxruntime", "openvino"],
                     max_seconds=1e-9)
    speed = measure_speed(spec, store, ref, meta, onnx, tmp_path / "c")
    assert speed["rows"] == []
    assert [(s["runtime"], s["reason"].split(":")[0]) for s in speed["skipped"]] == [
        (rt, f"batch size {b}") for rt in ("onnxruntime", "openvino") for b in (1, 2, 4)]
    assert all("spec.speed.maxSeconds" in s["reason"] for s in speed["skipped"])
    # A budget that holds: every size is timed.
    roomy = SpeedSpec(batch_sizes=[4, 1, 2], warmup=0, runs=2, runtimes=["onnxruntime"], max_seconds=600)
    speed = measure_speed(roomy, store, ref, meta, onnx, tmp_path / "d")
    assert [r["batchSize"] for r in speed["rows"]] == [1, 2, 4] and speed["skipped"] == []


def test_a_missing_checkpoint_and_unready_services_are_skipped_with_reasons(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kubeforge.evaluation.speed import measure_speed

    store, ref, meta, onnx, _ = trained
    elsewhere = BenchmarkModel(training_job="cls", experiment_prefix=ref.experiment_prefix, checkpoint="last")
    gone = BenchmarkModel(training_job="cls", experiment_prefix="experiments/nowhere")
    spec = SpeedSpec(batch_sizes=[1], warmup=0, runs=1, runtimes=["torch", "triton"], inference_service="svc")
    speed = measure_speed(spec, store, gone, meta, onnx, tmp_path / "a")
    assert speed["rows"] == []
    reasons = {s["runtime"]: s["reason"] for s in speed["skipped"]}
    assert reasons["torch"].startswith("checkpoint experiments/nowhere/checkpoints/best.pt not found")
    assert reasons["triton"] == "InferenceService svc is not ready"
    # A service that exists but is not ready, and one serving another model.
    for triton, reason in [
        (BenchmarkTriton(service="svc", ready=False, url="http://127.0.0.1:1"), "InferenceService svc is not ready"),
        (BenchmarkTriton(service="svc", ready=True, url="http://127.0.0.1:1", model_name="m",
                         experiment_prefix="experiments/other"),
         "InferenceService svc serves another model (experiments/other)"),
    ]:
        speed = measure_speed(spec, store, elsewhere, meta, onnx, tmp_path / "b", triton)
        assert [r["runtime"] for r in speed["rows"]] == ["torch"]
        assert speed["skipped"] == [{"runtime": "triton", "reason": reason}]


def test_one_image_per_call_exports_are_not_batched(tiny_detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kubeforge.evaluation.speed import measure_speed

    onnx, meta = tiny_detector
    store = LocalStore(tmp_path / "store")
    ref = BenchmarkModel(training_job="det", experiment_prefix="experiments/det")
    spec = SpeedSpec(batch_sizes=[1, 4], warmup=1, runs=2, runtimes=["onnxruntime", "torch"])
    speed = measure_speed(spec, store, ref, meta, onnx, tmp_path / "w")
    _check_structure(speed, spec, meta)
    assert [(r["runtime"], r["batchSize"], r["batched"]) for r in speed["rows"]] == [
        ("onnxruntime", 1, False), ("onnxruntime", 4, False)]
    assert [s["runtime"] for s in speed["skipped"]] == ["torch"]


@pytest.mark.triton
def test_triton_is_timed_through_the_served_model(trained, triton_backend_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kubeforge.evaluation.speed import measure_speed
    from kubeforge.testing.triton_serving import served

    store, ref, meta, onnx, _ = trained
    runtime = RuntimeSpec(max_batch_size=4, dynamic_batching=True)
    with served(tmp_path, onnx, meta, "cls", runtime, triton_backend_dir) as proc:
        triton = BenchmarkTriton(service="svc", ready=True, url=proc.http_url, model_name="cls",
                                 experiment_prefix=ref.experiment_prefix)
        spec = SpeedSpec(batch_sizes=[1, 8], warmup=1, runs=2, runtimes=["triton"], inference_service="svc")
        speed = measure_speed(spec, store, ref, meta, onnx, tmp_path / "w", triton)
    _check_structure(speed, spec, meta)
    # Batch 8 through a max batch of 4: two calls, still batched.
    assert [(r["runtime"], r["batchSize"], r["batched"]) for r in speed["rows"]] == [
        ("triton", 1, True), ("triton", 8, True)]
    assert speed["skipped"] == []


def test_the_benchmark_run_names_the_service_as_it_is_now_without_waiting() -> None:
    from kubeforge.api import parse_resource
    from kubeforge.core.resolve import build_run

    def res(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
        body = {"apiVersion": "kubeforge.io/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": "ml"},
                "spec": spec, **({"status": status} if status else {})}
        return parse_resource(body)

    prefix = "experiments/ml_shapes/clf_torchvision/runs/aaaaaa1111"
    dsv = res("DatasetVersion", "v1", {"dataset": "shapes", "source": {"uri": "s3://raw/x/", "format": "coco"}},
              {"phase": "Succeeded", "digest": "1" * 64})
    job = res("TrainingJob", "clf", {"datasetVersion": "v1", "task": "classification", "model": {"name": "resnet18"}},
              {"phase": "Succeeded", "runs": [{"id": "aaaaaa1111", "phase": "Succeeded", "outputPrefix": prefix}]})
    bench = res("Benchmark", "b", {"models": [{"trainingJob": "clf"}], "speed": {"inferenceService": "svc"}})
    ready = res("InferenceService", "svc", {"model": {"trainingJob": "clf"}},
                {"phase": "Running", "ready": True, "url": "http://10.0.0.1:8000", "modelName": "svc",
                 "experimentPrefix": prefix})
    items = {(r.kind, r.name): r for r in (dsv, job)}
    absent = build_run(bench, lambda kind, ns, name: items.get((kind, name)), "s3://b/p")
    assert absent.triton == BenchmarkTriton(service="svc")  # type: ignore[union-attr]  # no service: no wait
    items[("InferenceService", "svc")] = ready
    served_run = build_run(bench, lambda kind, ns, name: items.get((kind, name)), "s3://b/p")
    assert served_run.triton == BenchmarkTriton(service="svc", ready=True, url="http://10.0.0.1:8000",  # type: ignore[union-attr]
                                                model_name="svc", experiment_prefix=prefix)
    assert served_run.run_id == absent.run_id  # the service's state is not an input of the run id


def test_the_benchmark_step_writes_speed_unless_disabled(trained) -> None:  # type: ignore[no-untyped-def]
    from kubeforge.api.benchmark import BenchmarkSpec
    from kubeforge.steps import benchmark

    store, ref, _, _, dataset = trained
    for enabled in (True, False):
        spec = BenchmarkSpec.model_validate({"models": [{"trainingJob": "cls"}], "speed": {
            "enabled": enabled, "batchSizes": [2], "warmup": 0, "runs": 1, "runtimes": ["torch", "onnxruntime"]}})
        run = BenchmarkRun(store=store.uri, namespace="default", name=f"speed-{enabled}", spec=spec, dataset=dataset,
                           models=[ref], output_prefix=f"benchmarks/speed-{enabled}")
        benchmark.run(run)
        model = store.get_json(f"benchmarks/speed-{enabled}/metrics.json")["models"]["cls"]
        if enabled:
            assert [(r["runtime"], r["batchSize"]) for r in model["speed"]["rows"]] == [("torch", 2),
                                                                                         ("onnxruntime", 2)]
        else:
            assert "speed" not in model
