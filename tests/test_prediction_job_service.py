"""A PredictionJob through an InferenceService in local mode (`kubeforge run -f`): a tiny classifier trained for
one epoch and served by the real tritonserver; the PredictionJob predicts through its endpoint. The server is
stopped in the middle of the run (once the step's first part of predictions is in the store): the run fails
naming the endpoint, with the predictions made kept; `kubeforge run` again serves the model again (another
port) and the same run continues from them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kubeforge.datasets.versions import load_manifest
from kubeforge.store import layout, open_store
from kubeforge.testing.cli import get_json, kubeforge
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.local_world import classifiers, local_world

pytestmark = [pytest.mark.slow, pytest.mark.triton]

IMAGES = 1500  # enough that the server can be stopped after the first part (64 predictions) and before the end

JOBS = classifiers(("clf", "resnet18")) + """---
apiVersion: kubeforge.io/v1alpha1
kind: InferenceService
metadata: {name: clf}
spec:
  model: {trainingJob: clf}
  runtime: {maxBatchSize: 8}
"""

PREDICT = """
apiVersion: kubeforge.io/v1alpha1
kind: PredictionJob
metadata: {name: pred-svc}
spec:
  model: {inferenceService: clf}
  input: {source: {uri: folder}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with local_world(tmp_path_factory.mktemp("predict-service"), images=4, stop="clf") as (work, env):
        folder = work / "folder"
        folder.mkdir()
        sources = [Image.open(p).convert("RGB") for p in sorted((work / "data").rglob("*.png"))]
        for i in range(IMAGES):  # distinct bytes per file (a pixel holds its index): every image its own blob
            img = sources[i % len(sources)].copy()
            img.putpixel((0, 0), (i % 256, i // 256, 7))
            img.save(folder / f"img{i:05d}.png")
        (work / "jobs.yaml").write_text(JOBS)
        (work / "predict.yaml").write_text(PREDICT)
        yield work, env


def files(work: Path) -> list[str]:
    return ["-f", str(work / "jobs.yaml"), "-f", str(work / "predict.yaml")]


def test_the_service_going_away_fails_the_run_and_a_rerun_continues(world: Any) -> None:
    work, env = world
    kubeforge("run", "-f", str(work / "jobs.yaml"), env=env)  # trained and served
    service = get_json("inferenceservice", "clf", env)["status"]
    assert service["ready"] is True and service["pid"]
    store = open_store((work / "store").as_uri())
    parts = f"{layout.prediction_prefix('default', 'pred-svc')}/runs/"

    proc = subprocess.Popen([sys.executable, "-m", "kubeforge.cli.main", "run", *files(work)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def first_part() -> bool:
            assert proc.poll() is None, f"kubeforge run ended before any part was written: {proc.communicate()}"
            return any("/parts/" in key for key in store.list(parts))

        KubeClient.wait_for(first_part, timeout=300, interval=0.02, message="the first part of predictions")
        # The service goes away mid-run, as a crashed server or a deleted pod does: killed, with its Python
        # backend stubs (a graceful SIGINT would let Triton answer the requests still coming).
        os.killpg(service["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    failed = get_json("predictionjob", "pred-svc", env)["status"]
    assert failed["phase"] == "Failed", failed
    assert f"InferenceService clf ({service['url']})" in failed["message"], failed  # the endpoint, named
    kept = failed["progress"]["done"]
    assert 0 < kept < IMAGES and f"{kept} predictions kept at" in failed["message"]
    assert failed["inferenceService"] == "clf" and failed["model"].startswith("InferenceService/clf")

    # The service is back (kubeforge run starts it again); the same run continues from what was kept.
    kubeforge("run", *files(work), env=env)
    status = get_json("predictionjob", "pred-svc", env)["status"]
    assert status["phase"] == "Succeeded" and status["resumed"] == kept, status
    assert status["images"] == status["predictions"] == IMAGES and len(status["runs"]) == 1
    again = get_json("inferenceservice", "clf", env)["status"]
    assert again["pid"] != service["pid"] and again["ready"] is True
    manifest = load_manifest(store, "pred-svc", status["digest"])
    assert [im.file_name for im in manifest.images] == [f"img{i:05d}.png" for i in range(IMAGES)]
    assert all(im.category_id is not None for im in manifest.images)
