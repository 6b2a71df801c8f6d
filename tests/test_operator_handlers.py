"""The real Kopf operator (kubeforge.operator.handlers) against the Kubernetes emulator and real S3.

Emulated: the Kubernetes API server (KubeEmulator: KMock's emulator over HTTP, see
kubeforge.testing.kube_emulator) and the Job controller (tests patch Job status and write the step's
result to the store, as a finished pod would). Kopf, the operator's handlers, its `kubernetes`
client calls and the SeaweedFS S3 store are real.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from kubeforge.testing.kube_objects import ApiError
from kubeforge.testing.kube_operator import (
    GV,
    SECRET,
    TRAINER,
    TRAINER_GPU,
    complete_job,
    condition,
    create_pod,
    dataset_version,
    ready_dataset_version,
    start_job,
    status_of,
    terminate_pod,
    training_job,
    wait_job,
    wait_phase,
)


@pytest.fixture
def op(kubeforge_operator: Any) -> dict[str, Any]:
    """The operator watching this test's namespace; its store is this test's S3 prefix."""
    return kubeforge_operator()


def test_dataset_version_gets_its_job_and_configmap_then_succeeds(op: dict[str, Any]) -> None:
    """A DatasetVersion: the ConfigMap and Job field by field, then Running, then Succeeded."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    owner = emu.create(dataset_version("shapes-v1", ns))
    job = wait_job(emu, ns, "shapes-v1")
    name = job["metadata"]["name"]
    meta = job["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubeforge"
    assert meta["labels"]["kubeforge.io/kind"] == "DatasetVersion"
    assert meta["ownerReferences"] == [{"apiVersion": "kubeforge.io/v1alpha1", "kind": "DatasetVersion",
                                        "name": "shapes-v1", "uid": owner["metadata"]["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == TRAINER
    assert container["command"][:3] == ["kubeforge", "step", "dataset-version"]
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    cm = emu.get("ConfigMap", name, ns)
    assert {"name": "run-spec", "configMap": {"name": name}} in pod["volumes"]
    run_text = cm["data"]["run.json"]
    assert isinstance(json.loads(run_text), dict)
    assert "s3://raw/shapes/" in run_text and store.uri in run_text  # the source and where to write
    assert op["secret"] not in cm["data"]["run.json"] and op["secret"] not in json.dumps(job)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    pending = wait_phase(emu, "DatasetVersion", "shapes-v1", ns, "Pending")
    assert condition(pending, "Ready")["reason"] in ("JobCreated", "JobPending")

    start_job(emu, job)
    wait_phase(emu, "DatasetVersion", "shapes-v1", ns, "Running")
    complete_job(emu, store, owner, job, {"digest": "a" * 64, "images": 12})
    done = wait_phase(emu, "DatasetVersion", "shapes-v1", ns, "Succeeded")
    assert done["digest"] == "a" * 64 and done["images"] == 12
    ready = condition(done, "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 1
    assert done["outputPrefix"] == f"datasets/shapes/{'a' * 64}"
    events = emu.list("Event", ns)
    assert {e["reason"] for e in events if e["involvedObject"]["name"] == "shapes-v1"} >= {"JobCreated"}


def test_training_job_waits_for_its_dataset_version_then_trains(op: dict[str, Any]) -> None:
    """WaitingForDatasetVersion until the DatasetVersion is Ready; then a GPU Job; then metrics."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    tj = emu.create(training_job("det", ns, "shapes-v1", resources={"gpu": 1}))
    waiting = emu.wait_for(lambda: condition(status_of(emu, "TrainingJob", "det", ns), "Ready"),
                           message="a Ready condition")
    assert (waiting["status"], waiting["reason"]) == ("False", "WaitingForDatasetVersion")
    assert emu.list("Job", ns, "kubeforge.io/name=det") == []
    ready_dataset_version(emu, store, "shapes-v1", ns)
    job = wait_job(emu, ns, "det")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == TRAINER_GPU
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"][:3] == ["kubeforge", "step", "train"]
    start_job(emu, job)
    wait_phase(emu, "TrainingJob", "det", ns, "Running")
    complete_job(emu, store, tj, job, {"metrics": {"accuracy": 0.91},
                                       "bestMetric": {"name": "accuracy", "value": 0.91, "epoch": 2}})
    done = wait_phase(emu, "TrainingJob", "det", ns, "Succeeded")
    assert done["bestMetric"] == {"name": "accuracy", "value": 0.91, "epoch": 2}
    assert done["metrics"]["accuracy"] == 0.91
    assert done["outputPrefix"].startswith(f"experiments/{ns}_shapes/det_torchvision")


def test_failed_job_reports_its_reason(op: dict[str, Any]) -> None:
    """An OOMKilled pod and its termination message reach the condition; no second Job."""
    emu, ns = op["emu"], op["ns"]
    emu.create(dataset_version("bad", ns))
    job = wait_job(emu, ns, "bad")
    name = job["metadata"]["name"]
    terminate_pod(emu, create_pod(emu, job), "OOMKilled", 137, "decoding 4000x3000 images")
    emu.patch_status("Job", name, {"failed": 3, "conditions": [{
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]}, ns)
    failed = wait_phase(emu, "DatasetVersion", "bad", ns, "Failed")
    ready = condition(failed, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "OOMKilled")
    assert "decoding 4000x3000 images" in ready["message"]
    assert len(emu.list("Job", ns)) == 1


def test_invalid_spec_fails_permanently(op: dict[str, Any]) -> None:
    """What the CRD schema refuses never reaches the operator; what only the API models refuse (one of
    datasetVersion or source) fails with InvalidSpec."""
    emu, ns = op["emu"], op["ns"]
    with pytest.raises(ApiError) as refused:
        emu.create(training_job("broken", ns, "x", hyperparameters={"epochs": -3}))
    assert refused.value.code == 422
    assert [c["field"] for c in refused.value.details["causes"]] == ["spec.hyperparameters.epochs"]
    emu.create(training_job("broken", ns, "x", source={"uri": "s3://raw/x/", "format": "coco", "dataset": "x"}))
    failed = wait_phase(emu, "TrainingJob", "broken", ns, "Failed")
    assert condition(failed, "Ready")["reason"] == "InvalidSpec"
    assert emu.list("Job", ns) == []


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_deletion_honours_the_artifact_policy(op: dict[str, Any], policy: str) -> None:
    """Delete removes what the resource wrote (output and run records); Retain keeps it all."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    digest = hashlib.sha256(ns.encode()).hexdigest()  # shared by no other DatasetVersion in the cluster
    status = ready_dataset_version(emu, store, "v", ns, digest=digest, artifactPolicy=policy)
    owner = emu.get("DatasetVersion", "v", ns)
    prefix = status["outputPrefix"]
    store.put_json(f"{prefix}/manifest.json", {"images": []})
    run_records = [k for k in store.list("runs/") if owner["metadata"]["uid"] in k]
    assert run_records
    job_name = emu.list("Job", ns)[0]["metadata"]["name"]
    emu.delete("DatasetVersion", "v", ns)
    emu.wait_for(lambda: emu.find("DatasetVersion", "v", ns) is None, message="the finalizer released")
    assert emu.find("Job", job_name, ns) is None  # garbage-collected through ownerReferences
    left = list(store.list(f"{prefix}/")) + [k for k in store.list("runs/") if owner["metadata"]["uid"] in k]
    assert (left == []) == (policy == "Delete"), left


def test_delete_keeps_data_another_version_shares(op: dict[str, Any]) -> None:
    """artifactPolicy Delete never removes a dataset version another DatasetVersion has too."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    digest = hashlib.sha256(f"shared-{ns}".encode()).hexdigest()
    status = ready_dataset_version(emu, store, "one", ns, digest=digest, artifactPolicy="Delete")
    ready_dataset_version(emu, store, "two", ns, digest=digest)
    store.put_json(f"{status['outputPrefix']}/manifest.json", {"images": []})
    emu.delete("DatasetVersion", "one", ns)
    emu.wait_for(lambda: emu.find("DatasetVersion", "one", ns) is None, message="the finalizer released")
    assert list(store.list(f"{status['outputPrefix']}/")) == [f"{status['outputPrefix']}/manifest.json"]


def test_delete_keeps_a_version_a_derived_version_names_among_its_parents(op: dict[str, Any]) -> None:
    """A derived version's `spec.parents` (not only an import's `spec.parent`) keeps its parents' data."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    first = ready_dataset_version(emu, store, "first", ns, digest=hashlib.sha256(f"1-{ns}".encode()).hexdigest())
    parent = ready_dataset_version(emu, store, "base", ns, digest=hashlib.sha256(f"2-{ns}".encode()).hexdigest(),
                                   artifactPolicy="Delete")
    emu.create({"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": "merged", "namespace": ns},
                "spec": {"dataset": "shapes", "parents": ["first", "base"], "operations": [{"merge": {}}]}})
    wait_job(emu, ns, "merged")  # the derived version's run started from both parents
    store.put_json(f"{parent['outputPrefix']}/manifest.json", {"images": []})
    emu.delete("DatasetVersion", "base", ns)
    emu.wait_for(lambda: emu.find("DatasetVersion", "base", ns) is None, message="the finalizer released")
    assert list(store.list(f"{parent['outputPrefix']}/")) == [f"{parent['outputPrefix']}/manifest.json"]
    assert first["outputPrefix"] != parent["outputPrefix"]


def test_reconciling_again_creates_nothing_new_and_a_restart_loses_nothing(op: dict[str, Any]) -> None:
    """Stop the operator mid-run, finish the Job while it is down, start a new one: it catches up."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    owner = emu.create(dataset_version("r", ns))
    job = wait_job(emu, ns, "r")
    cm = emu.get("ConfigMap", job["metadata"]["name"], ns)
    wait_phase(emu, "DatasetVersion", "r", ns, "Pending")
    op["thread"].stop()
    complete_job(emu, store, owner, job, {"digest": "b" * 64})
    assert status_of(emu, "DatasetVersion", "r", ns)["phase"] == "Pending"  # nobody is watching
    op["start"]()
    done = wait_phase(emu, "DatasetVersion", "r", ns, "Succeeded")
    assert done["digest"] == "b" * 64
    jobs, cms = emu.list("Job", ns), emu.list("ConfigMap", ns)
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    assert [c["metadata"]["uid"] for c in cms] == [cm["metadata"]["uid"]]


def test_a_run_whose_job_finished_and_expired_while_the_operator_was_down_succeeds(op: dict[str, Any]) -> None:
    """The Job completed and was removed (ttlSecondsAfterFinished) with no operator watching: the step's
    result in the store is what counts; without one the run fails as JobDeleted."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    done_owner, failed_owner = emu.create(dataset_version("kept", ns)), emu.create(dataset_version("lost", ns))
    done_job, lost_job = wait_job(emu, ns, "kept"), wait_job(emu, ns, "lost")
    wait_phase(emu, "DatasetVersion", "kept", ns, "Pending")
    wait_phase(emu, "DatasetVersion", "lost", ns, "Pending")
    op["thread"].stop()
    complete_job(emu, store, done_owner, done_job, {"digest": "c" * 64})
    for job in (done_job, lost_job):
        emu.delete("Job", job["metadata"]["name"], ns)
    op["start"]()
    assert wait_phase(emu, "DatasetVersion", "kept", ns, "Succeeded")["digest"] == "c" * 64
    lost = wait_phase(emu, "DatasetVersion", "lost", ns, "Failed")
    assert condition(lost, "Ready")["reason"] == "JobDeleted" and lost_job["metadata"]["name"] in lost["message"]
    assert emu.list("Job", ns) == []  # nothing re-created behind the user's back
    assert failed_owner["metadata"]["uid"] == emu.get("DatasetVersion", "lost", ns)["metadata"]["uid"]


def test_handler_progress_survives_schema_pruning(op: dict[str, Any]) -> None:
    """Kopf's progress must survive the CRD schema (the emulator prunes unknown fields as a cluster does).

    Were it kept in a pruned part of status, the handler would run again and again; here it runs
    once and Kopf's last-handled record stays on the object.
    """
    import time

    emu, ns, ctx = op["emu"], op["ns"], op["ctx"]
    emu.create(dataset_version("p", ns))
    wait_phase(emu, "DatasetVersion", "p", ns, "Pending")
    time.sleep(2)  # room for a retry loop to show itself
    count = ctx.metrics.reconciles.labels("DatasetVersion")._value.get()
    time.sleep(1.5)
    assert ctx.metrics.reconciles.labels("DatasetVersion")._value.get() == count
    assert count <= 2, f"the reconcile handler ran {count} times for one creation"
    annotations = emu.get("DatasetVersion", "p", ns)["metadata"].get("annotations") or {}
    assert any(k.endswith("last-handled-configuration") for k in annotations), annotations
