"""Benchmark: evaluates one model, or compares several, on a DatasetVersion split."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kubeforge import GROUP_VERSION
from kubeforge.api.common import ApiModel, ArtifactPolicy, PrinterColumn, ResourceBase, StatusBase


class BenchmarkModelRef(ApiModel):
    """A model to evaluate: a TrainingJob's latest successful run, best or last checkpoint."""

    training_job: str = Field(min_length=1)
    checkpoint: Literal["best", "last"] = "best"


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
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN


class BenchmarkStatus(StatusBase):
    """Where the metrics and the report of the current run are, and its headline numbers."""

    metrics_uri: str | None = None
    report_uri: str | None = None
    metrics: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Headline metrics per model (TrainingJob name)."
    )
    headline: str | None = Field(default=None, description="e.g. 'AP50=0.93' for the first model.")


class Benchmark(ResourceBase):
    plural: ClassVar[str] = "benchmarks"
    short_names: ClassVar[list[str]] = ["kfbench"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Dataset", type="string", json_path=".spec.datasetVersion"),
        PrinterColumn(name="Split", type="string", json_path=".spec.split"),
        PrinterColumn(name="Result", type="string", json_path=".status.headline"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["Benchmark"] = "Benchmark"
    spec: BenchmarkSpec
    status: BenchmarkStatus | None = None
