"""Helpers for the operator integration tests: start the real operator, play the Job controller.

Emulated: the Kubernetes API (KubeEmulator, over HTTP, enforcing the Helm chart's RBAC on the
operator's ServiceAccount) and the Job controller (nothing runs pods
here, so a test patches a Job's status the way the controller would and writes the step's result
to the real S3 store the way the step would). The operator, Kopf and SeaweedFS are real.
"""

from __future__ import annotations

from typing import Any

from kubeforge.store import layout
from kubeforge.testing.chart_rbac import operator_kubeconfig
from kubeforge.testing.kopf_thread import connection_from_kubeconfig
from kubeforge.testing.kube_emulator import KubeEmulator

GV = "kubeforge.io/v1alpha1"
SECRET = "kubeforge-store-test"
TRAINER = "registry.test/kubeforge/trainer:t"
TRAINER_GPU = "registry.test/kubeforge/trainer-cuda:t"


def operator_settings(store_uri: str, s3_endpoint: str, **extra: Any) -> Any:
    from kubeforge.operator.settings import OperatorSettings

    return OperatorSettings(store=store_uri, s3_endpoint=s3_endpoint, store_secret=SECRET,
                            trainer_image=TRAINER, trainer_gpu_image=TRAINER_GPU,
                            progress_interval_seconds=0.5, **extra)


def build_operator(settings: Any, emulator: KubeEmulator) -> tuple[Any, Any]:
    """(registry, context) of the real operator, logged in to the emulator as the Helm chart's operator
    ServiceAccount, so that every request it makes is authorized by the chart's RBAC."""
    from kubeforge.operator.handlers import build

    path = operator_kubeconfig(emulator)
    return build(settings, login=lambda **_: connection_from_kubeconfig(path))


def dataset_version(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": name, "namespace": ns},
            "spec": {"dataset": "shapes", "source": {"uri": "s3://raw/shapes/", "format": "coco"}, **spec}}


def training_job(name: str, ns: str, dsv: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": name, "namespace": ns},
            "spec": {"datasetVersion": dsv, "task": "classification",
                     "model": {"framework": "torchvision", "name": "resnet18"},
                     "hyperparameters": {"epochs": 2, "batchSize": 4}, **spec}}


def status_of(emu: KubeEmulator, kind: str, name: str, ns: str) -> dict[str, Any]:
    return (emu.find(kind, name, ns) or {}).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def wait_phase(emu: KubeEmulator, kind: str, name: str, ns: str, phase: str, timeout: float = 30,
               fail_fast: bool = False) -> dict[str, Any]:
    """The status once `phase` is reached; `fail_fast`: raise at once, with the status, if it fails instead
    (for a resource that starts fresh: one that may be Failed from before must not use it)."""
    def reached() -> dict[str, Any] | None:
        status = status_of(emu, kind, name, ns)
        if fail_fast and phase != "Failed" and status.get("phase") == "Failed":
            raise AssertionError(f"{kind} {name} failed: {status}")
        return status if status.get("phase") == phase else None

    return emu.wait_for(reached, timeout=timeout, message=f"{kind} {name} {phase}")


def wait_job(emu: KubeEmulator, ns: str, owner: str, timeout: float = 30) -> dict[str, Any]:
    """The step Job the operator made for `owner` (found by its labels)."""
    return emu.wait_for(lambda: emu.list("Job", ns, f"kubeforge.io/name={owner}"), timeout=timeout,
                        message=f"the Job of {owner}")[0]


def complete_job(emu: KubeEmulator, store: Any, owner: dict[str, Any], job: dict[str, Any],
                 result: dict[str, Any]) -> None:
    """Play the step and the Job controller: the result lands in the store where the Job's command puts it
    (its --result-key, also in an annotation), then the Job completes."""
    meta = owner["metadata"]
    key = job["metadata"]["annotations"]["kubeforge.io/result-key"]
    assert key.startswith(layout.run_prefix(meta["namespace"], owner["kind"], meta["name"], meta["uid"]) + "/")
    store.put_json(key, result)
    emu.patch_status("Job", job["metadata"]["name"], {
        "active": 0, "succeeded": 1, "startTime": "2025-01-01T00:00:00Z",
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}],
    }, meta["namespace"])


def create_pod(emu: KubeEmulator, job: dict[str, Any], suffix: str = "x1") -> dict[str, Any]:
    """Play the Job controller: the pod it makes from the Job's template (labels, spec, owner)."""
    template = job["spec"]["template"]
    meta = job["metadata"]
    return emu.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"{meta['name']}-{suffix}", "namespace": meta["namespace"],
        "labels": {**(template.get("metadata") or {}).get("labels", {}), "batch.kubernetes.io/job-name": meta["name"]},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                             "controller": True}]}, "spec": template["spec"]})


def terminate_pod(emu: KubeEmulator, pod: dict[str, Any], reason: str, exit_code: int, message: str = "") -> None:
    """Play the kubelet: every container of the pod terminated so."""
    terminated = {"reason": reason, "exitCode": exit_code, **({"message": message} if message else {})}
    emu.patch_status("Pod", pod["metadata"]["name"], {"phase": "Failed", "containerStatuses": [
        {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
         "state": {"terminated": terminated}} for c in pod["spec"]["containers"]]}, pod["metadata"]["namespace"])


def start_job(emu: KubeEmulator, job: dict[str, Any]) -> None:
    emu.patch_status("Job", job["metadata"]["name"], {"active": 1, "startTime": "2025-01-01T00:00:00Z"},
                     job["metadata"]["namespace"])


def ready_dataset_version(emu: KubeEmulator, store: Any, name: str, ns: str, digest: str = "d" * 64,
                          **spec: Any) -> dict[str, Any]:
    """A DatasetVersion taken through its real flow to Succeeded (Job made, result written, Job done)."""
    owner = emu.create(dataset_version(name, ns, **spec))
    job = wait_job(emu, ns, name)
    complete_job(emu, store, owner, job, {"digest": digest, "images": 10, "classes": ["circle", "square"]})
    return wait_phase(emu, "DatasetVersion", name, ns, "Succeeded")
