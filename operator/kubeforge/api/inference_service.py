"""InferenceService: serves a trained model's export on NVIDIA Triton."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.common import ApiModel, ArtifactPolicy, PrinterColumn, ResourceBase, StatusBase


class ModelVersions(ApiModel):
    """Runs of one TrainingJob served side by side as Triton versions `<model>/<n>/` of one model.

    `runs`: pinned; version n is the n-th run listed, and Triton serves exactly those
    (`version_policy: specific`). `latest: N`: the TrainingJob's N latest successful runs; a run's
    version is its number among the TrainingJob's successful runs (1 = the first), so a version keeps
    its number as the job retrains, and Triton serves the newest N (`version_policy: latest`).
    A request without a version gets Triton's highest loaded version.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.runs) != has(self.latest)", "message": "set exactly one of runs or latest"},
    ]})

    runs: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{6,64}$")]] | None = Field(
        default=None, min_length=1, max_length=16,
        description="TrainingJob run ids (from its status.runs); version n is the n-th.")
    latest: int | None = Field(default=None, ge=1, le=16, description="Serve the N latest successful runs.")

    @model_validator(mode="after")
    def _one(self) -> ModelVersions:
        if (self.runs is None) == (self.latest is None):
            raise ValueError("spec.model.versions: set exactly one of runs or latest")
        if self.runs is not None and len(set(self.runs)) != len(self.runs):
            raise ValueError(f"spec.model.versions.runs lists a run twice: {self.runs}")
        return self


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
    versions: ModelVersions | None = Field(
        default=None, description="Serve several runs of the TrainingJob as Triton model versions of one model "
        "(instead of one run): pinned runs, or its latest N successful runs.")

    @model_validator(mode="after")
    def _one_source(self) -> ServedModelRef:
        if (self.training_job is None) == (self.benchmark is None):
            raise ValueError("spec.model: set exactly one of trainingJob or benchmark")
        if self.run is not None and self.training_job is None:
            raise ValueError("spec.model.run pins a run of spec.model.trainingJob; it cannot go with benchmark")
        if self.versions is not None and (self.training_job is None or self.run is not None):
            raise ValueError("spec.model.versions serves runs of spec.model.trainingJob: it cannot go with "
                             "benchmark or run (list the runs in versions.runs instead)")
        return self


class RuntimeSpec(ApiModel):
    """Triton's settings for the served model."""

    max_batch_size: int = Field(default=8, ge=0, le=1024, description="0 disables batching.")
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = Field(default=100, ge=0)
    instances: int = Field(default=1, ge=1, le=64, description="Model instances per server.")


class CanarySpec(ApiModel):
    """A second model served beside spec.model, taking a share of the traffic.

    Promote: make this model spec.model and remove canary. Roll back: remove canary. Either way the
    canary's Deployment (and route) are deleted.
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.model.trainingJob)",
         "message": "a canary serves a TrainingJob's run: set model.trainingJob (and optionally model.run)"},
    ]})

    model: ServedModelRef
    traffic_percent: int = Field(
        default=10, ge=0, le=100,
        description="Share of requests sent to the canary: exact with Gateway API (HTTPRoute weights), else "
        "approximate (the ratio of canary to stable replicas behind one Service).")

    @model_validator(mode="after")
    def _training_job(self) -> CanarySpec:
        if self.model.training_job is None or self.model.versions is not None:
            raise ValueError("spec.canary.model: a canary serves one TrainingJob run: set trainingJob (and "
                             "optionally run), not benchmark or versions")
        return self


AutoscalingMetric = Literal["queueTime", "requestsPerSecond", "gpuUtilization"]


class AutoscalingSpec(ApiModel):
    """Scale Triton with load: a KEDA ScaledObject when KEDA is installed, else an autoscaling/v2 HPA.

    `target` per replica: queueTime in microseconds of queue time per request, requestsPerSecond in
    successful inferences per second, gpuUtilization in percent (0-100).
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
    ]})

    min_replicas: int = Field(default=1, ge=0, le=100, description="0 scales to zero (needs KEDA).")
    max_replicas: int = Field(ge=1, le=100)
    metric: AutoscalingMetric = "requestsPerSecond"
    target: float = Field(gt=0, description="The per-replica value the autoscaler keeps the metric at.")

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"spec.autoscaling: minReplicas {self.min_replicas} exceeds maxReplicas "
                             f"{self.max_replicas}")
        if self.metric == "gpuUtilization" and self.target > 100:
            raise ValueError(f"spec.autoscaling.target {self.target}: gpuUtilization is a percentage (0-100)")
        return self


class InferenceServiceSpec(ApiModel):
    """Which model to serve on Triton, how, and with how many replicas."""

    model: ServedModelRef
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    replicas: int = Field(default=1, ge=0, le=100,
                          description="Ignored while spec.autoscaling is set (the autoscaler owns replicas).")
    canary: CanarySpec | None = None
    autoscaling: AutoscalingSpec | None = None
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN


class ServedVersion(ApiModel):
    """One Triton model version and the TrainingJob run it serves."""

    version: int = Field(ge=1)
    training_run: str
    experiment_prefix: str


class CanaryStatus(ApiModel):
    """The canary beside the stable model: what it serves, how traffic is split, what it got."""

    training_job: str
    training_run: str | None = None
    experiment_prefix: str | None = None
    traffic_percent: int = 0
    split: Literal["HTTPRoute", "replicas", "local"] | None = Field(
        default=None, description="HTTPRoute: exact weights (Gateway API); replicas: approximate, by replica "
        "ratio behind one Service; local: a second local tritonserver (url), nothing splits traffic.")
    replicas: int | None = None
    ready: bool = False
    model_name: str | None = None
    requests: int | None = Field(default=None, description="Successful inferences of the canary model.")
    url: str | None = Field(default=None, description="Local mode: the canary's own tritonserver (HTTP).")
    grpc_url: str | None = None
    metrics_url: str | None = None
    pid: int | None = Field(default=None, description="Local mode: the canary's tritonserver process.")


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
    metrics_url: str | None = Field(default=None, description="Local mode: its Prometheus metrics endpoint.")
    requests: int | None = Field(default=None, description="Successful inferences of the stable model "
                                 "(Triton's nv_inference_request_success, summed over its servers).")
    versions: list[ServedVersion] | None = Field(
        default=None, description="With spec.model.versions: which TrainingJob run each Triton version is.")
    canary: CanaryStatus | None = None
    autoscaler: str | None = Field(default=None, description="ScaledObject (KEDA) or HorizontalPodAutoscaler.")


class InferenceService(ResourceBase):
    plural: ClassVar[str] = "inferenceservices"
    # KServe owns `isvc`; ours must not clash.
    short_names: ClassVar[list[str]] = ["kfsvc"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        # What is served (a Benchmark's winner is known from status only), and the Benchmark that picks it.
        PrinterColumn(name="Model", type="string", json_path=".status.trainingJob"),
        PrinterColumn(name="Benchmark", type="string", json_path=".spec.model.benchmark"),
        PrinterColumn(name="Run", type="string", json_path=".status.trainingRun", priority=1),
        PrinterColumn(name="Canary", type="string", json_path=".status.canary.trainingJob"),
        PrinterColumn(name="Canary%", type="integer", json_path=".status.canary.trafficPercent", priority=1),
        PrinterColumn(name="Requests", type="integer", json_path=".status.requests", priority=1),
        PrinterColumn(name="CanaryRequests", type="integer", json_path=".status.canary.requests", priority=1),
        PrinterColumn(name="URL", type="string", json_path=".status.url"),
        PrinterColumn(name="Ready", type="boolean", json_path=".status.ready"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["InferenceService"] = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
