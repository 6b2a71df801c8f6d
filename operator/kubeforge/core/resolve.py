"""A resource plus a lookup of what its references produced -> its step's run spec, or why it waits.

`Lookup` is any function returning another resource of the same namespace, with its status, or
None: the local runner reads its state directory, the operator the API server. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable

from kubeforge.api import Benchmark, DatasetVersion, InferenceService, PredictionJob, Resource, TrainingJob
from kubeforge.api.benchmark import PromotedModel
from kubeforge.api.common import Phase, RunRecord
from kubeforge.api.dataset_version import PREDICTION_JOB_PARENT
from kubeforge.api.references import Reference, references
from kubeforge.steps import runs
from kubeforge.steps.spec import BenchmarkRun, BenchmarkTriton, DatasetRef, PredictModel, ServedRun, StepRun

Lookup = Callable[[str, str, str], Resource | None]  # (kind, namespace, name) -> resource with status
LEGACY_RUN_ID = "0" * 10  # the run of a resource that succeeded before run ids existed
WAITING_MARK = "; waiting for "  # in every Waiting message (the operator's logs tell waits from errors by it)


class Waiting(Exception):  # a state, not an error
    """A reference has not produced what this resource needs; carries the condition reason."""

    def __init__(self, reason: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


def _state(res: Resource | None) -> str:
    if res is None:
        return "does not exist"
    return f"is {res.status.phase if res.status else 'Pending'}"


def dataset_of(ref: Reference, target: Resource | None, who: str) -> DatasetRef:
    """What a DatasetVersion reference produced: its dataset and content digest."""
    digest = target.status.digest if isinstance(target, DatasetVersion) and target.status else None
    if not isinstance(target, DatasetVersion) or target.status is None \
            or target.status.phase != Phase.SUCCEEDED or not digest:
        raise Waiting(ref.reason, f"{who}: {ref.field}: DatasetVersion {ref.name!r} {_state(target)}; "
                                  f"waiting for it to {ref.needs}", ref.field)
    return DatasetRef(dataset=target.spec.dataset, digest=digest, name=target.name)


def predicted_of(ref: Reference, target: Resource | None, who: str) -> DatasetRef:
    """What a PredictionJob reference produced: the version of its predictions."""
    status = target.status if isinstance(target, PredictionJob) else None
    if status is None or status.phase != Phase.SUCCEEDED or not status.digest or not status.dataset:
        raise Waiting(ref.reason, f"{who}: {ref.field}: PredictionJob {ref.name!r} {_state(target)}; "
                                  f"waiting for it to {ref.needs}", ref.field)
    return DatasetRef(dataset=status.dataset, digest=status.digest, name=PREDICTION_JOB_PARENT + ref.name)


def run_of(ref: Reference, target: Resource | None, who: str) -> RunRecord:
    """What a TrainingJob reference produced: its pinned run, or its latest successful run."""
    status = target.status if isinstance(target, TrainingJob) else None
    if status is None:
        raise Waiting(ref.reason, f"{who}: {ref.field}: TrainingJob {ref.name!r} {_state(target)}; "
                                  f"waiting for it to {ref.needs}", ref.field)
    if ref.run:
        found = status.find_run(ref.run)
        if found is None or found.phase != "Succeeded" or not found.output_prefix:
            known = ", ".join(f"{r.id} ({r.phase})" for r in status.runs) or "none yet"
            state = f"is {found.phase}" if found else f"does not exist (its runs: {known})"
            raise Waiting(ref.reason, f"{who}: {ref.field}: run {ref.run!r} of TrainingJob {ref.name!r} {state}; "
                                      f"waiting for it to succeed", ref.field)
        return found
    latest = status.latest_succeeded()
    if latest is None and not status.runs and status.phase == Phase.SUCCEEDED and status.output_prefix:
        # Succeeded before runs were recorded (an upgrade): its one run is where its status says.
        latest = RunRecord(id=LEGACY_RUN_ID, phase="Succeeded", output_prefix=status.output_prefix)
    if latest is None or not latest.output_prefix:
        raise Waiting(ref.reason, f"{who}: {ref.field}: TrainingJob {ref.name!r} {_state(target)} and has no "
                                  f"successful run yet; waiting for it to {ref.needs}", ref.field)
    return latest


def promoted_of(ref: Reference, target: Resource | None, who: str) -> PromotedModel:
    """What a Benchmark reference produced: the winner of its latest run whose gate passed."""
    status = target.status if isinstance(target, Benchmark) else None
    if status is not None and status.promoted is not None:
        return status.promoted
    where = f"{who}: {ref.field}: Benchmark {ref.name!r}"
    if status is None:
        raise Waiting(ref.reason, f"{where} {_state(target)}; waiting for it to {ref.needs}", ref.field)
    gate = status.gate
    if gate is not None and not gate.passed:
        why = f"run {status.run_id}: {gate.message}" if status.run_id else gate.message
        raise Waiting(ref.reason, f"{where} has no run whose gate passed ({why}); waiting for a run whose "
                                  "gate passes", ref.field)
    raise Waiting(ref.reason, f"{where} {_state(target)} and has no run whose gate passed yet; waiting for it "
                              f"to {ref.needs}", ref.field)


def service_of(ref: Reference, target: Resource | None, who: str) -> PredictModel:
    """What an InferenceService reference produced: its endpoint and the TrainingJob run it serves."""
    status = target.status if isinstance(target, InferenceService) else None
    if status is None or not status.ready or not status.url or not status.experiment_prefix:
        state = _state(target) + (" and not Ready" if status is not None and not status.ready else "")
        raise Waiting(ref.reason, f"{who}: {ref.field}: InferenceService {ref.name!r} {state}; waiting for it to "
                                  f"{ref.needs}", ref.field)
    return PredictModel(experiment_prefix=status.experiment_prefix, training_job=status.training_job,
                        training_run=status.training_run, inference_service=ref.name, url=status.url,
                        model_name=status.model_name or ref.name)


def build_run(res: Resource, lookup: Lookup, store: str) -> StepRun:
    """The run spec of `res`, or Waiting naming the first reference that has not produced what it needs."""
    who, ns = res.key(), res.namespace

    def get(kind: str, name: str) -> Resource | None:
        return lookup(kind, ns, name)

    refs = references(res, get)
    datasets: dict[str, list[DatasetRef]] = {}
    models: dict[str, list[RunRecord]] = {}
    promoted: PromotedModel | None = None
    served: PredictModel | None = None
    for ref in refs:
        target = get(ref.kind, ref.name)
        if ref.kind == "DatasetVersion":
            datasets.setdefault(ref.role, []).append(dataset_of(ref, target, who))
        elif ref.kind == "PredictionJob":
            datasets.setdefault(ref.role, []).append(predicted_of(ref, target, who))
        elif ref.kind == "Benchmark":
            promoted = promoted_of(ref, target, who)
        elif ref.kind == "InferenceService":
            served = service_of(ref, target, who)
        else:
            models.setdefault(ref.role, []).append(run_of(ref, target, who))

    def prefix(record: RunRecord) -> str:
        assert record.output_prefix  # run_of checked it
        return record.output_prefix

    if isinstance(res, DatasetVersion):
        parents = datasets.get("parent", [])
        return runs.dataset_version_run(res, store, parents[0] if parents else None,
                                        parents if res.spec.parents else ())
    if isinstance(res, TrainingJob):
        init = models.get("init")
        return runs.train_run(res, store, datasets["dataset"][0], prefix(init[0]) if init else None)
    if isinstance(res, Benchmark):
        if "dataset" not in datasets:  # the first model is unknown, so is its data: it is what waits
            first = res.spec.models[0].training_job
            raise Waiting(refs[0].reason, f"{who}: spec.models[0].trainingJob: TrainingJob {first!r} does not "
                                          "exist (its training data is what this Benchmark evaluates on); "
                                          "waiting for it to exist",
                          "spec.models[0].trainingJob")
        run = runs.benchmark_run(res, store, datasets["dataset"][0], [prefix(r) for r in models["model"]],
                                 [r.id for r in models["model"]])
        return _with_triton(run, res, get)
    if isinstance(res, InferenceService):
        canary = models.get("canary")
        extra = {"canary": ServedRun(training_run=canary[0].id, experiment_prefix=prefix(canary[0]),
                                     training_job=res.spec.canary.model.training_job)
                 } if canary and res.spec.canary else {}
        if promoted is not None:
            return runs.serve_run(res, store, promoted.experiment_prefix, promoted.run, promoted.training_job,
                                  **extra)
        record = models["served"][0]
        if res.spec.model.versions is not None:
            extra["versions"] = served_versions(res, get("TrainingJob", res.spec.model.training_job or ""), who)
            record = runs_by_id(extra["versions"])[-1]
        return runs.serve_run(res, store, prefix(record), record.id, **extra)
    if isinstance(res, PredictionJob):
        if served is None:
            record = models["predict"][0]
            served = PredictModel(experiment_prefix=prefix(record), training_job=res.spec.model.training_job,
                                  training_run=record.id)
        dataset = datasets.get("dataset")
        return runs.predict_run(res, store, served, dataset[0] if dataset else None)
    raise TypeError(f"no step for {type(res).__name__}")


def served_versions(res: InferenceService, target: Resource | None, who: str) -> list[ServedRun]:
    """spec.model.versions resolved against the TrainingJob's runs: pinned runs are versions 1..n in the
    order listed; `latest: N` takes its N latest successful runs, each numbered by its place among the
    job's successful runs (so a version keeps its number as the job retrains)."""
    versions = res.spec.model.versions
    assert versions is not None and res.spec.model.training_job
    job = res.spec.model.training_job
    status = target.status if isinstance(target, TrainingJob) else None
    succeeded = [r for r in (status.runs if status else []) if r.phase == "Succeeded" and r.output_prefix]
    if versions.runs is not None:
        by_id = {r.id: r for r in succeeded}
        missing = [r for r in versions.runs if r not in by_id]
        if missing:
            known = ", ".join(r.id for r in succeeded) or "none yet"
            raise Waiting("WaitingForExport", f"{who}: spec.model.versions.runs: run(s) {', '.join(missing)} of "
                          f"TrainingJob {job!r} have not succeeded (its successful runs: {known}); waiting for "
                          "them to succeed", "spec.model.versions.runs")
        return [ServedRun(training_run=rid, experiment_prefix=by_id[rid].output_prefix or "", version=n)
                for n, rid in enumerate(versions.runs, start=1)]
    assert versions.latest is not None
    numbered = list(enumerate(succeeded, start=1))[-versions.latest:]
    if not numbered:
        raise Waiting("WaitingForExport", f"{who}: spec.model.versions.latest: TrainingJob {job!r} has no "
                      "successful run yet; waiting for it to have a successful run", "spec.model.versions")
    return [ServedRun(training_run=r.id, experiment_prefix=r.output_prefix or "", version=n) for n, r in numbered]


def runs_by_id(versions: list[ServedRun]) -> list[RunRecord]:
    """The versions as run records (the last is the highest version: what a request without one gets)."""
    return [RunRecord(id=v.training_run, phase="Succeeded", output_prefix=v.experiment_prefix) for v in versions]


def _with_triton(run: BenchmarkRun, res: Benchmark, get: Callable[[str, str], Resource | None]) -> BenchmarkRun:
    """spec.speed.inferenceService as it is now: timed when ready, else skipped with the reason (never waited
    for, and not an input of the run id)."""
    name = res.spec.speed.inference_service
    if not name or not res.spec.speed.enabled:
        return run
    svc = get("InferenceService", name)
    status = getattr(svc, "status", None)
    triton = BenchmarkTriton(service=name)
    if status is not None:
        triton = BenchmarkTriton(service=name, ready=bool(status.ready), url=status.url, model_name=status.model_name,
                                 experiment_prefix=status.experiment_prefix)
    return run.model_copy(update={"triton": triton})
