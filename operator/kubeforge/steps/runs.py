"""Run-spec constructors shared by the local runner and the operator (pure).

Both resolve a resource's references their own way (the state directory, the API
server); once resolved, the run spec and the store prefixes it writes are decided here,
once, so a Job and a local process are given the same run.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubeforge.api import Benchmark, DatasetVersion, InferenceService, TrainingJob
from kubeforge.steps.spec import (
    BenchmarkModel,
    BenchmarkRun,
    DatasetRef,
    DatasetVersionRun,
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
}


def dataset_version_run(res: DatasetVersion, store: str, parent: DatasetRef | None,
                        parents: Sequence[DatasetRef] = ()) -> DatasetVersionRun:
    """`parents`: spec.parents resolved in order (a derived version); `parent` is then the first."""
    run = DatasetVersionRun(store=store, namespace=res.namespace, name=res.name, spec=res.spec, parent=parent)
    if parents:
        run.parents = list(parents)  # assigned, so run.json (exclude_unset) carries it
    return run


def train_run(res: TrainingJob, store: str, dataset: DatasetRef, init_experiment: str | None = None) -> TrainRun:
    """`init_experiment`: the experiment prefix of `spec.model.fromTrainingJob`, when set."""
    prefix = layout.experiment_prefix(res.namespace, dataset.dataset, res.name, res.spec.model.framework)
    init = f"{init_experiment}/{layout.CHECKPOINT_BEST}" if init_experiment else None
    return TrainRun(store=store, namespace=res.namespace, name=res.name, spec=res.spec, dataset=dataset,
                    experiment_prefix=prefix, init_checkpoint=init)


def benchmark_run(res: Benchmark, store: str, dataset: DatasetRef, experiments: Sequence[str]) -> BenchmarkRun:
    """`experiments`: the experiment prefix of each of `spec.models`, in order."""
    if len(experiments) != len(res.spec.models):
        raise ValueError(f"{res.key()}: {len(res.spec.models)} models but {len(experiments)} experiments")
    models = [
        BenchmarkModel(training_job=ref.training_job, checkpoint=ref.checkpoint, experiment_prefix=exp)
        for ref, exp in zip(res.spec.models, experiments, strict=True)
    ]
    return BenchmarkRun(store=store, namespace=res.namespace, name=res.name, spec=res.spec, dataset=dataset,
                        models=models, output_prefix=layout.benchmark_prefix(res.namespace, res.name))


# Fields of an InferenceService's spec that do not change what the serve step builds: a change to
# them must not make a new serve run (a new Job, a new model hash, a Deployment rollout).
SERVE_RUN_IGNORES = frozenset({"replicas", "artifact_policy"})


def serve_run(res: InferenceService, store: str, experiment: str) -> ServeRun:
    # Re-validated from what was set (minus SERVE_RUN_IGNORES) so run.json stays `exclude_unset`-faithful.
    spec = type(res.spec).model_validate(res.spec.model_dump(exclude_unset=True, exclude=set(SERVE_RUN_IGNORES)))
    return ServeRun(store=store, namespace=res.namespace, name=res.name, spec=spec, experiment_prefix=experiment,
                    output_prefix=layout.serving_prefix(res.namespace, res.name), model_name=res.name)
