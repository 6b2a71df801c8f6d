"""InferenceService: serves a trained model's export on NVIDIA Triton."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.common import ApiModel, ArtifactPolicy, PrinterColumn, ResourceBase, StatusBase


class ServedModelRef(ApiModel):
    """The model to serve: a TrainingJob's latest successful run, a pinned run, or a Benchmark's winner."""

    # The same rules as _one_source, for the API server (kubectl apply is refused, not left Failed).
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.trainingJob) != has(self.benchmark)",
         "message": "set exactly one of trainingJob or benchmark"},
        {"rule": "!has(self.run) || has(self.trainingJob)",
         "message": "run pins a run of trainingJob; it cannot go with benchmark"},
    ]})

    training_job: str | None = Field(default=None, min_length=1)
    run: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{6,64}$",
        description="Serve this run of the TrainingJob (an id from its status.runs). Default: its latest "
        "successful run, followed as it retrains.",
    )
    benchmark: str | None = Field(
        default=None, min_length=1,
        description="Serve the winner of this Benchmark's promotion gate, only once a run's gate passed; "
        "a later passing run with a new winner rolls the service to it.")
    pick: Literal["best"] = Field(default="best", description="With benchmark: which passing model to serve.")
    format: Literal["onnx"] = "onnx"

    @model_validator(mode="after")
    def _one_source(self) -> ServedModelRef:
        if (self.training_job is None) == (self.benchmark is None):
            raise ValueError("spec.model: set exactly one of trainingJob or benchmark")
        if self.run is not None and self.training_job is None:
            raise ValueError("spec.model.run pins a run of spec.model.trainingJob; it cannot go with benchmark")
        return self


class RuntimeSpec(ApiModel):
    """Triton's settings for the served model."""

    max_batch_size: int = Field(default=8, ge=0, le=1024, description="0 disables batching.")
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = Field(default=100, ge=0)
    instances: int = Field(default=1, ge=1, le=64, description="Model instances per server.")


class InferenceServiceSpec(ApiModel):
    """Which model to serve on Triton, how, and with how many replicas."""

    model: ServedModelRef
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    replicas: int = Field(default=1, ge=0, le=100)
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN


class InferenceServiceStatus(StatusBase):
    """Where the model is served and which TrainingJob run it is."""

    url: str | None = Field(default=None, description="HTTP endpoint (Open Inference Protocol v2).")
    grpc_url: str | None = None
    ready: bool = False
    model_name: str | None = None
    repository_uri: str | None = None
    training_run: str | None = Field(default=None, description="The TrainingJob run being served.")
    training_job: str | None = Field(
        default=None, description="The TrainingJob being served (with spec.model.benchmark: the winner its "
        "promotion gate promoted).")
    experiment_prefix: str | None = Field(
        default=None, description="That run's store prefix (its export and model_meta.json)."
    )
    pid: int | None = Field(default=None, description="Local mode: the tritonserver process.")


class InferenceService(ResourceBase):
    plural: ClassVar[str] = "inferenceservices"
    # KServe owns `isvc`; ours must not clash.
    short_names: ClassVar[list[str]] = ["kfsvc"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        # What is served (a Benchmark's winner is known from status only), and the Benchmark that picks it.
        PrinterColumn(name="Model", type="string", json_path=".status.trainingJob"),
        PrinterColumn(name="Benchmark", type="string", json_path=".spec.model.benchmark"),
        PrinterColumn(name="Run", type="string", json_path=".status.trainingRun", priority=1),
        PrinterColumn(name="URL", type="string", json_path=".status.url"),
        PrinterColumn(name="Ready", type="boolean", json_path=".status.ready"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["InferenceService"] = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
