"""Helpers for the serving tests through the real operator (canary, autoscaling): TrainingJobs taken to
Succeeded and serve Jobs completed the way the Job controller and the step would (`kube_operator`)."""

from __future__ import annotations

from typing import Any

from kubeforge.testing.kube_operator import GV, complete_job, ready_dataset_version, training_job, wait_job, wait_phase

TRITON = "registry.test/tritonserver:t"


def trained(op: dict[str, Any], name: str) -> dict[str, Any]:
    """TrainingJob `name` on DatasetVersion `data` (made once), Succeeded."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    if emu.find("DatasetVersion", "data", ns) is None:
        ready_dataset_version(emu, store, "data", ns)
    owner = emu.create(training_job(name, ns, "data"))
    complete_job(emu, store, owner, wait_job(emu, ns, name), {"metrics": {"accuracy": 0.9}})
    return wait_phase(emu, "TrainingJob", name, ns, "Succeeded")


def serve_jobs(emu: Any, ns: str) -> list[dict[str, Any]]:
    """The serve Jobs of InferenceService `svc`."""
    return [j for j in emu.list("Job", ns, "kubeforge.io/name=svc")
            if j["metadata"]["labels"]["kubeforge.io/kind"] == "InferenceService"]


def complete_serve_job(op: dict[str, Any], done: set[str]) -> None:
    """Complete the next serve Job of `svc` not in `done` (and add it there)."""
    emu, ns = op["emu"], op["ns"]
    job = emu.wait_for(lambda: [j for j in serve_jobs(emu, ns) if j["metadata"]["name"] not in done],
                       message="a new serve Job")[0]
    complete_job(emu, op["store"], emu.get("InferenceService", "svc", ns), job, {"modelName": "svc"})
    done.add(job["metadata"]["name"])


def with_canary(op: dict[str, Any], done: set[str], replicas: int, percent: int = 10, **spec: Any) -> None:
    """TrainingJobs old and new; InferenceService svc serving old with new as a canary, its serve Job done."""
    trained(op, "old")
    trained(op, "new")
    op["emu"].create({"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": "svc", "namespace": op["ns"]},
                      "spec": {"model": {"trainingJob": "old"}, "replicas": replicas,
                               "canary": {"model": {"trainingJob": "new"}, "trafficPercent": percent}, **spec}})
    complete_serve_job(op, done)


def model_hash(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["metadata"]["annotations"]["kubeforge.io/model-hash"])


def weights(route: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def deployments_ready(emu: Any, ns: str, *names: str) -> None:
    """Play the Deployment controller: every replica of each Deployment `names` ready and up to date."""
    for name in names:
        dep = emu.get("Deployment", name, ns)
        n = dep["spec"]["replicas"]
        emu.patch_status("Deployment", name, {"observedGeneration": dep["metadata"]["generation"],
                                              "replicas": n, "readyReplicas": n, "updatedReplicas": n}, ns)
