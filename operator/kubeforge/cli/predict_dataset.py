"""`kubeforge predict SERVICE PATH --format dataset --output NAME`: the predictions as a new DatasetVersion.

The command runs the PredictionJob's own step (`kubeforge.steps.predict`) in this process, on the run spec
the shared core builds for a PredictionJob named NAME with this model and input
(`core.resolve.service_of`, `steps.runs.predict_run`): so the version, its score tags and its
`predictions.json` (model, TrainingJob run, threshold and its source, parent) are written by the one code
that writes them, and an interrupted command run again with the same arguments continues where it stopped,
as a PredictionJob's rerun does. The step's run records `caller: kubeforge predict`, so the record names the
command, not a PredictionJob.

A PATH here is one folder or S3 prefix (no parent), one video (its frames), or `dataset:VERSION`: a stored
version (VERSION as every `kubeforge datasets` command reads it: a DatasetVersion name or dataset@digest),
recorded as the new version's parent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeforge.api.common import DNS_LABEL_PATTERN

DATASET_PREFIX = "dataset:"


class DatasetOutputError(ValueError):
    """The arguments cannot make a version (the message names the flag or PATH)."""


@dataclass(frozen=True)
class Input:
    spec: dict[str, Any]  # PredictionJob spec.input
    dataset: Any = None  # the input version (steps.spec.DatasetRef), its parent
    store: str | None = None  # the store the input version is in


def parse_input(paths: list[str], namespace: str) -> Input:
    """The one PATH of a version -> a PredictionJob input."""
    from kubeforge.predict.sources import is_image, is_video_path

    if len(paths) != 1:
        raise DatasetOutputError(f"--format dataset: one PATH makes one version; got {len(paths)} (give the folder "
                                 "that holds them, or dataset:VERSION)")
    raw = paths[0]
    if raw.startswith(DATASET_PREFIX) and not Path(raw).exists():
        return _version_input(raw.removeprefix(DATASET_PREFIX), namespace)
    if raw.startswith("s3://"):
        return Input({"source": {"uri": raw}})
    path = Path(raw)
    if path.is_dir():
        return Input({"source": {"uri": str(path.resolve())}})
    if not path.exists():
        raise DatasetOutputError(f"{raw}: no such file or folder (a version is made of a folder, an S3 prefix, a "
                                 f"video or {DATASET_PREFIX}VERSION)")
    if is_video_path(raw):
        return Input({"video": str(path.resolve())})
    what = "an image" if is_image(raw) else "a file"
    raise DatasetOutputError(f"{raw}: {what}; --format dataset takes a folder of images (the folder it is in will "
                             f"do), an S3 prefix, a video or {DATASET_PREFIX}VERSION")


def _version_input(ref: str, namespace: str) -> Input:
    from kubeforge.cli.version_ref import resolve_version
    from kubeforge.steps.spec import DatasetRef

    if not ref:
        raise DatasetOutputError(f"{DATASET_PREFIX}: expected {DATASET_PREFIX}VERSION (a DatasetVersion name, or "
                                 "dataset@digest)")
    found = resolve_version(ref, namespace=namespace)  # VersionRefError (a ValueError) names the candidates
    name = None if "@" in ref else ref  # a DatasetVersion's name, recorded with the parent
    return Input({"datasetVersion": ref}, DatasetRef(dataset=found.dataset, digest=found.digest, name=name),
                 found.store.uri)


def predict_run(service: str, namespace: str, output: str, given: Input, threshold: float | None,
                skip_errors: bool) -> Any:
    """The step's run spec: the PredictionJob NAME would have this one (same model, input, threshold)."""
    from kubeforge.api import PredictionJob
    from kubeforge.api.references import WAITING_FOR_SERVICE, Reference
    from kubeforge.cli.predict import ServiceNotFoundError
    from kubeforge.core.resolve import WAITING_MARK, Waiting, service_of
    from kubeforge.local.state import StateDir, StateError, resolve_state_dir, service_endpoint
    from kubeforge.steps import runs
    from kubeforge.steps.spec import CLI_CALLER
    from kubeforge.store import open_store

    if not re.match(DNS_LABEL_PATTERN, output):
        raise DatasetOutputError(f"--output {output!r}: a dataset name is lowercase letters, digits and '-' "
                                 "(at most 63, starting and ending with a letter or digit)")
    try:
        store = service_endpoint(service, namespace).store_uri  # where its model is: the run's store
        record = StateDir(resolve_state_dir()).get("InferenceService", namespace, service)
    except StateError as exc:
        raise ServiceNotFoundError(str(exc)) from None
    try:
        model = service_of(Reference("predict", "SERVICE", "InferenceService", service, WAITING_FOR_SERVICE),
                           record.resource, f"predict {service}")
    except Waiting as exc:
        raise ServiceNotFoundError(exc.message.split(WAITING_MARK)[0]) from None
    if given.store is not None and open_store(given.store).uri != open_store(store).uri:
        raise DatasetOutputError(f"the input version is in {given.store}, but InferenceService {service}'s model "
                                 f"and its predictions are in {store}; a version's parent must be in its store")
    job = PredictionJob.model_validate({
        "metadata": {"name": output, "namespace": namespace},
        "spec": {"model": {"inferenceService": service}, "input": given.spec, "threshold": threshold,
                 "output": {"dataset": output}, "onInvalidImage": "Skip" if skip_errors else "Fail"}})
    run = runs.predict_run(job, store, model, given.dataset)
    run.caller = CLI_CALLER
    return run


def to_dataset(service: str, paths: list[str], output: str | None, namespace: str, threshold: float | None,
               skip_errors: bool, echo: Any) -> None:
    """Predict and write the version; errors raise (DatasetOutputError, ServiceNotFoundError, StepFailedError)."""
    from kubeforge.steps import predict as step

    if output is None:
        raise DatasetOutputError("--format dataset needs --output NAME: the dataset the predictions become a "
                                 "version of")
    run = predict_run(service, namespace, output, parse_input(paths, namespace), threshold, skip_errors)
    result = step.run(run)
    parent = ", ".join(f"{p['dataset']}@{p['digest'][:12]}" for p in result["parents"]) or "none"
    rate = result["progress"].get("imagesPerSecond")
    echo(f"{result['images']} images, {result['predictions']} predictions, {len(result['skipped'])} skipped"
         + (f" ({rate:g} images/s)" if rate else "") + f"; threshold {result['threshold']:g} "
         f"({result['thresholdSource']}); parent: {parent}")
    echo(f"wrote: {result['dataset']}@{result['digest']}\n{result['manifestUri']}\n{result['sourceUri']}")
