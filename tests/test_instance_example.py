"""examples/instance-segmentation through `kubeforge run -f`, shrunk (16 generated 64 px images, one
epoch): DatasetVersion -> Mask R-CNN TrainingJob -> Benchmark (mask AP) -> InferenceService on the
real tritonserver -> `kubeforge predict --masks-dir`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from kubeforge.testing.cli import get_json, kubeforge

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "instance-segmentation"
pytestmark = [pytest.mark.slow, pytest.mark.triton]


def status(kind: str, name: str, env: dict[str, str]) -> dict[str, Any]:
    return get_json(kind, name, env)["status"]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("instance-example")
    manifests = work / "manifests"
    shutil.copytree(EXAMPLE, manifests, ignore=shutil.ignore_patterns("data"))
    train_file = manifests / "02-train.yaml"
    job = yaml.safe_load(train_file.read_text())
    job["spec"]["model"]["imageSize"] = 64
    job["spec"]["hyperparameters"].update(epochs=1, scheduler={"type": "none"})
    train_file.write_text(yaml.safe_dump(job))
    env = {**os.environ, "KUBEFORGE_STATE_DIR": str(work / "state"), "OMP_NUM_THREADS": "2"}
    env.pop("KUBEFORGE_STORE", None)
    kubeforge("datasets", "synth", "shapes", "--out", str(manifests / "data" / "shapes"), "--images", "16",
              "--size", "64", "--seed", "5", env=env)
    run = kubeforge("run", "-f", str(manifests), env=env)
    try:
        yield {"env": env, "manifests": manifests, "run": run, "work": work}
    finally:
        kubeforge("stop", "inferenceservice", "shapes-masks", env=env, check=False)


def test_the_example_trains_benchmarks_and_serves(example: dict[str, Any]) -> None:
    env = example["env"]
    tj = status("trainingjob", "shapes-masks", env)
    assert tj["phase"] == "Succeeded", tj
    assert tj["bestMetric"]["name"] == "val_mask_AP" and "val_AP" in tj["metrics"]
    bench = status("benchmark", "shapes-masks-benchmark", env)
    assert bench["phase"] == "Succeeded", bench
    headline = bench["metrics"]["shapes-masks"]
    assert {"maskAP", "maskAP50", "AP", "AP50"} <= set(headline) and 0 <= headline["maskAP"] <= 1
    assert bench["headline"].startswith("maskAP=")
    assert status("inferenceservice", "shapes-masks", env)["ready"] is True


def test_predict_writes_masks(example: dict[str, Any]) -> None:
    env = example["env"]
    sample = sorted((example["manifests"] / "data" / "shapes" / "images").iterdir())[0]
    out = example["work"] / "masks"
    result = kubeforge("predict", "shapes-masks", str(sample), "--threshold", "0.0", "--json", "--masks-dir",
                       str(out), env=env)
    [pred] = json.loads(result.stdout)
    assert pred["task"] == "instance-segmentation"
    for det in pred["detections"]:
        png = np.asarray(Image.open(det["mask_file"]))
        assert png.shape == (64, 64) and int((png > 0).sum()) == det["mask_pixels"]
    assert len(list(out.glob("*.png"))) == len(pred["detections"])
