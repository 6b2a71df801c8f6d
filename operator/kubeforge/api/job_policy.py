"""How a kind's work runs as Kubernetes Jobs: placement, queueing and retry policy.

A mixin of spec fields, shared by every kind whose steps run as Jobs and ignored by the
local runner. Unset fields fall back to the operator's defaults (KUBEFORGE_JOB_*).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubeforge.api.common import DNS_LABEL_PATTERN, ApiModel


class Toleration(ApiModel):
    """A core/v1 Toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, description="NoExecute only.")


class JobPolicy(ApiModel):
    node_selector: dict[str, str] | None = Field(default=None, description="Pod nodeSelector of the step's pods.")
    tolerations: list[Toleration] | None = None
    priority_class_name: str | None = Field(default=None, max_length=253)
    service_account_name: str | None = Field(
        default=None, pattern=DNS_LABEL_PATTERN, max_length=63,
        description="ServiceAccount of the step's pods (default: the operator's step account).",
    )
    suspend: bool = Field(default=False, description="Create the Job suspended (Kueue or a user resumes it).")
    queue_name: str | None = Field(
        default=None, max_length=63, description="Kueue LocalQueue: becomes the label kueue.x-k8s.io/queue-name."
    )
    backoff_limit: int | None = Field(default=None, ge=0, le=100, description="Retries of a failed step pod.")
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="Wall-clock limit of the step.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished Job (not the resource) after this long."
    )


class DistributedSpec(ApiModel):
    """Multi-node or multi-process training (torchrun in an indexed Job)."""

    nodes: int = Field(default=1, ge=1, le=1024, description="Pods (an indexed Job) when greater than 1.")
    processes_per_node: int = Field(default=1, ge=1, le=64, description="torchrun --nproc-per-node.")
