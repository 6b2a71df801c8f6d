"""The quickstart lifecycle end to end: SeaweedFS as the store, the real tritonserver, real training.

Runs the shipped examples/quickstart manifests, shrunk (fewer images, smaller input, one
epoch) so the suite stays fast, through the real CLI as a user would. The accuracy target
of the demo configuration is checked by the demo itself and reported in the notes; here we
check that every step ran, wrote what it promised, and that Triton answers exactly what ONNX
Runtime answers on the same input.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kubeforge.testing.cli import get_json, kubeforge

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.triton]



@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory, seaweedfs: Any) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("quickstart")
    manifests = work / "manifests"
    shutil.copytree(QUICKSTART, manifests, ignore=shutil.ignore_patterns("data", "*.sh"))
    # Shrink the demo configuration: same kinds and references, tiny data.
    train_file = manifests / "02-train.yaml"
    train = yaml.safe_load(train_file.read_text())
    train["spec"]["model"]["imageSize"] = 128
    train["spec"]["hyperparameters"]["epochs"] = 1
    train["spec"]["hyperparameters"]["scheduler"]["warmupIterations"] = 2
    train_file.write_text(yaml.safe_dump(train))

    env = {**os.environ, **seaweedfs.env(), "KUBEFORGE_STATE_DIR": str(work / "state"),
           "KUBEFORGE_STORE": "s3://quickstart/e2e"}
    kubeforge("datasets", "synth", "shapes", "--out", str(manifests / "data" / "shapes"),
              "--images", "40", "--size", "128", "--seed", "3", env=env)
    first = kubeforge("run", "-f", str(manifests), env=env)
    try:
        yield {"env": env, "manifests": manifests, "first": first, "work": work}
    finally:
        kubeforge("stop", "inferenceservice", "shapes", env=env, check=False)


def test_every_resource_succeeds_and_records_its_artifacts(quickstart_run: dict[str, Any]) -> None:
    env = quickstart_run["env"]
    dsv = get_json("datasetversion", "shapes-v1", env)
    assert dsv["status"]["phase"] == "Succeeded"
    assert len(dsv["status"]["digest"]) == 64
    assert dsv["status"]["stats"]["images"] == 40
    assert dsv["status"]["manifestUri"].startswith("s3://quickstart/e2e/datasets/shapes/")

    tj = get_json("trainingjob", "shapes-detector", env)
    assert tj["status"]["phase"] == "Succeeded", tj["status"]
    assert tj["status"]["progress"]["epoch"] == 1
    assert tj["status"]["onnxParityMaxAbsDiff"] < 1e-3
    assert tj["status"]["experimentUri"].startswith("s3://quickstart/e2e/experiments/default_shapes/")

    bench = get_json("benchmark", "shapes-detector-benchmark", env)
    assert bench["status"]["phase"] == "Succeeded", bench["status"]
    assert bench["status"]["reportUri"].endswith("report.html")
    assert "AP50" in bench["status"]["metrics"]["shapes-detector"]

    isvc = get_json("inferenceservice", "shapes", env)
    assert isvc["status"]["ready"] is True
    assert isvc["status"]["url"].startswith("http://127.0.0.1:")


def test_triton_prediction_equals_onnx_runtime(quickstart_run: dict[str, Any], seaweedfs: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from kubeforge.models.meta import ModelMeta
    from kubeforge.models.preprocess import load_rgb, to_input
    from kubeforge.store import open_store

    env = quickstart_run["env"]
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    store = open_store("s3://quickstart/e2e")
    tj = get_json("trainingjob", "shapes-detector", env)
    prefix = tj["status"]["experimentUri"].removeprefix("s3://quickstart/e2e/").rstrip("/")
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/model_meta.json"))
    session = ort.InferenceSession(store.get_bytes(f"{prefix}/export/model.onnx"), providers=["CPUExecutionProvider"])

    image = quickstart_run["manifests"] / "data" / "shapes" / "images"
    sample = sorted(image.iterdir())[0]
    x = to_input(load_rgb(sample), meta)[None]
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, {meta.input.name: x}), strict=True))

    isvc = get_json("inferenceservice", "shapes", env)
    client = httpclient.InferenceServerClient(isvc["status"]["url"].removeprefix("http://"))
    inp = httpclient.InferInput(meta.input.name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(isvc["status"]["modelName"], [inp])
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got is not None, f"Triton returned no output {name!r}"
        got = got.reshape(want.shape)
        assert got.dtype == want.dtype or name == "labels"
        assert np.allclose(got, want, atol=1e-5), f"{name}: max abs diff {np.abs(got - want).max()}"


def test_predict_cli_prints_a_table(quickstart_run: dict[str, Any]) -> None:
    env = quickstart_run["env"]
    sample = sorted((quickstart_run["manifests"] / "data" / "shapes" / "images").iterdir())[0]
    out = kubeforge("predict", "shapes", str(sample), "--threshold", "0.0", env=env).stdout
    assert sample.name in out
    assert any(cls in out for cls in ("circle", "square", "triangle"))


def test_rerun_redoes_nothing(quickstart_run: dict[str, Any]) -> None:
    env = quickstart_run["env"]
    before = get_json("trainingjob", "shapes-detector", env)["status"]
    again = kubeforge("run", "-f", str(quickstart_run["manifests"]), env=env, timeout=300)
    after = get_json("trainingjob", "shapes-detector", env)["status"]
    assert after["completionTime"] == before["completionTime"]
    assert "unchanged" in again.stdout.lower()
