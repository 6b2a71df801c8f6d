"""examples/custom-model end to end: installed as a user installs it, run with `kubeforge run -f`.

The example package is installed with pip (`--no-deps --no-build-isolation --target`, no network:
setuptools comes with the test environment) into a temporary folder put on PYTHONPATH, so its
`kubeforge.trainers` entry point is found exactly as after `pip install` into an image, and the
test depends on nothing installed beforehand. SeaweedFS is the store, the real tritonserver serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kubeforge.testing.cli import get_json, kubeforge

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom-model"

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.triton]



def install_example(work: Path) -> Path:
    """pip-install a copy of the example (an in-tree build writes build/ and *.egg-info beside its sources)."""
    src, site = work / "src", work / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("data", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, timeout=300)
    return site


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory, seaweedfs: Any) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("custom-example")
    site = install_example(work)
    manifests = work / "manifests"
    manifests.mkdir()
    for path in sorted(EXAMPLE.glob("*.yaml")):
        shutil.copy(path, manifests / path.name)
    # Shrink the example: same kinds and references, fewer epochs.
    train_file = manifests / "02-train.yaml"
    train = yaml.safe_load(train_file.read_text())
    train["spec"]["model"]["parameters"]["epochs"] = 3
    train_file.write_text(yaml.safe_dump(train))

    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **seaweedfs.env(), "PYTHONPATH": path, "KUBEFORGE_STATE_DIR": str(work / "state"),
           "KUBEFORGE_STORE": "s3://custom/e2e"}
    kubeforge("datasets", "synth", "shapes", "--task", "classification", "--images", "16", "--size", "64",
              "--seed", "4", "--out", str(manifests / "data" / "shapes"), env=env)
    run = kubeforge("run", "-f", str(manifests), env=env)
    try:
        yield {"env": env, "manifests": manifests, "run": run}
    finally:
        subprocess.run([sys.executable, "-m", "kubeforge.cli.main", "stop", "inferenceservice", "shapes-tinycnn"],
                       env=env, capture_output=True, timeout=120)


def test_custom_training_job_succeeds_into_the_standard_layout(example_run: dict[str, Any], seaweedfs: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kubeforge.models.meta import ModelMeta
    from kubeforge.store import layout, open_store

    env = example_run["env"]
    tj = get_json("trainingjob", "shapes-tinycnn", env)
    status = tj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["epoch"] == 3 and status["progress"]["epochs"] == 3
    assert status["bestMetric"]["name"] == "val_accuracy"
    assert "/shapes-tinycnn_custom/" in status["experimentUri"]
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    store = open_store("s3://custom/e2e")
    prefix = status["experimentUri"].removeprefix("s3://custom/e2e/").rstrip("/")
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["status"] == "Succeeded" and info["epochsRun"] == 3
    # hyperparameters.yaml: the example's defaults with the TrainingJob's parameters merged over them.
    hp = yaml.safe_load(store.get_bytes(f"{prefix}/{layout.HYPERPARAMETERS}"))
    assert hp == {"epochs": 3, "batchSize": 16, "lr": 0.003, "weightDecay": 0.0005, "seed": 0}
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    assert (meta.framework, meta.architecture, meta.classes) == ("custom", "tinycnn", ["circle", "square", "triangle"])


def test_benchmark_evaluates_the_custom_model(example_run: dict[str, Any]) -> None:
    bench = get_json("benchmark", "shapes-tinycnn-eval", example_run["env"])
    assert bench["status"]["phase"] == "Succeeded", bench["status"]
    metrics = bench["status"]["metrics"]["shapes-tinycnn"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert bench["status"]["reportUri"].endswith("report.html")


def test_triton_serves_the_custom_model_as_onnx_runtime_runs_it(example_run: dict[str, Any], seaweedfs: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from kubeforge.models.meta import ModelMeta
    from kubeforge.models.preprocess import load_rgb, to_input
    from kubeforge.store import layout, open_store

    env = example_run["env"]
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    store = open_store("s3://custom/e2e")
    tj = get_json("trainingjob", "shapes-tinycnn", env)
    prefix = tj["status"]["experimentUri"].removeprefix("s3://custom/e2e/").rstrip("/")
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    session = ort.InferenceSession(store.get_bytes(f"{prefix}/{layout.ONNX_EXPORT}"),
                                   providers=["CPUExecutionProvider"])
    samples = sorted((example_run["manifests"] / "data" / "shapes").glob("*/*.png"))[:2]
    x = np.stack([to_input(load_rgb(p), meta) for p in samples])
    (want,) = session.run(["logits"], {meta.input.name: x})

    isvc = get_json("inferenceservice", "shapes-tinycnn", env)
    assert isvc["status"]["ready"] is True
    client = httpclient.InferenceServerClient(isvc["status"]["url"].removeprefix("http://"))
    inp = httpclient.InferInput(meta.input.name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(isvc["status"]["modelName"], [inp]).as_numpy("logits")
    assert got is not None and got.shape == (2, 3)
    assert np.allclose(got, want, atol=1e-5), f"max abs diff {np.abs(got - want).max()}"


def test_an_entrypoint_that_is_not_installed_fails_the_run_naming_it(example_run: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    env = example_run["env"]
    bad = yaml.safe_load((example_run["manifests"] / "02-train.yaml").read_text())
    bad["metadata"]["name"] = "shapes-missing"
    bad["spec"]["model"]["entrypoint"] = "not-installed"
    shutil.copy(example_run["manifests"] / "01-dataset.yaml", tmp_path / "01-dataset.yaml")
    shutil.copytree(example_run["manifests"] / "data", tmp_path / "data")
    (tmp_path / "02-train.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "kubeforge.cli.main", "run", "-f", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    status = get_json("trainingjob", "shapes-missing", env)["status"]
    assert status["phase"] == "Failed"
    message = " ".join(c.get("message", "") for c in status["conditions"])
    assert "spec.model.entrypoint: no trainer 'not-installed' in the 'kubeforge.trainers' entry-point group" in message
    assert "tinycnn" in message  # what is installed
