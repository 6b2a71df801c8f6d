"""Run-spec constructors (pure): a resource plus what its references resolved to -> the step's run.

The shared core (`kubeforge.core.resolve`) resolves the references for both runtimes and calls
these; the run id, the store prefixes a run writes and the run spec are decided here, once, so a
Job and a local process are given the same run.

A run's id is derived from its inputs (the spec minus fields that do not change what the step
makes, and what its references produced): the same inputs are the same run (a retry resumes it,
an operator restart finds its Job), different inputs are a new run that writes under its own
prefix, so an earlier run's checkpoints, export and report are never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic.alias_generators import to_camel

from kubeforge.api import Benchmark, DatasetVersion, InferenceService, PredictionJob, TrainingJob
from kubeforge.api.common import ApiModel
from kubeforge.steps.spec import (
    BenchmarkModel,
    BenchmarkRun,
    DatasetRef,
    DatasetVersionRun,
    PredictModel,
    PredictRun,
    ServedRun,
    ServeRun,
    TrainRun,
)
from kubeforge.store import layout

# kind -> the step entrypoint (`kubeforge step NAME`) that does its work
STEP_NAMES: dict[str, str] = {
    "DatasetVersion": "dataset-version",
    "TrainingJob": "train",
    "Benchmark": "benchmark",
    "InferenceService": "serve",
    "PredictionJob": "predict",
}

# Spec fields that do not change what a step makes: changing them is not a new run.
RUN_IGNORES = frozenset({"artifact_policy", "suspend"})
# An InferenceService's replicas scale its Deployment; they do not rebuild its repository.
# Autoscaling scales it; the canary is an input of its own (`serve_run`), its traffic share only routing.
SERVE_RUN_IGNORES = RUN_IGNORES | {"replicas", "autoscaling", "canary"}
RUN_ID_LENGTH = 10


def _spec_without(spec: ApiModel, ignored: frozenset[str]) -> Any:
    """The spec re-validated from what was set, minus `ignored` (run.json stays exclude_unset-faithful)."""
    return type(spec).model_validate(spec.model_dump(exclude_unset=True, exclude=set(ignored)))


# Spec fields added after a kind was first released (path from the spec): left out of the run id while
# at their default, so an upgrade does not make every existing resource a new run (a Benchmark evaluating
# again, a service rolling). Set to anything else, they are part of it like any field.
ADDED_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Benchmark": (("bootstrap",), ("speed",), ("gate",)),
    "InferenceService": (("model", "benchmark"), ("model", "pick"), ("model", "versions")),
}


def _drop_added_defaults(kind: str, spec: ApiModel, dumped: dict[str, Any]) -> dict[str, Any]:
    for path in ADDED_FIELDS.get(kind, ()):
        owner: Any = spec
        target = dumped
        for name in path[:-1]:
            owner = getattr(owner, name)
            target = target.get(to_camel(name), {})
        field = type(owner).model_fields[path[-1]]
        if getattr(owner, path[-1]) == field.get_default(call_default_factory=True):
            target.pop(to_camel(path[-1]), None)
    return dumped


# Spec fields whose default changed after release: (path, the new default, the value it replaced). At the
# new default, the run id sees the old value, so an upgrade does not make every existing resource a new run.
# TrainingJob split.method: `auto` (dataset when the version records a split, else random) replaced
# `random`; on a version without split tags it is the old default's outcome, the same run.
FORMER_DEFAULTS: dict[str, tuple[tuple[tuple[str, ...], Any, Any], ...]] = {
    "TrainingJob": ((("split", "method"), "auto", "random"),),
}


def _former_defaults(kind: str, dumped: dict[str, Any]) -> dict[str, Any]:
    for path, new, old in FORMER_DEFAULTS.get(kind, ()):
        target = dumped
        for name in path[:-1]:
            target = target.get(to_camel(name)) or {}
        key = to_camel(path[-1])
        if isinstance(target, dict) and target.get(key) == new:
            target[key] = old
    return dumped


def run_id(kind: str, spec: ApiModel, inputs: dict[str, Any], ignored: frozenset[str] = RUN_IGNORES) -> str:
    """The id of the run of `spec` on `inputs`. Defaults are filled in, so a spec written with or
    without a default value (a cluster's API server applies CRD defaults) is the same run."""
    dumped = _drop_added_defaults(kind, spec, spec.model_dump(mode="json", by_alias=True, exclude=set(ignored)))
    dumped = _former_defaults(kind, dumped)
    canonical = json.dumps({"kind": kind, "spec": dumped, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:RUN_ID_LENGTH]


def _ref(ref: DatasetRef) -> dict[str, str]:
    return {"dataset": ref.dataset, "digest": ref.digest}


def dataset_version_run(res: DatasetVersion, store: str, parent: DatasetRef | None,
                        parents: Sequence[DatasetRef] = ()) -> DatasetVersionRun:
    """`parents`: spec.parents resolved in order (a derived version); `parent` is then the first."""
    rid = run_id(res.kind, res.spec, {"parent": _ref(parent) if parent else None,
                                      "parents": [_ref(p) for p in parents]})
    run = DatasetVersionRun(store=store, namespace=res.namespace, name=res.name, run_id=rid,
                            spec=_spec_without(res.spec, RUN_IGNORES), parent=parent)
    if parents:
        run.parents = list(parents)  # assigned, so run.json (exclude_unset) carries it
    return run


def train_run(res: TrainingJob, store: str, dataset: DatasetRef, init_experiment: str | None = None) -> TrainRun:
    """`init_experiment`: the run prefix of `spec.model.fromTrainingJob`'s latest successful run, when set."""
    rid = run_id(res.kind, res.spec, {"dataset": _ref(dataset), "init": init_experiment})
    base = layout.experiment_prefix(res.namespace, dataset.dataset, res.name, res.spec.model.framework)
    init = f"{init_experiment}/{layout.CHECKPOINT_BEST}" if init_experiment else None
    return TrainRun(store=store, namespace=res.namespace, name=res.name, run_id=rid,
                    spec=_spec_without(res.spec, RUN_IGNORES), dataset=dataset,
                    experiment_prefix=layout.run_output_prefix(base, rid), init_checkpoint=init)


def benchmark_run(res: Benchmark, store: str, dataset: DatasetRef, experiments: Sequence[str],
                  model_runs: Sequence[str | None] = ()) -> BenchmarkRun:
    """`experiments`: the run prefix of each of `spec.models`, in order; `model_runs`: their run ids (for
    the promotion gate's winner). The run id depends on the prefixes only, which name the runs already."""
    if len(experiments) != len(res.spec.models):
        raise ValueError(f"{res.key()}: {len(res.spec.models)} models but {len(experiments)} experiments")
    rid = run_id(res.kind, res.spec, {"dataset": _ref(dataset), "experiments": list(experiments)})
    models = [
        BenchmarkModel(training_job=ref.training_job, checkpoint=ref.checkpoint, experiment_prefix=exp)
        for ref, exp in zip(res.spec.models, experiments, strict=True)
    ]
    for model, model_run in zip(models, model_runs, strict=False):
        if model_run is not None:
            model.run = model_run  # assigned, so run.json (exclude_unset) carries it
    output = layout.run_output_prefix(layout.benchmark_prefix(res.namespace, res.name), rid)
    return BenchmarkRun(store=store, namespace=res.namespace, name=res.name, run_id=rid,
                        spec=_spec_without(res.spec, RUN_IGNORES), dataset=dataset, models=models,
                        output_prefix=output)


def serve_run(res: InferenceService, store: str, experiment: str, training_run: str | None,
              training_job: str | None = None, versions: Sequence[ServedRun] = (),
              canary: ServedRun | None = None) -> ServeRun:
    """`experiment`: the prefix of the served TrainingJob run `training_run`. The repository prefix is
    fixed: it is what Triton serves, rebuilt by each serve run. `training_job`: the served TrainingJob
    when the spec names a Benchmark (its promoted winner); the experiment prefix names the run, so a new
    winner is a new serve run. `versions`: spec.model.versions resolved (each run with its version);
    `canary`: spec.canary's run. Both are inputs only when present, so a plain service keeps its run id."""
    inputs: dict[str, Any] = {"experiment": experiment}
    if versions:
        inputs["versions"] = [[v.version, v.experiment_prefix] for v in versions]
    if canary is not None:
        inputs["canary"] = canary.experiment_prefix
    rid = run_id(res.kind, res.spec, inputs, SERVE_RUN_IGNORES)
    run = ServeRun(store=store, namespace=res.namespace, name=res.name, run_id=rid,
                   spec=_spec_without(res.spec, SERVE_RUN_IGNORES), experiment_prefix=experiment,
                   training_run=training_run, output_prefix=layout.serving_prefix(res.namespace, res.name),
                   model_name=res.name)
    if training_job is not None:
        run.training_job = training_job  # assigned, so run.json (exclude_unset) carries it
    if versions:
        run.versions = list(versions)
    if canary is not None:
        run.canary = canary
    return run


def predict_run(res: PredictionJob, store: str, model: PredictModel, dataset: DatasetRef | None) -> PredictRun:
    """`model`: the TrainingJob run (and the service serving it) that predicts. The run id depends on the
    model's run prefix (which names the run) and the input version's digest, not on a service's URL: a
    service restarted on another port is the same run, and a rerun continues its predictions."""
    inputs = {"experiment": model.experiment_prefix, "service": model.inference_service,
              "dataset": _ref(dataset) if dataset else None}
    rid = run_id(res.kind, res.spec, inputs)
    output = layout.run_output_prefix(layout.prediction_prefix(res.namespace, res.name), rid)
    run = PredictRun(store=store, namespace=res.namespace, name=res.name, run_id=rid,
                     spec=_spec_without(res.spec, RUN_IGNORES), model=model, output_prefix=output,
                     output_dataset=res.spec.output_dataset(res.name))
    if dataset is not None:
        run.dataset = dataset  # assigned, so run.json (exclude_unset) carries it
    return run


def output_prefix(run: Any) -> str | None:
    """The store prefix a run writes (a serve run reads an experiment and writes only its output);
    None for a dataset version, whose prefix is known from its digest only after it ran."""
    if isinstance(run, TrainRun):
        return run.experiment_prefix
    if isinstance(run, BenchmarkRun | ServeRun | PredictRun):
        return run.output_prefix
    return None
