"""Serve from S3: the serve step writes the repository to SeaweedFS, tritonserver loads it from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kubeforge.api.inference_service import InferenceServiceSpec, RuntimeSpec, ServedModelRef
from kubeforge.models.meta import ModelMeta
from kubeforge.serving import client, triton_repo
from kubeforge.serving.triton_server import TritonError, is_running, start_triton, stop_triton
from kubeforge.steps import serve
from kubeforge.steps.spec import ServeRun
from kubeforge.store import layout

pytestmark = [pytest.mark.s3, pytest.mark.triton]

EXPERIMENT = "experiments/default_colours/colours_torch"
SERVING = "serving/default_colours"


def publish_export(store: Any, onnx: Path, meta: ModelMeta) -> None:
    """What a TrainingJob leaves behind (only the parts the serve step reads)."""
    store.put_file(f"{EXPERIMENT}/{layout.ONNX_EXPORT}", onnx)
    store.put_bytes(f"{EXPERIMENT}/{layout.MODEL_META}", meta.model_dump_json().encode())


def test_serve_step_to_s3_then_triton_loads_it_from_s3(
    s3_store: Any, seaweedfs: Any, tiny_classifier: tuple[Path, ModelMeta], triton_backend_dir: Path,
    tmp_path: Path,
) -> None:
    onnx, meta = tiny_classifier
    publish_export(s3_store, onnx, meta)
    run = ServeRun(
        store=s3_store.uri, namespace="default", name="colours", experiment_prefix=EXPERIMENT,
        output_prefix=SERVING, model_name="colours",
        spec=InferenceServiceSpec(model=ServedModelRef(training_job="colours"), runtime=RuntimeSpec(max_batch_size=4)),
    )
    result = serve.run(run)
    assert result == {"repositoryUri": s3_store.url(SERVING), "modelName": "colours"}
    assert s3_store.exists(f"{SERVING}/onnxruntime/colours/config.pbtxt")

    repository = s3_store.triton_uri(triton_repo.repository_prefix(SERVING, triton_repo.LOCAL_VARIANT))
    assert repository.startswith(f"s3://{seaweedfs.endpoint}/")
    proc = start_triton(repository, "colours", tmp_path / "triton.log", env=seaweedfs.env(),
                        backend_dir=triton_backend_dir)
    try:
        [pred] = client.predict_images(proc.http_url, "colours", client.fetch_meta(proc.http_url, "colours"),
                                       [Image.new("RGB", (20, 20), (200, 0, 0))])
        assert pred.classes[0].class_name == "red"
        assert np.isclose(sum(c.probability for c in pred.classes), 1.0)
    finally:
        stop_triton(proc.pid)
    assert not is_running(proc.pid)


def test_wrong_s3_secret_fails_without_leaking_it(seaweedfs: Any, s3_store: Any, triton_backend_dir: Path,
                                                  tmp_path: Path) -> None:
    wrong = "definitely-not-the-secret-0123456789"
    env = {**seaweedfs.env(), "AWS_SECRET_ACCESS_KEY": wrong}
    with pytest.raises(TritonError) as err:
        start_triton(s3_store.triton_uri("serving/none/python"), "none", tmp_path / "triton.log", env=env,
                     ready_timeout=60, backend_dir=triton_backend_dir)
    assert "exited with code" in str(err.value)
    assert wrong not in str(err.value) and seaweedfs.secret_key not in str(err.value)
