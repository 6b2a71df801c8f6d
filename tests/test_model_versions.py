"""Several runs of one TrainingJob served as Triton versions of one model: resolution (pure), the
config's version_policy (parsed back by protobuf), and the real tritonserver loading two versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubeforge.api import parse_resource
from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.core.resolve import Waiting, build_run
from kubeforge.models.meta import ModelMeta
from kubeforge.serving import triton_repo
from kubeforge.serving.triton_server import start_triton, stop_triton

GV = "kubeforge.io/v1alpha1"


def resource(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
    return parse_resource({"apiVersion": GV, "kind": kind, "metadata": {"name": name, "namespace": "ml"},
                           "spec": spec, **({"status": status} if status else {})})


def job(*runs: tuple[str, str]) -> Any:
    return resource("TrainingJob", "clf", {"datasetVersion": "v1", "task": "classification",
                                           "model": {"name": "resnet18"}},
                    {"phase": "Succeeded", "runs": [{"id": rid, "phase": phase, "outputPrefix": f"exp/{rid}"}
                                                    for rid, phase in runs]})


def service(versions: dict[str, Any]) -> Any:
    return resource("InferenceService", "svc", {"model": {"trainingJob": "clf", "versions": versions}})


def lookup(*items: Any) -> Any:
    index = {(r.kind, r.name): r for r in items}
    return lambda kind, ns, name: index.get((kind, name))


RUNS = (("aaaaaa", "Succeeded"), ("bbbbbb", "Failed"), ("cccccc", "Succeeded"), ("dddddd", "Succeeded"))


def test_latest_numbers_versions_by_successful_run() -> None:
    run = build_run(service({"latest": 2}), lookup(job(*RUNS)), "s3://b/p")
    assert [(v.version, v.training_run) for v in run.versions] == [(2, "cccccc"), (3, "dddddd")]  # type: ignore[union-attr]
    assert run.training_run == "dddddd"  # type: ignore[union-attr]  # the highest version is "the" model


def test_pinned_runs_are_versions_in_order_and_wait_for_unfinished_runs() -> None:
    run = build_run(service({"runs": ["dddddd", "aaaaaa"]}), lookup(job(*RUNS)), "s3://b/p")
    assert [(v.version, v.experiment_prefix) for v in run.versions] == [(1, "exp/dddddd"), (2, "exp/aaaaaa")]  # type: ignore[union-attr]
    with pytest.raises(Waiting, match=r"spec\.model\.versions\.runs: run\(s\) bbbbbb .* have not succeeded"):
        build_run(service({"runs": ["aaaaaa", "bbbbbb"]}), lookup(job(*RUNS)), "s3://b/p")


def test_versions_are_refused_with_benchmark_or_a_pinned_run() -> None:
    with pytest.raises(ValueError, match="cannot go with benchmark or run"):
        resource("InferenceService", "s", {"model": {"trainingJob": "clf", "run": "aaaaaa", "versions": {"latest": 1}}})
    with pytest.raises(ValueError, match="exactly one of runs or latest"):
        service({"latest": 1, "runs": ["aaaaaa"]})


def _scaled_copy(src: Path, dst: Path, factor: float) -> Path:
    """The same network with its conv weights scaled: another 'run' whose outputs differ."""
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if arr.ndim == 4:
            init.CopyFrom(onnx.numpy_helper.from_array(arr * factor, init.name))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("latest", [None, 1])
def test_version_policy_in_config_pbtxt(tiny_classifier: tuple[Path, ModelMeta], latest: int | None) -> None:
    onnx_path, meta = tiny_classifier
    data = onnx_path.read_bytes()
    files = triton_repo.versioned_repository_files(
        [triton_repo.ModelVersion(1, data, meta), triton_repo.ModelVersion(2, data, meta)], "m", RuntimeSpec(), latest)
    assert {"python/m/1/model.onnx", "python/m/2/model.onnx", "onnxruntime/m/2/model.onnx"} <= files.keys()
    config = text_format.Parse(files["onnxruntime/m/config.pbtxt"].decode(), model_config_pb2.ModelConfig())
    if latest:
        assert config.version_policy.latest.num_versions == 1
    else:
        assert list(config.version_policy.specific.versions) == [1, 2]


def test_versions_must_share_inputs_and_outputs(tiny_classifier: tuple[Path, ModelMeta],
                                                tiny_detector: tuple[Path, ModelMeta]) -> None:
    (c, cm), (d, dm) = tiny_classifier, tiny_detector
    with pytest.raises(ValueError, match="version 1's inputs/outputs/task differ from version 2's"):
        triton_repo.versioned_repository_files([triton_repo.ModelVersion(1, c.read_bytes(), cm),
                                                triton_repo.ModelVersion(2, d.read_bytes(), dm)], "m", RuntimeSpec())


@pytest.mark.triton
def test_tritonserver_serves_two_versions(tiny_classifier: tuple[Path, ModelMeta], triton_backend_dir: Path,
                                          tmp_path: Path) -> None:
    onnx_path, meta = tiny_classifier
    second = _scaled_copy(onnx_path, tmp_path / "v2.onnx", 40.0)
    files = triton_repo.versioned_repository_files(
        [triton_repo.ModelVersion(1, onnx_path.read_bytes(), meta),
         triton_repo.ModelVersion(2, second.read_bytes(), meta)], "colours", RuntimeSpec(max_batch_size=4))
    triton_repo.write_repository(tmp_path / "serving", files)
    proc = start_triton(str(tmp_path / "serving" / triton_repo.LOCAL_VARIANT), "colours", tmp_path / "triton.log",
                        backend_dir=triton_backend_dir)
    try:
        conn = httpclient.InferenceServerClient(proc.http_url.removeprefix("http://"))
        assert conn.is_model_ready("colours", "1") and conn.is_model_ready("colours", "2")
        x = np.random.default_rng(0).random((1, 3, *meta.input.shape[2:]), dtype=np.float32)
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = {v: conn.infer("colours", [inp], model_version=v).as_numpy(meta.outputs[0].name) for v in ("1", "2")}
        for v, path in (("1", onnx_path), ("2", second)):
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            np.testing.assert_allclose(got[v], sess.run(None, {"images": x})[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(got["1"], got["2"])  # two different models answered
        default = conn.infer("colours", [inp]).as_numpy(meta.outputs[0].name)
        np.testing.assert_allclose(default, got["2"], rtol=1e-6)  # no version: the highest
    finally:
        stop_triton(proc.pid)
