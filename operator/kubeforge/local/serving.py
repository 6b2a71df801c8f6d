"""Start and stop a served model's local tritonserver for an InferenceService.

The serve step only builds the Triton model repository in the store; the long-running
server is the runner's business (in a cluster it is a Deployment the operator owns).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeforge.api import InferenceServiceStatus
from kubeforge.store import LocalStore, open_store

# Store credentials tritonserver needs to read an S3 repository; passed to it, never recorded.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "KUBEFORGE_S3_ENDPOINT")


def repository_location(store_uri: str, output_prefix: str) -> str:
    """Where tritonserver reads the repository: a local path, or its s3:// form for an S3 store."""
    from kubeforge.serving.triton_repo import LOCAL_VARIANT, repository_prefix

    store = open_store(store_uri)
    # The serve step writes both variants; a local tritonserver runs the Python-backend one.
    key = repository_prefix(output_prefix, LOCAL_VARIANT)
    if isinstance(store, LocalStore):
        return str(store.root / key)
    return store.triton_uri(key)  # type: ignore[attr-defined]  # S3Store


def is_alive(status: InferenceServiceStatus | None) -> bool:
    if status is None or status.pid is None:
        return False
    from kubeforge.serving.triton_server import is_running

    return bool(is_running(status.pid))


def stop(status: InferenceServiceStatus | None) -> bool:
    """Stop the recorded server; returns True when one was running."""
    if not is_alive(status):
        return False
    from kubeforge.serving.triton_server import stop_triton

    assert status is not None and status.pid is not None
    stop_triton(status.pid)
    return True


def start(store_uri: str, output_prefix: str, model_name: str, run_dir: Path,
          env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Start tritonserver on the repository; returns the status fields describing it.

    Credentials for an S3 repository reach tritonserver through the inherited environment.
    """
    from kubeforge.serving.triton_server import start_triton

    repository = repository_location(store_uri, output_prefix)
    creds = {k: v for k, v in (env or {}).items() if k in CREDENTIAL_ENV}
    proc = start_triton(repository, model_name, log_path=run_dir / "triton.log", env=creds)
    return {
        "url": proc.http_url,
        "grpcUrl": proc.grpc_url,
        "pid": proc.pid,
        "ready": True,
        "modelName": model_name,
        "repositoryUri": repository,
    }
