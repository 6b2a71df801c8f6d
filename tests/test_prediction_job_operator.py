"""A PredictionJob through the operator, with real step processes, end to end.

Real: the Kopf operator (in a thread), the Kubernetes API as the KMock-based emulator over HTTP (CRD
schemas and CEL rules, the chart's RBAC: the `kubeforge_operator` fixture fails the test on any RBAC
denial or refused write), every step (`kubeforge step …` as a subprocess from the Job's own command: a tiny
classifier trained for one epoch, then the predict step running its ONNX export), SeaweedFS as the store.
A DatasetVersion derived from the predictions (`parents: [PredictionJob/...]`, `filter: {minScore}`) is
created with the rest: it waits for the PredictionJob, then is built by its own Job.
Nothing is written into a status by the test.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.datasets.operations import score_of
from kubeforge.datasets.versions import load_manifest
from kubeforge.predict import to_dataset
from kubeforge.store import layout
from kubeforge.testing.kube_operator import GV, condition, status_of, wait_phase
from tests import test_gate_operator

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.triton]  # the shared fixture starts a pod runner
# that can serve (triton_backend_dir), as in the gate test
cluster = test_gate_operator.cluster  # the gate test's fixture: operator, SeaweedFS, pod runner, synthetic images
MIN_SCORE = 0.45  # the reviewed version's bar: a one-epoch classifier's scores (0.37-0.55 here) fall either side


def manifests(ns: str, source: str) -> list[dict[str, Any]]:
    meta = {"namespace": ns}
    return [
        {"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": "shapes-cls", **meta},
         "spec": {"dataset": "shapes-cls", "source": {"uri": source, "format": "imagefolder"}}},
        {"apiVersion": GV, "kind": "TrainingJob", "metadata": {"name": "clf", **meta},
         "spec": {"datasetVersion": "shapes-cls", "task": "classification",
                  "split": {"trainPercent": 50, "seed": 1}, "hyperparameters": {"epochs": 1, "batchSize": 8},
                  "export": ["onnx"], "benchmark": {"enabled": False},
                  "model": {"name": "resnet18", "imageSize": 32}}},
        {"apiVersion": GV, "kind": "PredictionJob", "metadata": {"name": "shapes-predicted", **meta},
         "spec": {"model": {"trainingJob": "clf"}, "input": {"datasetVersion": "shapes-cls"},
                  "backoffLimit": 1}},
        {"apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": "shapes-reviewed", **meta},
         "spec": {"dataset": "shapes-reviewed", "parents": ["PredictionJob/shapes-predicted"],
                  "operations": [{"filter": {"minScore": MIN_SCORE, "minAnnotations": 1}}]}},
    ]


def test_a_prediction_job_runs_as_a_job_and_records_its_version(cluster: dict[str, Any]) -> None:
    emu, ns, store = cluster["emu"], cluster["ns"], cluster["store"]
    for doc in manifests(ns, cluster["source"]):
        emu.create(doc)

    status = wait_phase(emu, "PredictionJob", "shapes-predicted", ns, "Succeeded", timeout=300, fail_fast=True)
    dsv = status_of(emu, "DatasetVersion", "shapes-cls", ns)
    job = status_of(emu, "TrainingJob", "clf", ns)

    # The step ran as a batch/v1 Job the operator made (its own command, run by the pod runner).
    [batch] = emu.list("Job", ns, "kubeforge.io/name=shapes-predicted")
    assert batch["spec"]["backoffLimit"] == 1
    assert any(job_name == batch["metadata"]["name"] and code == 0
               for job_name, _, code in cluster["runner"].finished)

    # Status: what predicted on what, the progress, the output version and its parent.
    assert status["model"] == f"TrainingJob/clf run {job['runId']}" and status["input"] == "DatasetVersion/shapes-cls"
    assert (status["trainingJob"], status["trainingRun"]) == ("clf", job["runId"])
    progress = status["progress"]
    n = dsv["stats"]["images"]
    assert n > 0 and progress["done"] == progress["total"] == status["images"] == n
    assert progress["summary"].startswith(f"{n}/{n}")
    assert status["dataset"] == "shapes-predicted" and len(status["digest"]) == 64
    assert status["parents"] == [{"name": "shapes-cls", "dataset": "shapes-cls", "digest": dsv["digest"]}]
    assert status["threshold"] == 0.5 and "no Benchmark" in status["thresholdSource"]
    assert status["resumed"] == 0 and status["predictionsUri"].endswith("/predictions.jsonl")
    assert condition(status, "Ready").get("status") == "True"

    # The store: the version, every image labelled with a score, its source record naming the parent.
    manifest = load_manifest(store, "shapes-predicted", status["digest"])
    parent = load_manifest(store, "shapes-cls", dsv["digest"])
    assert [im.file_name for im in manifest.images] == [im.file_name for im in parent.images]
    assert [im.blob for im in manifest.images] == [im.blob for im in parent.images]
    assert all(im.category_id is not None and any(t.startswith("score=") for t in im.tags)
               for im in manifest.images)
    source = to_dataset.read_source(store, "shapes-predicted", status["digest"])
    assert source is not None and source["parents"][0]["digest"] == dsv["digest"]
    assert source["model"]["trainingJob"] == "clf" and source["model"]["run"] == job["runId"]
    assert source["predictionJob"]["name"] == "shapes-predicted"
    assert status["manifestUri"].endswith(layout.dataset_manifest_key("shapes-predicted", status["digest"]))


    check_the_reviewed_version(cluster)


def check_the_reviewed_version(cluster: dict[str, Any]) -> None:
    """The version derived from the predictions (created with the rest, so it waited) keeps the confident ones."""
    emu, ns, store = cluster["emu"], cluster["ns"], cluster["store"]

    reviewed = wait_phase(emu, "DatasetVersion", "shapes-reviewed", ns, "Succeeded", timeout=300, fail_fast=True)
    predicted = status_of(emu, "PredictionJob", "shapes-predicted", ns)
    parent = {"name": "PredictionJob/shapes-predicted", "dataset": "shapes-predicted", "digest": predicted["digest"]}
    assert reviewed["parents"] == [parent] and reviewed["lineage"]["parents"] == [parent]
    [batch] = emu.list("Job", ns, "kubeforge.io/name=shapes-reviewed")  # its own step, run as a Job
    assert any(job_name == batch["metadata"]["name"] and code == 0 for job_name, _, code in cluster["runner"].finished)

    # Exactly the predictions at or above the bar, with their scores; the others' images left out.
    scores = {im.file_name: score_of(im.tags)
              for im in load_manifest(store, "shapes-predicted", predicted["digest"]).images}
    confident = sorted(name for name, score in scores.items() if score is not None and score >= MIN_SCORE)
    assert 0 < len(confident) < len(scores), scores  # the bar splits them, so the filter is what decides
    manifest = load_manifest(store, "shapes-reviewed", reviewed["digest"])
    assert sorted(im.file_name for im in manifest.images) == confident
    assert all(im.category_id is not None and score_of(im.tags) == scores[im.file_name] for im in manifest.images)
    assert reviewed["stats"]["images"] == len(confident)
    assert reviewed["changes"]["imagesRemoved"] == len(scores) - len(confident)

    # The PredictionJob changes (its output is another dataset: a new run, a new digest); the operator
    # rebuilds the derived version on it when the PredictionJob succeeds again.
    emu.patch("PredictionJob", "shapes-predicted", {"spec": {"output": {"dataset": "shapes-predicted-2"}}}, ns)

    def moved() -> dict[str, Any] | None:
        status = status_of(emu, "PredictionJob", "shapes-predicted", ns)
        return status if status.get("phase") == "Succeeded" and status.get("dataset") == "shapes-predicted-2" \
            else None

    again = emu.wait_for(moved, timeout=300, interval=0.3, message="PredictionJob's second run Succeeded")
    assert again["digest"] != predicted["digest"]
    parent = {"name": "PredictionJob/shapes-predicted", "dataset": "shapes-predicted-2", "digest": again["digest"]}
    rebuilt = emu.wait_for(lambda: (s := status_of(emu, "DatasetVersion", "shapes-reviewed", ns)).get("parents")
                           == [parent] and s.get("phase") == "Succeeded" and s, timeout=300, interval=0.3,
                           message="shapes-reviewed rebuilt on the new predictions")
    assert sorted(im.file_name for im in load_manifest(store, "shapes-reviewed", rebuilt["digest"]).images) == confident
    assert len(emu.list("Job", ns, "kubeforge.io/name=shapes-reviewed")) == 2
