"""The operator's settings: one class, read from the environment once at start-up.

The environment names are a contract with the Helm chart (`KUBEFORGE_*`). Store
credentials are deliberately not here: the operator gets AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY from the Secret named by KUBEFORGE_STORE_SECRET through `envFrom`,
as every Job and Triton pod does, and only ever passes the Secret's *name* on.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Random peering priorities are drawn from 1..PEERING_PRIORITY_MAX: two replicas tie once in a
# million starts; KUBEFORGE_PEERING_PRIORITY above it outranks every replica.
PEERING_PRIORITY_MAX = 1_000_000


def random_priority() -> int:
    return 1 + secrets.randbelow(PEERING_PRIORITY_MAX)


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEFORGE_", extra="ignore", frozen=True)

    store: str = Field(default="s3://kubeforge/store", description="Store URI, s3://bucket/prefix.")
    s3_endpoint: str = Field(default="", description="host:port or http(s)://host:port of the S3 API.")
    store_secret: str = Field(
        default="kubeforge-store", description="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (envFrom)."
    )
    trainer_image: str = "ghcr.io/kubeforge/trainer:0.1.0"
    trainer_gpu_image: str = "ghcr.io/kubeforge/trainer-cuda:0.1.0"
    triton_image: str = "nvcr.io/nvidia/tritonserver:24.10-py3"
    # Serving rollouts (docs/serving.md): the Gateway a canary's HTTPRoute and GRPCRoute attach to ("namespace/name"),
    # and the Prometheus a KEDA ScaledObject queries for Triton's metrics.
    gateway: str = Field(default="", description="namespace/name of the Gateway for canary routes.")
    # Opt-in: a GRPCRoute takes every gRPC inference call on its listeners (not one model's), so it needs a
    # Gateway set up for it (docs/serving.md).
    grpc_route: bool = Field(default=False, description="Split a canary's gRPC calls with a GRPCRoute too.")
    prometheus_url: str = Field(default="http://prometheus-operated.monitoring.svc:9090",
                                description="Prometheus that scrapes Triton (KEDA's prometheus trigger).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # NoDecode: a comma list, not JSON.
    watch_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch; empty = cluster-wide."
    )
    job_backoff_limit: int = Field(default=2, ge=0)
    job_active_deadline_seconds: int | None = Field(default=None, ge=1)
    job_ttl_seconds: int | None = Field(default=86400, ge=0)
    progress_interval_seconds: float = Field(default=10.0, gt=0)
    # How often a Ready InferenceService's request counts are read from its pods' Triton metrics.
    request_count_interval_seconds: float = Field(default=30.0, gt=0)
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    health_port: int = Field(default=8081, ge=0, le=65535)
    peering_name: str = "kubeforge"
    # Kopf pauses an operator while a live peer of HIGHER priority exists, and pauses every one of
    # them while two share a priority; so replicas must not tie. Unset: random per process
    # (1..PEERING_PRIORITY_MAX, resolved once at start-up); set it above that range to take over
    # from the cluster's replicas (a debugging session), never to one value for several replicas.
    peering_priority: int = Field(default_factory=random_priority, ge=0,
                                  description="Kopf peering priority; empty = random per process.")
    peering_lifetime_seconds: int = Field(
        default=60, ge=2, description="Seconds a replica's keep-alive counts; a standby takes over after it.")
    step_service_account: str = Field(default="", description="ServiceAccount of step pods; empty = namespace default.")

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("peering_priority", mode="before")
    @classmethod
    def _random_priority(cls, value: object) -> object:
        return random_priority() if value == "" else value

    @field_validator("job_active_deadline_seconds", "job_ttl_seconds", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    def s3_endpoint_url(self) -> str:
        """The endpoint as a URL (Triton's s3:// path wants host:port; see `s3_host`)."""
        ep = self.s3_endpoint
        return ep if "://" in ep or not ep else f"http://{ep}"

    def s3_host(self) -> str:
        """host:port of the endpoint, without a scheme."""
        return self.s3_endpoint.split("://", 1)[-1].rstrip("/")
