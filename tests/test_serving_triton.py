"""The real tritonserver (nvidia-pytriton's, Python backend running ONNX Runtime) on tiny exports.

One server per model per module: each start takes ~2 s of a shared 2-core machine.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from PIL import Image

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import to_input
from kubeforge.serving import client
from kubeforge.serving.triton_server import TritonError, TritonProcess, is_running, start_triton, stop_triton
from kubeforge.testing.triton_serving import build_repo, served

pytestmark = pytest.mark.triton



@pytest.fixture(scope="module")
def classifier_server(tiny_classifier: tuple[Path, ModelMeta], triton_backend_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    onnx, meta = tiny_classifier
    work = tmp_path_factory.mktemp("triton-cls")
    # A long queue delay makes the dynamic batcher certain to merge concurrent requests.
    runtime = RuntimeSpec(max_batch_size=8, dynamic_batching=True, max_queue_delay_microseconds=50_000)
    with served(work, onnx, meta, "colours", runtime, triton_backend_dir) as proc:
        yield proc


@pytest.fixture(scope="module")
def detector_server(tiny_detector: tuple[Path, ModelMeta], triton_backend_dir: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    onnx, meta = tiny_detector
    work = tmp_path_factory.mktemp("triton-det")
    repo = build_repo(work / "serving", onnx, meta, "grid", RuntimeSpec(max_batch_size=8))
    proc = start_triton(str(repo), "grid", work / "triton.log", backend_dir=triton_backend_dir)
    yield proc
    stop_triton(proc.pid)


def infer(proc: TritonProcess, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    conn = httpclient.InferenceServerClient(proc.http_url.removeprefix("http://"))
    inp = httpclient.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = conn.infer(proc.model_name, [inp])
    return {name: result.as_numpy(name) for name in outputs}


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_classifier_outputs_equal_onnx_runtime(classifier_server: TritonProcess,
                                               tiny_classifier: tuple[Path, ModelMeta]) -> None:
    session = ort.InferenceSession(str(tiny_classifier[0]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    want = session.run(None, {"images": x})[0]
    got = infer(classifier_server, x, ["logits"])["logits"]
    assert got.shape == want.shape == (3, 3)
    assert np.abs(got - want).max() <= 1e-5


def metric(proc: TritonProcess, name: str) -> float:
    text = urllib.request.urlopen(proc.metrics_url, timeout=5).read().decode()
    found = re.search(rf'^{name}{{model="{proc.model_name}".*}} (\S+)$', text, re.M)
    assert found, f"{name} not in Triton's metrics"
    return float(found.group(1))


def test_dynamic_batching_returns_each_request_its_own_result(classifier_server: TritonProcess,
                                                              tiny_classifier: tuple[Path, ModelMeta]) -> None:
    session = ort.InferenceSession(str(tiny_classifier[0]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    inputs = [rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(12)]
    requests_before = metric(classifier_server, "nv_inference_request_success")
    executions_before = metric(classifier_server, "nv_inference_exec_count")
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda x: infer(classifier_server, x, ["logits"])["logits"], inputs))
    for x, got in zip(inputs, results, strict=True):
        want = session.run(None, {"images": x})[0]
        assert np.abs(got - want).max() <= 1e-5
    requests = metric(classifier_server, "nv_inference_request_success") - requests_before
    executions = metric(classifier_server, "nv_inference_exec_count") - executions_before
    assert requests == 12
    assert executions < requests, "the dynamic batcher never merged concurrent requests"


def test_detector_outputs_equal_onnx_runtime_with_a_varying_count(detector_server: TritonProcess,
                                                                  tiny_detector: tuple[Path, ModelMeta]) -> None:
    session = ort.InferenceSession(str(tiny_detector[0]), providers=["CPUExecutionProvider"])
    names = ["boxes", "scores", "labels"]
    counts = []
    for seed, dim in [(3, 1.0), (4, 0.4)]:  # dim=0.4: no cell reaches the 0.5 score, so N = 0
        x = np.random.default_rng(seed).random((1, 3, 32, 32), dtype=np.float32) * dim
        want = dict(zip(names, session.run(names, {"images": x}), strict=True))
        got = infer(detector_server, x, names)
        for name in names:
            assert got[name].shape == want[name].shape, name
            assert got[name].dtype == want[name].dtype, name
            assert np.abs(got[name].astype(np.float64) - want[name]).max(initial=0) <= 1e-5, name
        counts.append(len(want["scores"]))
    assert counts[0] > 0 and counts[1] == 0


def test_predict_images_classifies_and_scales_detections(classifier_server: TritonProcess,
                                                         detector_server: TritonProcess,
                                                         tiny_classifier: tuple[Path, ModelMeta],
                                                         tiny_detector: tuple[Path, ModelMeta]) -> None:
    preds = client.predict_images(classifier_server.http_url, "colours", tiny_classifier[1],
                                  [solid((230, 10, 10)), solid((10, 10, 230)), solid((10, 200, 20))], top_k=2)
    assert [p.classes[0].class_name for p in preds] == ["red", "blue", "green"]
    assert all(len(p.classes) == 2 and p.classes[0].probability > 0.9 for p in preds)

    # A 64x96 image, bright red in its top-left quarter only: 2x2 of the 4x4 grid cells.
    image = Image.new("RGB", (64, 96), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 32, 48))
    [pred] = client.predict_images(detector_server.http_url, "grid", tiny_detector[1], [image], threshold=0.5)
    assert {d.class_name for d in pred.detections} == {"red"}
    boxes = np.array([d.box for d in pred.detections])
    # Cells are 8x8 input pixels; the image is 2x wide and 3x tall of the 32x32 input.
    assert boxes.min(axis=0).tolist()[:2] == [0.0, 0.0]
    assert boxes.max(axis=0).tolist()[2:] == [32.0, 48.0]
    assert len(pred.detections) == 4


def test_predict_cli_prints_the_expected_class(classifier_server: TritonProcess, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    path = tmp_path / "green-thing.png"
    solid((0, 220, 0)).save(path)
    runner = CliRunner()
    table = runner.invoke(app, ["predict", "colours", str(path), "--url", classifier_server.http_url])
    assert table.exit_code == 0, table.output
    assert "green-thing.png" in table.output
    first_row = next(line for line in table.output.splitlines() if "green-thing.png" in line)
    assert "green" in first_row.replace("green-thing.png", "")

    as_json = runner.invoke(app, ["predict", "colours", str(path), "--url", classifier_server.http_url,
                                  "--json", "--top-k", "1"])
    assert as_json.exit_code == 0, as_json.output
    [pred] = json.loads(as_json.output)
    assert [c["class_name"] for c in pred["classes"]] == ["green"]


def test_predict_cli_names_a_model_the_server_does_not_have(classifier_server: TritonProcess,
                                                            tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    path = tmp_path / "x.png"
    solid((1, 2, 3)).save(path)
    result = CliRunner().invoke(app, ["predict", "nosuch", str(path), "--url", classifier_server.http_url])
    assert result.exit_code == 1
    assert "nosuch" in result.output


def test_broken_model_fails_fast_with_the_log_tail(tiny_classifier: tuple[Path, ModelMeta], tmp_path: Path,
                                                   triton_backend_dir: Path) -> None:
    repo = build_repo(tmp_path / "serving", tiny_classifier[0], tiny_classifier[1], "broken", RuntimeSpec())
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an ONNX graph")
    with pytest.raises(TritonError) as err:
        start_triton(str(repo), "broken", tmp_path / "triton.log", ready_timeout=60,
                     backend_dir=triton_backend_dir)
    message = str(err.value)
    assert "'broken'" in message and "exited with code" in message
    # Triton's reason, from the log tail: the ONNX parse error inside model.py's initialize.
    assert "load failed for model 'broken'" in message and "INVALID_PROTOBUF" in message


def test_a_port_clash_is_retried_on_new_ports(tiny_classifier: tuple[Path, ModelMeta], tmp_path: Path,
                                             triton_backend_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What failed in CI: two picks coincided and tritonserver refused to start. Here the first
    # pick gives HTTP and gRPC the same port on purpose; the second is the real one.
    from kubeforge.serving import triton_server
    real = triton_server.free_ports
    picks: list[list[int]] = []

    def clashing(count: int) -> list[int]:
        ports = real(count)
        if not picks:
            ports[1] = ports[0]
        picks.append(ports)
        return ports

    monkeypatch.setattr(triton_server, "free_ports", clashing)
    repo = build_repo(tmp_path / "serving", tiny_classifier[0], tiny_classifier[1], "retried", RuntimeSpec())
    proc = start_triton(str(repo), "retried", tmp_path / "triton.log", ready_timeout=120,
                        backend_dir=triton_backend_dir)
    try:
        assert len(picks) == 2
        assert proc.http_url.endswith(f":{picks[1][0]}")
        assert "cannot listen to HTTP requests and GRPC requests" in (tmp_path / "triton.log").read_text()
        with urllib.request.urlopen(f"{proc.http_url}/v2/models/retried/ready", timeout=5) as resp:
            assert resp.status == 200
    finally:
        stop_triton(proc.pid, timeout=15)


def test_stop_ends_the_process(detector_server: TritonProcess) -> None:
    # Last in the module on purpose: the fixture's own stop is then a no-op.
    assert is_running(detector_server.pid)
    killed = stop_triton(detector_server.pid, timeout=15)
    assert killed is False, "SIGINT should have been enough"
    assert not is_running(detector_server.pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{detector_server.http_url}/v2/health/live", timeout=2)


def test_to_input_matches_what_the_server_gets(tiny_classifier: tuple[Path, ModelMeta]) -> None:
    # The client preprocesses with the shared `to_input`; guard its contract (float32 CHW in [0, 1]).
    x = to_input(solid((255, 0, 0)), tiny_classifier[1])
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert float(x[0].min()) == 1.0 and float(x[1:].max()) == 0.0
