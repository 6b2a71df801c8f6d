"""examples/segmentation end to end through the real CLI (`kubeforge run -f`), shrunk: a file
store, 40 generated images at 64 px, one epoch. Checks every resource succeeds, the Benchmark
reports mIoU, and `kubeforge predict --masks` answers from the real tritonserver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from kubeforge.testing.cli import get_json, kubeforge

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "segmentation"

pytestmark = [pytest.mark.slow, pytest.mark.triton]



@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("segmentation")
    manifests = work / "manifests"
    shutil.copytree(EXAMPLE, manifests, ignore=shutil.ignore_patterns("data"))
    train_file = manifests / "02-train.yaml"
    docs = list(yaml.safe_load_all(train_file.read_text()))
    docs[0]["spec"]["hyperparameters"] |= {"epochs": 1, "scheduler": {"type": "cosine", "warmupIterations": 2}}
    train_file.write_text(yaml.safe_dump_all(docs))
    env = {**os.environ, "KUBEFORGE_STATE_DIR": str(work / "state"), "KUBEFORGE_STORE": f"file://{work / 'store'}",
           "OMP_NUM_THREADS": "2"}
    kubeforge("datasets", "synth", "shapes", "--out", str(manifests / "data" / "shapes"), "--images", "40",
              "--size", "64", "--seed", "3", env=env)
    kubeforge("run", "-f", str(manifests), env=env)
    try:
        yield {"env": env, "manifests": manifests, "work": work}
    finally:
        subprocess.run([sys.executable, "-m", "kubeforge.cli.main", "stop", "inferenceservice", "shapes-seg"],
                       env=env, capture_output=True, timeout=120)


def test_every_resource_succeeds(example_run: dict[str, Any]) -> None:
    env = example_run["env"]
    assert get_json("datasetversion", "shapes-masks-v1", env)["status"]["phase"] == "Succeeded"
    tj = get_json("trainingjob", "shapes-unet", env)["status"]
    assert tj["phase"] == "Succeeded", tj
    assert tj["bestMetric"]["name"] == "val_mIoU" and tj["onnxParityMaxAbsDiff"] < 1e-3
    bench = get_json("benchmark", "shapes-unet-benchmark", env)["status"]
    assert bench["phase"] == "Succeeded", bench
    assert "mIoU" in bench["metrics"]["shapes-unet"] and bench["headline"].startswith("mIoU=")
    assert get_json("inferenceservice", "shapes-seg", env)["status"]["ready"] is True


def test_predict_writes_a_mask_at_the_image_size(example_run: dict[str, Any]) -> None:
    env = example_run["env"]
    sample = sorted((example_run["manifests"] / "data" / "shapes" / "images").iterdir())[0]
    out = example_run["work"] / "masks"
    table = kubeforge("predict", "shapes-seg", str(sample), "--masks", str(out), env=env).stdout
    assert sample.name in table and "%" in table
    mask = np.asarray(Image.open(out / f"{sample.stem}.png"))
    assert mask.shape == (64, 64) and mask.dtype == np.uint8 and int(mask.max()) <= 3
