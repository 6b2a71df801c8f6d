"""Pure builders for serving: an InferenceService -> a Triton Deployment and its Service.

Triton reads the model repository the serve step wrote (`serving/<ns>_<name>/onnxruntime`)
straight from S3 with the store Secret's credentials (`envFrom`), loads only our model
(explicit model control), and is Ready when `/v2/health/ready` says so. The pod template
carries a hash of what is served, so a new model or runtime rolls the Deployment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from kubeforge.api import InferenceService
from kubeforge.operator.builders import NON_ROOT_UID, _meta, canonical_hash, labels
from kubeforge.operator.settings import OperatorSettings
from kubeforge.serving.triton_repo import CANARY_DIR, CLUSTER_VARIANT
from kubeforge.store import layout

COMPONENT = "triton"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
ANNOTATION_MODEL_HASH = "kubeforge.io/model-hash"
LABEL_SERVES = "kubeforge.io/serves"  # on every Triton pod of the service, stable and canary


def repository_uri(isvc: InferenceService, settings: OperatorSettings, canary: bool = False) -> str:
    """Triton's S3 path: `s3://[endpoint/]bucket/prefix/serving/<ns>_<name>/onnxruntime`.

    Triton takes the endpoint inside the path (`s3://host:port/bucket/...`); a plain-HTTP
    endpoint is written without its scheme, an https one keeps it.
    """
    store = urlparse(settings.store)
    if store.scheme != "s3" or not store.netloc:
        raise ValueError(f"KUBEFORGE_STORE={settings.store!r}: serving on a cluster needs s3://bucket/prefix")
    key = "/".join(p for p in (store.path.strip("/"), layout.serving_prefix(isvc.namespace, isvc.name),
                               CANARY_DIR if canary else "", CLUSTER_VARIANT) if p)
    endpoint = settings.s3_endpoint.rstrip("/")
    if endpoint.startswith("http://"):
        endpoint = endpoint[len("http://"):]
    host = f"{endpoint}/" if endpoint else ""
    return f"s3://{host}{store.netloc}/{key}"


def model_name(isvc: InferenceService) -> str:
    return isvc.name


def service_url(isvc: InferenceService) -> str:
    return f"http://{isvc.name}.{isvc.namespace}.svc:{HTTP_PORT}"


def grpc_url(isvc: InferenceService) -> str:
    return f"{isvc.name}.{isvc.namespace}.svc:{GRPC_PORT}"


def selector(isvc: InferenceService) -> dict[str, str]:
    """Immutable once the Deployment exists: only labels that never change."""
    full = labels(isvc, COMPONENT)
    return {k: full[k] for k in ("app.kubernetes.io/instance", "app.kubernetes.io/component", "kubeforge.io/kind")}


def model_hash(isvc: InferenceService, settings: OperatorSettings, revision: str, canary: bool = False) -> str:
    """What is served: the model reference, runtime, repository, and the model's revision.

    `revision` identifies the served build (the served TrainingJob run(s) of this track): the same spec
    pointing at a retrained model is a change too; a change of the other track is not.
    """
    model = isvc.spec.canary.model if canary and isvc.spec.canary else isvc.spec.model
    return canonical_hash({"model": model.dump(), "runtime": isvc.spec.runtime.dump(),
                           "repository": repository_uri(isvc, settings, canary), "revision": revision})


def triton_deployment(isvc: InferenceService, settings: OperatorSettings, revision: str,
                      canary: bool = False) -> dict[str, Any]:
    """The Triton Deployment; `revision` identifies what it serves (see `model_hash`); `canary`: the
    canary's repository (builders_rollout makes the rest of the canary Deployment)."""
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "triton",
        "image": settings.triton_image,
        "imagePullPolicy": settings.image_pull_policy,
        # The NGC image's entrypoint execs its arguments.
        "args": [
            "tritonserver",
            f"--model-repository={repository_uri(isvc, settings, canary)}",
            "--model-control-mode=explicit",
            f"--load-model={model_name(isvc)}",
            f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}", f"--metrics-port={METRICS_PORT}",
        ],
        "envFrom": [{"secretRef": {"name": settings.store_secret}}],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        # Loading from S3 can take a while; liveness starts counting after this.
        "startupProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 5,
                         "failureThreshold": 60},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod_labels = {**labels(isvc, COMPONENT), LABEL_SERVES: isvc.name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(isvc, isvc.name, COMPONENT),
        "spec": {
            "replicas": isvc.spec.replicas,
            "selector": {"matchLabels": selector(isvc)},
            "template": {
                "metadata": {"labels": pod_labels,
                             "annotations": {ANNOTATION_MODEL_HASH: model_hash(isvc, settings, revision, canary)}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
                },
            },
        },
    }


def triton_service(isvc: InferenceService) -> dict[str, Any]:
    """ClusterIP Service `<name>`: HTTP 8000, gRPC 8001, metrics 8002."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(isvc, isvc.name, COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(isvc),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "appProtocol": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "appProtocol": "http"},
            ],
        },
    }


def deployment_patch(isvc: InferenceService, settings: OperatorSettings, revision: str) -> dict[str, Any]:
    """The merge patch that brings an existing Deployment to the desired replicas and model (rolls on change)."""
    return patch_of(triton_deployment(isvc, settings, revision))


def patch_of(desired: dict[str, Any], replicas: bool = True) -> dict[str, Any]:
    """The merge patch that brings an existing Deployment to `desired`'s model (rolls on change) and, unless
    an autoscaler owns them, its replicas."""
    spec = {"template": desired["spec"]["template"]}
    if replicas:
        spec["replicas"] = desired["spec"]["replicas"]
    return {"spec": spec}
