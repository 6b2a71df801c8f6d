"""Shared pieces of the API models: base classes, metadata, conditions, status."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Kubernetes object names: RFC 1123 subdomain (lowercase alphanumerics, '-', '.').
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# Names that become path segments in the store and DNS labels in a cluster.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class ApiModel(BaseModel):
    """Strict camelCase model: unknown fields are errors, so typos never pass silently."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_assignment=True,
    )

    def dump(self) -> dict[str, Any]:
        """The Kubernetes wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Phase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    # Local mode only: a served model whose process was stopped.
    STOPPED = "Stopped"


class ArtifactPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = ""
    last_transition_time: str = Field(default_factory=now_rfc3339)
    observed_generation: int | None = None


class ObjectMeta(BaseModel):
    """The part of metav1.ObjectMeta users write; server-set fields pass through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    namespace: str = Field(default="default", pattern=DNS_LABEL_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Superseded"]


class RunRecord(ApiModel):
    """One run of a resource's step. A changed spec (or changed inputs) is a new run under its own id;
    earlier runs stay in the store and in this list until artifactPolicy removes them."""

    id: str = Field(pattern=r"^[0-9a-f]{6,64}$", description="Derived from the run's inputs: the same inputs, "
                    "the same run.")
    phase: RunPhase = "Pending"
    generation: int | None = Field(default=None, description="The metadata.generation the run was made for.")
    output_prefix: str | None = Field(default=None, description="Where the run's artifacts are in the store.")
    start_time: str | None = None
    completion_time: str | None = None
    message: str = ""


class StatusBase(ApiModel):
    """Fields every status carries."""

    # Statuses are written by us, read by tools that may be newer: keep what we don't know.
    model_config = ConfigDict(
        extra="allow", alias_generator=to_camel, populate_by_name=True, validate_assignment=True
    )

    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    start_time: str | None = None
    completion_time: str | None = None
    output_prefix: str | None = Field(
        default=None, description="The store prefix the current run writes (what artifactPolicy: Delete removes)."
    )
    run_id: str | None = Field(default=None, description="The current run (the last one started).")
    runs: list[RunRecord] = Field(default_factory=list, description="Every run, oldest first.")

    def latest_succeeded(self) -> RunRecord | None:
        return next((r for r in reversed(self.runs) if r.phase == "Succeeded"), None)

    def find_run(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.runs if r.id == run_id), None)

    def set_condition(
        self, type_: str, status: bool | None, reason: str, message: str = "", generation: int | None = None
    ) -> None:
        """Upsert a condition, keeping lastTransitionTime when the status did not change."""
        value: Literal["True", "False", "Unknown"] = (
            "Unknown" if status is None else ("True" if status else "False")
        )
        for i, cond in enumerate(self.conditions):
            if cond.type == type_:
                ltt = cond.last_transition_time if cond.status == value else now_rfc3339()
                self.conditions[i] = Condition(
                    type=type_, status=value, reason=reason, message=message,
                    last_transition_time=ltt, observed_generation=generation,
                )
                return
        self.conditions.append(
            Condition(type=type_, status=value, reason=reason, message=message, observed_generation=generation)
        )


class PrinterColumn(BaseModel):
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0


class ResourceBase(ApiModel):
    """A custom resource: apiVersion, kind, metadata, spec, status."""

    # Set by each kind; used by the CRD generator and `kubeforge get`.
    plural: ClassVar[str]
    short_names: ClassVar[list[str]]
    printer_columns: ClassVar[list[PrinterColumn]]
    # CRD categories: `kubectl get kubeforge` (and `kubeforge get kubeforge`) lists every kind in one.
    categories: ClassVar[tuple[str, ...]] = ("kubeforge",)
    # True: the CRD rejects any change of spec after creation (a CEL rule).
    immutable_spec: ClassVar[bool] = False

    api_version: str
    kind: str
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    def key(self) -> str:
        """`Kind/namespace/name`, how errors and logs name a resource."""
        return f"{self.kind}/{self.metadata.namespace}/{self.metadata.name}"
