"""Benchmark: evaluates one model, or compares several, on a DatasetVersion split."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.common import ApiModel, ArtifactPolicy, PrinterColumn, ResourceBase, StatusBase
from kubeforge.models import catalog

SpeedRuntime = Literal["torch", "onnxruntime", "openvino", "triton"]


class BenchmarkModelRef(ApiModel):
    """A model to evaluate: a TrainingJob's latest successful run, best or last checkpoint."""

    training_job: str = Field(min_length=1)
    checkpoint: Literal["best", "last"] = "best"


class BootstrapSpec(ApiModel):
    """Confidence intervals by resampling the evaluated images with replacement (seeded, reproducible)."""

    resamples: int = Field(default=1000, ge=0, le=10_000, description="0 turns intervals off.")
    seed: int = Field(default=0, ge=0)
    confidence: float = Field(default=0.95, gt=0, lt=1)


class SpeedSpec(ApiModel):
    """Latency and throughput of each model on each runtime that can run it."""

    enabled: bool = True
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 16], min_length=1,
                                   description="Batch sizes to time (each 1..256).")
    runtimes: list[SpeedRuntime] = Field(
        default_factory=lambda: ["torch", "onnxruntime", "openvino", "triton"], min_length=1,
        description="Runtimes to time; one that is not installed (or, for triton, not served) is skipped "
        "with its reason recorded.")
    warmup: int = Field(default=2, ge=0, le=100, description="Untimed calls before timing each batch size.")
    runs: int = Field(default=10, ge=1, le=10_000, description="Timed calls per runtime and batch size.")
    max_seconds: float = Field(
        default=60, gt=0, description="Time budget per model, all runtimes together: a batch size whose timing "
        "(estimated from one call of it, or from the size before) would pass it is skipped with the reason "
        "recorded, so a large model on a CPU does not hold the benchmark for long.")
    inference_service: str | None = Field(
        default=None, description="Time Triton through this InferenceService (it must serve one of the models).")

    @model_validator(mode="after")
    def _batch_sizes(self) -> SpeedSpec:
        bad = [b for b in self.batch_sizes if not 1 <= b <= 256]
        if bad:
            raise ValueError(f"spec.speed.batchSizes: {bad} out of range; expected sizes from 1 to 256")
        return self


class GateCondition(ApiModel):
    """One condition a candidate model must meet: a bound on a metric, or beating a baseline model."""

    metric: str = Field(min_length=1, description="A headline metric of the task, e.g. AP50, mIoU, accuracy.")
    min: float | None = Field(default=None, description="The metric must be at least this.")
    max: float | None = Field(default=None, description="The metric must be at most this.")
    better_than: str | None = Field(
        default=None, description="A TrainingJob of spec.models (the baseline): the candidate must score "
        "better on the metric.")
    significant: bool = Field(
        default=False, description="With betterThan: the bootstrap interval of the difference must exclude zero.")

    @model_validator(mode="after")
    def _one_test(self) -> GateCondition:
        if self.min is None and self.max is None and self.better_than is None:
            raise ValueError(f"spec.gate ({self.metric}): set min, max or betterThan")
        if self.significant and self.better_than is None:
            raise ValueError(f"spec.gate ({self.metric}): significant needs betterThan (a baseline model)")
        # Checked here, not after a whole evaluation: a typo fails when the manifest is read.
        if self.metric not in catalog.GATE_METRICS:
            raise ValueError(f"spec.gate ({self.metric}): not a Benchmark metric; expected one of "
                             f"{sorted(catalog.GATE_METRICS)}")
        if self.significant and self.metric not in catalog.INTERVAL_METRICS:
            raise ValueError(f"spec.gate ({self.metric}): significant needs a metric with bootstrap intervals: "
                             f"{sorted(catalog.INTERVAL_METRICS)}")
        return self


class BenchmarkSpec(ApiModel):
    """Which models to evaluate on which data; two or more are compared."""

    dataset_version: str | None = Field(
        default=None, description="Evaluate on this version (default: the first model's training data)."
    )
    split: Literal["val", "train", "all"] = Field(
        default="val", description="val/train: the models' own split; all: every image."
    )
    models: list[BenchmarkModelRef] = Field(min_length=1)
    iou_threshold: float = Field(default=0.5, gt=0, lt=1, description="Detection: IoU for P/R/F1.")
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec)
    speed: SpeedSpec = Field(default_factory=SpeedSpec)
    gate: list[GateCondition] = Field(
        default_factory=list,
        description="Promotion gate: the models other than betterThan baselines are candidates; the gate "
        "passes when one meets every condition, and the best of those is the winner an InferenceService "
        "with model.benchmark serves.")
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN

    @model_validator(mode="after")
    def _gate_baselines(self) -> BenchmarkSpec:
        names = [m.training_job for m in self.models]
        for i, cond in enumerate(self.gate):
            if cond.better_than is not None and cond.better_than not in names:
                raise ValueError(f"spec.gate[{i}].betterThan: TrainingJob {cond.better_than!r} is not one of "
                                 f"spec.models {names}; the baseline must be evaluated on the same images")
        baselines = {c.better_than for c in self.gate if c.better_than}
        if self.gate and not [n for n in names if n not in baselines]:
            raise ValueError("spec.gate: every model is a betterThan baseline; list at least one candidate in "
                             "spec.models")
        return self


class GateCheck(ApiModel):
    """How one candidate fared on one gate condition."""

    model: str
    metric: str
    value: float | None = None
    passed: bool
    message: str = Field(description="The numbers that decided it, in words.")


class GateResult(ApiModel):
    """The promotion gate of a run: did a candidate pass, which one won, and why."""

    passed: bool
    winner: str | None = Field(default=None, description="The TrainingJob picked (the best candidate that passed).")
    winner_run: str | None = Field(default=None, description="The winner's TrainingJob run id.")
    winner_experiment_prefix: str | None = None
    metric: str | None = Field(default=None, description="The metric the winner was picked on.")
    checks: list[GateCheck] = Field(default_factory=list)
    message: str = ""


class PromotedModel(ApiModel):
    """The winner of the latest run whose gate passed: what `InferenceService.spec.model.benchmark` serves."""

    training_job: str
    run: str | None = None
    experiment_prefix: str
    benchmark_run: str = Field(description="The Benchmark run that promoted it.")


class BenchmarkStatus(StatusBase):
    """Where the metrics and the report of the current run are, and its headline numbers."""

    metrics_uri: str | None = None
    report_uri: str | None = None
    metrics: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Headline metrics per model (TrainingJob name)."
    )
    intervals: dict[str, dict[str, list[float]]] = Field(
        default_factory=dict, description="Per model and headline metric, the bootstrap interval [low, high]."
    )
    headline: str | None = Field(default=None, description="e.g. 'AP50=0.93' for the first model.")
    gate: GateResult | None = Field(default=None, description="The current run's promotion gate.")
    promoted: PromotedModel | None = Field(
        default=None, description="The winner of the latest run whose gate passed (kept when a later run fails it).")


class Benchmark(ResourceBase):
    plural: ClassVar[str] = "benchmarks"
    short_names: ClassVar[list[str]] = ["kfbench"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Dataset", type="string", json_path=".spec.datasetVersion"),
        PrinterColumn(name="Split", type="string", json_path=".spec.split"),
        PrinterColumn(name="Result", type="string", json_path=".status.headline"),
        PrinterColumn(name="Gate", type="boolean", json_path=".status.gate.passed"),
        PrinterColumn(name="Winner", type="string", json_path=".status.promoted.trainingJob"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["Benchmark"] = "Benchmark"
    spec: BenchmarkSpec
    status: BenchmarkStatus | None = None
