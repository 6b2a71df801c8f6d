"""Resolve a resource's references into its run spec, or say what it waits for.

`Getter` is any function returning a resource's body (or None): the Kube client in the
operator, a dict in unit tests. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubeforge import GROUP_VERSION
from kubeforge.api import Benchmark, DatasetVersion, InferenceService, Resource, TrainingJob, parse_resource
from kubeforge.api.common import Phase
from kubeforge.api.owned import data_version_name
from kubeforge.operator import status as st
from kubeforge.steps import runs
from kubeforge.steps.spec import DatasetRef, StepRun
from kubeforge.store import layout

Getter = Callable[[str, str, str], dict[str, Any] | None]  # (kind, namespace, name) -> body


class Waiting(Exception):  # a state, not an error
    """A reference is not ready yet; carries the condition reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def model_of(body: dict[str, Any]) -> Resource:
    """The API model of a body, without its status (written by us, validated elsewhere)."""
    return parse_resource({"apiVersion": body.get("apiVersion", GROUP_VERSION), "kind": body["kind"],
                           "metadata": dict(body.get("metadata") or {}), "spec": body.get("spec") or {}})


def _phase(body: dict[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


def dataset_ref(get: Getter, namespace: str, name: str, who: str) -> DatasetRef:
    body = get("DatasetVersion", namespace, name)
    digest = ((body or {}).get("status") or {}).get("digest")
    if body is None or _phase(body) != Phase.SUCCEEDED or not digest:
        state = "does not exist" if body is None else f"is {_phase(body) or 'Pending'}"
        raise Waiting(st.WAITING_FOR_DATASET_VERSION, f"{who}: DatasetVersion {name!r} {state}; waiting for Ready")
    return DatasetRef(dataset=body["spec"]["dataset"], digest=digest)


def experiment_of(get: Getter, namespace: str, name: str, who: str, reason: str) -> str:
    """The experiment prefix of a Succeeded TrainingJob."""
    body = get("TrainingJob", namespace, name)
    if body is None or _phase(body) != Phase.SUCCEEDED:
        state = "does not exist" if body is None else f"is {_phase(body) or 'Pending'}"
        raise Waiting(reason, f"{who}: TrainingJob {name!r} {state}; waiting for it to succeed")
    recorded = (body.get("status") or {}).get("outputPrefix")
    if recorded:
        return str(recorded)
    job = model_of(body)
    assert isinstance(job, TrainingJob)
    dsv = get("DatasetVersion", namespace, data_version_name(job))
    if dsv is None:
        raise Waiting(reason, f"{who}: TrainingJob {name!r} recorded no outputPrefix and its DatasetVersion is gone")
    return layout.experiment_prefix(namespace, dsv["spec"]["dataset"], name, job.spec.model.framework)


def build_run(res: Resource, get: Getter, store: str) -> StepRun:
    """The run spec of `res`, or Waiting naming the first reference that is not ready."""
    who, ns = res.key(), res.namespace
    if isinstance(res, DatasetVersion):
        if res.spec.parents:  # a derived version: every parent must be Ready; the first is `parent`
            parents = [dataset_ref(get, ns, name, who) for name in res.spec.parents]
            return runs.dataset_version_run(res, store, parents[0], parents)
        parent = dataset_ref(get, ns, res.spec.parent, who) if res.spec.parent else None
        return runs.dataset_version_run(res, store, parent)
    if isinstance(res, TrainingJob):
        # spec.source: the operator made (and owns) `<job>-data`; train on whatever it resolved to.
        dataset = dataset_ref(get, ns, data_version_name(res), who)
        base = res.spec.model.from_training_job
        init = experiment_of(get, ns, base, who, st.WAITING_FOR_MODELS) if base else None
        return runs.train_run(res, store, dataset, init)
    if isinstance(res, Benchmark):
        experiments = [experiment_of(get, ns, m.training_job, who, st.WAITING_FOR_MODELS) for m in res.spec.models]
        dsv_name = res.spec.dataset_version
        if not dsv_name:  # default: the first model's training data
            first = get("TrainingJob", ns, res.spec.models[0].training_job) or {}
            dsv_name = data_version_name(model_of(first)) if first else ""
        return runs.benchmark_run(res, store, dataset_ref(get, ns, dsv_name, who), experiments)
    if isinstance(res, InferenceService):
        experiment = experiment_of(get, ns, res.spec.model.training_job, who, st.WAITING_FOR_EXPORT)
        return runs.serve_run(res, store, experiment)
    raise TypeError(f"no step for {type(res).__name__}")


def output_prefix(run: StepRun) -> str | None:
    """The store prefix a run writes (what `artifactPolicy: Delete` removes); None for a dataset version,
    whose prefix is known from its digest only after it ran."""
    for attr in ("experiment_prefix", "output_prefix"):
        if attr == "experiment_prefix" and run.step == "serve":
            continue  # a serve run reads the experiment; it writes only its output
        value = getattr(run, attr, None)
        if value:
            return str(value)
    return None
