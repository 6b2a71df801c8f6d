"""Start and stop a served model's local tritonserver for an InferenceService.

The serve step only builds the Triton model repository in the store; the long-running
server is the runner's business (in a cluster it is a Deployment the operator owns).

A canary (spec.canary) runs locally as a second tritonserver on the canary repository, the same model
name on its own ports: there is no router on one machine, so nothing splits traffic; a client picks
the server (status.canary.url). `kubeforge get` shows both models and their request counts, read
from each server's Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeforge.api import InferenceServiceStatus
from kubeforge.api.inference_service import CanaryStatus
from kubeforge.store import LocalStore, open_store

# Store credentials tritonserver needs to read an S3 repository; passed to it, never recorded.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "KUBEFORGE_S3_ENDPOINT")


def repository_location(store_uri: str, output_prefix: str, canary: bool = False) -> str:
    """Where tritonserver reads the repository: a local path, or its s3:// form for an S3 store."""
    from kubeforge.serving.triton_repo import CANARY_DIR, LOCAL_VARIANT, repository_prefix

    store = open_store(store_uri)
    # The serve step writes both variants; a local tritonserver runs the Python-backend one.
    key = repository_prefix(f"{output_prefix.rstrip('/')}/{CANARY_DIR}" if canary else output_prefix, LOCAL_VARIANT)
    if isinstance(store, LocalStore):
        return str(store.root / key)
    return store.triton_uri(key)  # type: ignore[attr-defined]  # S3Store


def _running(pid: int | None) -> bool:
    from kubeforge.serving.triton_server import is_running

    return pid is not None and bool(is_running(pid))


def is_alive(status: InferenceServiceStatus | None) -> bool:
    """The stable server lives, and the canary's too when there is one (else the next run restarts both)."""
    if status is None or not _running(status.pid):
        return False
    return status.canary is None or status.canary.pid is None or _running(status.canary.pid)


def stop(status: InferenceServiceStatus | None) -> bool:
    """Stop the recorded server (and the canary's); returns True when the stable one was running."""
    from kubeforge.serving.triton_server import stop_triton

    if status is None:
        return False
    if status.canary is not None and _running(status.canary.pid):
        stop_triton(status.canary.pid)  # type: ignore[arg-type]  # _running: not None
    if not _running(status.pid):
        return False
    stop_triton(status.pid)  # type: ignore[arg-type]
    return True


def refresh_requests(status: InferenceServiceStatus | None) -> None:
    """Read each live server's request count into the status (shown by `kubeforge get`, never saved:
    the counts are Triton's since the server started)."""
    from kubeforge.serving.triton_metrics import total_requests

    if status is None or not status.model_name:
        return
    if status.metrics_url and _running(status.pid):
        status.requests = total_requests([status.metrics_url], status.model_name)
    canary = status.canary
    if canary is not None and canary.metrics_url and _running(canary.pid):
        canary.requests = total_requests([canary.metrics_url], status.model_name)


def start(store_uri: str, output_prefix: str, model_name: str, run_dir: Path,
          env: Mapping[str, str] | None = None, canary: CanaryStatus | None = None) -> dict[str, Any]:
    """Start tritonserver on the repository; returns the status fields describing it.

    With `canary` (the status start_run recorded for spec.canary) a second server serves the canary
    repository, and the fields carry the canary's status with its endpoints.
    Credentials for an S3 repository reach tritonserver through the inherited environment.
    """
    from kubeforge.serving.triton_server import start_triton, stop_triton

    repository = repository_location(store_uri, output_prefix)
    creds = {k: v for k, v in (env or {}).items() if k in CREDENTIAL_ENV}
    proc = start_triton(repository, model_name, log_path=run_dir / "triton.log", env=creds)
    fields: dict[str, Any] = {
        "url": proc.http_url,
        "grpcUrl": proc.grpc_url,
        "pid": proc.pid,
        "metricsUrl": proc.metrics_url,
        "ready": True,
        "modelName": model_name,
        "repositoryUri": repository,
    }
    if canary is not None:
        try:
            second = start_triton(repository_location(store_uri, output_prefix, canary=True), model_name,
                                  log_path=run_dir / "triton-canary.log", env=creds)
        except Exception:
            stop_triton(proc.pid)  # not half-started: the run fails and says why
            raise
        fields["canary"] = {**canary.dump(), "url": second.http_url, "grpcUrl": second.grpc_url,
                            "pid": second.pid, "metricsUrl": second.metrics_url, "ready": True,
                            "modelName": model_name, "split": "local", "replicas": 1,
                            "trafficPercent": 0}  # nothing routes: each client picks its server
    return fields
