"""The serve step: write the Triton model repositories for an InferenceService.

Pure store I/O: reads the TrainingJob's `export/model.onnx` and `model_meta.json`, writes
both repository variants (`serving.triton_repo` documents the layout) under
`spec.output_prefix`, and returns the partial status. The served config records the default
confidence threshold when a Benchmark of the served run found one (`predict.threshold`). Starting a server is the local
runner's or the operator's job, never a step's.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import ValidationError

from kubeforge.models.meta import ModelMeta
from kubeforge.predict.threshold import DEFAULT_THRESHOLD, benchmark_threshold
from kubeforge.serving import triton_repo
from kubeforge.steps.spec import ServeRun
from kubeforge.store import layout, open_store


class ServeStepError(ValueError):
    """The served TrainingJob's export is missing or unusable."""


def run(spec: ServeRun) -> dict[str, Any]:
    store = open_store(spec.store)
    who = f"InferenceService {spec.namespace}/{spec.name}"
    job = spec.training_job or spec.spec.model.training_job
    onnx_key = f"{spec.experiment_prefix}/{layout.ONNX_EXPORT}"
    meta_key = f"{spec.experiment_prefix}/{layout.MODEL_META}"
    try:
        onnx = store.get_bytes(onnx_key)
    except KeyError:
        raise ServeStepError(
            f"{who}: TrainingJob {job!r} has no ONNX export at {store.url(onnx_key)} "
            f"(experiment prefix {spec.experiment_prefix!r}); did it succeed with export: [onnx]?"
        ) from None
    try:
        meta = ModelMeta.model_validate_json(store.get_bytes(meta_key))
    except KeyError:
        raise ServeStepError(f"{who}: TrainingJob {job!r} has no {layout.MODEL_META} at {store.url(meta_key)}"
                             ) from None
    except ValidationError as exc:
        raise ServeStepError(f"{who}: {store.url(meta_key)} is not a valid model meta: {exc}") from None

    # The default confidence threshold clients use: the F1-optimal one a Benchmark of this run found.
    recorded = benchmark_threshold(store, spec.experiment_prefix, spec.namespace)
    said = recorded.describe() if recorded else (f"no Benchmark recorded a threshold for {spec.experiment_prefix}; "
                                                 f"clients default to {DEFAULT_THRESHOLD}")
    print(f"{who}: {said}", file=sys.stderr, flush=True)
    files = triton_repo.repository_files(onnx, meta, spec.model_name, spec.spec.runtime,
                                         recorded.value if recorded else None)
    for rel, data in files.items():  # in the order triton_repo gives: configs after what they load
        store.put_bytes(f"{spec.output_prefix.rstrip('/')}/{rel}", data)
    return {"repositoryUri": store.url(spec.output_prefix.rstrip("/")), "modelName": spec.model_name}
