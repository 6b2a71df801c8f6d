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


def _export(store: Any, who: str, job: str | None, experiment_prefix: str) -> tuple[bytes, ModelMeta]:
    """A TrainingJob run's ONNX export and its meta, or ServeStepError naming what is missing."""
    onnx_key = f"{experiment_prefix}/{layout.ONNX_EXPORT}"
    meta_key = f"{experiment_prefix}/{layout.MODEL_META}"
    try:
        onnx = store.get_bytes(onnx_key)
    except KeyError:
        raise ServeStepError(
            f"{who}: TrainingJob {job!r} has no ONNX export at {store.url(onnx_key)} "
            f"(experiment prefix {experiment_prefix!r}); did it succeed with export: [onnx]?"
        ) from None
    try:
        meta = ModelMeta.model_validate_json(store.get_bytes(meta_key))
    except KeyError:
        raise ServeStepError(f"{who}: TrainingJob {job!r} has no {layout.MODEL_META} at {store.url(meta_key)}"
                             ) from None
    except ValidationError as exc:
        raise ServeStepError(f"{who}: {store.url(meta_key)} is not a valid model meta: {exc}") from None
    return onnx, meta


def _threshold(store: Any, who: str, experiment_prefix: str, namespace: str) -> float | None:
    """The default confidence threshold clients use: the F1-optimal one a Benchmark of this run found."""
    recorded = benchmark_threshold(store, experiment_prefix, namespace)
    said = recorded.describe() if recorded else (f"no Benchmark recorded a threshold for {experiment_prefix}; "
                                                 f"clients default to {DEFAULT_THRESHOLD}")
    print(f"{who}: {said}", file=sys.stderr, flush=True)
    return recorded.value if recorded else None


def run(spec: ServeRun) -> dict[str, Any]:
    store = open_store(spec.store)
    who = f"InferenceService {spec.namespace}/{spec.name}"
    job = spec.training_job or spec.spec.model.training_job
    prefix = spec.output_prefix.rstrip("/")
    if spec.versions:
        versions = spec.spec.model.versions
        models = [triton_repo.ModelVersion(v.version or 1, *_export(store, who, job, v.experiment_prefix))
                  for v in spec.versions]
        newest = max(spec.versions, key=lambda v: v.version or 1)  # what a request without a version gets
        try:
            files = triton_repo.versioned_repository_files(
                models, spec.model_name, spec.spec.runtime, latest=versions.latest if versions else None,
                threshold=_threshold(store, who, newest.experiment_prefix, spec.namespace))
        except ValueError as exc:
            raise ServeStepError(f"{who}: spec.model.versions: {exc}") from None
    else:
        onnx, meta = _export(store, who, job, spec.experiment_prefix)
        files = triton_repo.repository_files(onnx, meta, spec.model_name, spec.spec.runtime,
                                             _threshold(store, who, spec.experiment_prefix, spec.namespace))
    if spec.canary is not None:  # the canary's own repositories (its Deployment, or the local server, loads them)
        onnx, meta = _export(store, who, spec.canary.training_job, spec.canary.experiment_prefix)
        canary = triton_repo.repository_files(
            onnx, meta, spec.model_name, spec.spec.runtime,
            _threshold(store, f"{who} (canary)", spec.canary.experiment_prefix, spec.namespace))
        files.update({f"{triton_repo.CANARY_DIR}/{rel}": data for rel, data in canary.items()})
    for rel, data in files.items():  # in the order triton_repo gives: configs after what they load
        store.put_bytes(f"{prefix}/{rel}", data)
    return {"repositoryUri": store.url(prefix), "modelName": spec.model_name}
