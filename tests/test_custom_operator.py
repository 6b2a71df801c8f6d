"""Custom models in a cluster: the TrainingJob is admitted with its free-form parameters, and its
training Job runs the model's own image (checked by the emulator's strict admission)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeforge.api import parse_resource
from kubeforge.api.training_job import TrainingJob
from kubeforge.operator import builders as b
from kubeforge.operator.settings import OperatorSettings
from kubeforge.steps import runs
from kubeforge.steps.spec import DatasetRef
from kubeforge.testing.kube_emulator import KubeEmulator

NS = "ml"
DATA = DatasetRef(dataset="shapes-cls", digest="b" * 64)
SETTINGS = OperatorSettings(store="s3://bucket/pre", s3_endpoint="minio:9000", store_secret="store-creds",
                            trainer_image="trainer:cpu", trainer_gpu_image="trainer:cuda")
PARAMETERS = {"epochs": 3, "lr": 0.005, "schedule": {"milestones": [2, 4], "gamma": 0.5}, "snake_case_key": True}


def custom_job(name: str = "tiny", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            "spec": {"datasetVersion": "shapes-cls-v1", "task": "classification",
                     "model": {"framework": "custom", "name": "tinycnn", "image": "registry.example/tinycnn:0.1.0",
                               "entrypoint": "tinycnn", "parameters": PARAMETERS}, **spec}}


def job_image(body: dict[str, Any]) -> str:
    res = parse_resource(body)
    assert isinstance(res, TrainingJob)
    job = b.step_job(res, runs.train_run(res, SETTINGS.store, DATA), SETTINGS)
    return str(job["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_custom_model_trains_in_its_own_image() -> None:
    assert job_image(custom_job()) == "registry.example/tinycnn:0.1.0"
    # Its image is the GPU image too: the user builds it FROM whichever trainer image they need.
    assert job_image(custom_job(resources={"gpu": 1})) == "registry.example/tinycnn:0.1.0"
    builtin = custom_job()
    builtin["spec"]["model"] = {"name": "resnet18"}
    assert job_image(builtin) == "trainer:cpu"


def test_the_run_spec_carries_entrypoint_and_parameters() -> None:
    res = parse_resource(custom_job())
    assert isinstance(res, TrainingJob)
    run = runs.train_run(res, SETTINGS.store, DATA)
    model = run.spec.model
    assert (model.entrypoint, model.parameters) == ("tinycnn", PARAMETERS)
    # A changed parameter is a new run (and so a new Job).
    other = custom_job()
    other["spec"]["model"]["parameters"] = {**PARAMETERS, "lr": 0.01}
    res2 = parse_resource(other)
    assert isinstance(res2, TrainingJob)
    assert runs.train_run(res2, SETTINGS.store, DATA).run_id != run.run_id


@pytest.fixture(scope="module")
def emu(kube_emulator: KubeEmulator) -> KubeEmulator:
    kube_emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kube_emulator


def test_the_api_server_keeps_free_form_parameters_and_admits_the_job(emu: KubeEmulator) -> None:
    body = custom_job("tiny-admitted")
    for meta_field in ("uid", "generation"):
        body["metadata"].pop(meta_field)
    status, created = emu.request("POST", emu.path(emu.resource("TrainingJob", "kubeforge.io/v1alpha1"), NS)
                                  + "?fieldValidation=Strict", body)
    assert status == 201, created.get("message")
    # x-kubernetes-preserve-unknown-fields: nested user keys survive admission and pruning as written.
    assert created["spec"]["model"]["parameters"] == PARAMETERS
    res = parse_resource(created)
    assert isinstance(res, TrainingJob)
    for obj in b.step_objects(res, runs.train_run(res, SETTINGS.store, DATA), SETTINGS):
        rt = emu.resource(obj["kind"], obj["apiVersion"])
        status, answer = emu.request("POST", emu.path(rt, NS) + "?fieldValidation=Strict", obj)
        assert status == 201, (obj["kind"], answer.get("message"))


def test_an_entrypoint_that_is_no_name_or_import_path_is_refused_by_the_crd(emu: KubeEmulator) -> None:
    body = custom_job("tiny-bad")
    body["metadata"] = {"name": "tiny-bad"}
    body["spec"]["model"]["entrypoint"] = "rm -rf /"
    status, answer = emu.request("POST", emu.path(emu.resource("TrainingJob", "kubeforge.io/v1alpha1"), NS), body)
    assert status == 422 and "spec.model.entrypoint" in answer["message"], answer
