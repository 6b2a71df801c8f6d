"""Admission in the Kubernetes emulator: what an API server refuses, it refuses, in the same words.

Custom resources against their CRD's openAPIV3Schema (types, enums, ranges, patterns, required
fields, unknown fields pruned or refused, CEL rules, defaults), built-in kinds against the
Kubernetes 1.31 OpenAPI schemas and the hand-written rules of kube-apiserver that catch operator
bugs (names, labels, Job and Deployment rules). And the operator's own builders pass.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from kubeforge.api import parse_resource
from kubeforge.operator import builders as b
from kubeforge.operator import builders_serving as bs
from kubeforge.operator.settings import OperatorSettings
from kubeforge.steps import runs
from kubeforge.steps.spec import DatasetRef
from kubeforge.testing import core_schema
from kubeforge.testing.kube_emulator import KubeEmulator
from kubeforge.testing.kube_objects import ApiError
from kubeforge.testing.kube_operator import dataset_version, training_job

NS = "ml"
MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.apply_crds("crds")
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield emulator


def refused(emu: KubeEmulator, obj: dict[str, Any], query: str = "") -> dict[str, Any]:
    """POST `obj`; the Status body of the refusal (the test fails if it was accepted)."""
    status, body = emu.request("POST", emu.path(emu.resource(obj["kind"], obj["apiVersion"]), NS) + query, obj)
    assert status >= 400, f"accepted: {json.dumps(obj)[:300]}"
    return {**body, "http": status}


def causes(body: dict[str, Any]) -> dict[str, str]:
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


# --- custom resources: the CRD schema ---------------------------------------------------------


def test_an_out_of_range_value_is_422_naming_the_field(emu: KubeEmulator) -> None:
    body = refused(emu, training_job("zero", NS, "d", hyperparameters={"epochs": 0}))
    assert (body["http"], body["code"], body["reason"]) == (422, 422, "Invalid")
    assert body["message"] == ('TrainingJob.kubeforge.io "zero" is invalid: spec.hyperparameters.epochs: '
                               'Invalid value: 0: spec.hyperparameters.epochs in body should be greater than or '
                               'equal to 1')
    assert body["details"] == {"name": "zero", "group": "kubeforge.io", "kind": "TrainingJob", "causes": [
        {"reason": "FieldValueInvalid", "field": "spec.hyperparameters.epochs",
         "message": "Invalid value: 0: spec.hyperparameters.epochs in body should be greater than or equal to 1"}]}
    assert emu.find("TrainingJob", "zero", NS) is None


def test_every_openapi_keyword_is_enforced_and_all_errors_are_reported(emu: KubeEmulator) -> None:
    obj = training_job("bad", NS, "d", task="painting", classes=[], split={"trainPercent": 100},
                       model={"name": "r", "framework": "keras", "imageSize": "big"},
                       serviceAccountName="Bad_Name", queueName="q" * 64)
    body = refused(emu, obj)
    assert body["message"].startswith('TrainingJob.kubeforge.io "bad" is invalid: [')
    assert causes(body) == {
        "spec.classes": "Invalid value: 0: spec.classes in body should have at least 1 items",
        "spec.model.framework": 'Unsupported value: "keras": supported values: "torchvision", "timm", "smp", '
                                    '"custom"',
        "spec.model.imageSize": 'Invalid value: "string": spec.model.imageSize in body must be of type integer: '
                                '"string"',
        "spec.split.trainPercent": "Invalid value: 100: spec.split.trainPercent in body should be less than 100",
        "spec.task": 'Unsupported value: "painting": supported values: "classification", "object-detection", '
                     '"instance-segmentation", "semantic-segmentation"',
        "spec.serviceAccountName": "Invalid value: \"Bad_Name\": spec.serviceAccountName in body should match "
                                   "'^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'",
        "spec.queueName": "Too long: may not be longer than 63",
    }
    missing = training_job("nospec", NS, "d")
    del missing["spec"]["task"]
    assert causes(refused(emu, missing)) == {"spec.task": "Required value"}
    assert causes(refused(emu, {**missing, "spec": None})) == {"spec": "Required value"}


def test_unknown_fields_are_pruned_warned_or_refused_as_field_validation_says(emu: KubeEmulator) -> None:
    obj = training_job("typo", NS, "d", hyperparameters={"epochs": 3, "epoch": 4})
    body = refused(emu, obj, "?fieldValidation=Strict")
    assert (body["http"], body["reason"]) == (400, "BadRequest")
    assert body["message"] == ('TrainingJob in version "v1alpha1" cannot be handled as a TrainingJob: strict '
                               'decoding error: unknown field "spec.hyperparameters.epoch"')
    path = emu.path(emu.resource("TrainingJob"), NS)
    request = urllib.request.Request(emu.url + path, data=json.dumps(obj).encode(), method="POST", headers={
        "Authorization": f"Bearer {emu.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as rsp:  # the default, Warn: accepted, with a Warning header
        assert rsp.status == 201
        assert rsp.headers.get_all("Warning") == ['299 - "unknown field \\"spec.hyperparameters.epoch\\""']
    assert emu.get("TrainingJob", "typo", NS)["spec"]["hyperparameters"]["epochs"] == 3
    assert "epoch" not in emu.get("TrainingJob", "typo", NS)["spec"]["hyperparameters"]
    status, _ = emu.request("PATCH", emu.path(emu.resource("TrainingJob"), NS, "typo") + "?fieldValidation=Strict",
                            {"spec": {"sorce": 1}}, MERGE)
    assert status == 400
    assert emu.request("POST", path + "?fieldValidation=Sloppy", obj)[0] == 400


def test_schema_defaults_are_applied_as_the_api_server_applies_them(emu: KubeEmulator) -> None:
    created = emu.create(training_job("defaults", NS, "d", hyperparameters={"batchSize": 2}, split=None))
    spec = created["spec"]
    assert spec["hyperparameters"] == {"epochs": 10, "batchSize": 2, "numWorkers": 0, "gradientAccumulation": 1,
                                       "mixedPrecision": False, "channelsLast": False,
                                       "deterministic": False}  # inside what exists
    assert spec["model"] == {"framework": "torchvision", "name": "resnet18", "pretrained": False,
                             "freezeEncoder": False}
    assert "split" not in spec and "optimizer" not in spec["hyperparameters"]  # null dropped; no parent, no default
    assert (spec["artifactPolicy"], spec["suspend"]) == ("Retain", False)
    # Re-applying the manifest without the defaults changes nothing (same generation).
    again = emu.patch("TrainingJob", "defaults", {"spec": {"hyperparameters": {"batchSize": 2}}}, NS)
    assert again["metadata"]["generation"] == 1
    status = emu.patch_status("TrainingJob", "defaults", {"observedGeneration": 1}, NS)["status"]
    assert (status["phase"], status["message"]) == ("Pending", "")  # status defaults too


def test_updates_and_patches_of_every_kind_are_validated(emu: KubeEmulator) -> None:
    emu.create(training_job("upd", NS, "d"))
    path = emu.path(emu.resource("TrainingJob"), NS, "upd")
    current = emu.get("TrainingJob", "upd", NS)
    bad = copy.deepcopy(current)
    bad["spec"]["hyperparameters"]["batchSize"] = 0
    assert emu.request("PUT", path, bad)[0] == 422
    assert emu.request("PATCH", path, {"spec": {"distributed": {"nodes": 0}}}, MERGE)[0] == 422
    ops = [{"op": "replace", "path": "/spec/hyperparameters/epochs", "value": -1}]
    assert emu.request("PATCH", path, ops, "application/json-patch+json")[0] == 422
    assert emu.get("TrainingJob", "upd", NS)["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]


def test_a_status_the_crd_forbids_is_refused(emu: KubeEmulator) -> None:
    emu.create(training_job("st", NS, "d"))
    with pytest.raises(ApiError) as error:
        emu.patch_status("TrainingJob", "st", {"phase": "Succeeded", "bestMetric": {"name": "accuracy", "value": 0.9}},
                         NS)
    assert error.value.code == 422 and error.value.details["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "status.bestMetric.epoch"}]
    with pytest.raises(ApiError, match=r"status\.phase: Unsupported value: \"Done\""):
        emu.patch_status("TrainingJob", "st", {"phase": "Done"}, NS)
    ok = emu.patch_status("TrainingJob", "st", {"phase": "Succeeded", "kopf": {"progress": {}},
                                                "bestMetric": {"name": "accuracy", "value": 0.9, "epoch": 3}}, NS)
    assert ok["status"]["kopf"] == {"progress": {}}  # status preserves unknown fields (Kopf's)
    # A status write does not re-judge spec, and a spec write does not re-judge status (ratcheting).
    assert emu.patch("TrainingJob", "st", {"metadata": {"labels": {"a": "b"}}}, NS)["metadata"]["labels"] == {"a": "b"}


def test_cel_rules_transition_rules_included(emu: KubeEmulator) -> None:
    emu.create(dataset_version("imm", NS))
    with pytest.raises(ApiError) as error:
        emu.patch("DatasetVersion", "imm", {"spec": {"parent": "imm-0"}}, NS)
    assert error.value.code == 422
    assert error.value.message == ('DatasetVersion.kubeforge.io "imm" is invalid: spec: Invalid value: "object": '
                                   "spec is immutable")
    assert error.value.details["causes"][0]["field"] == "spec"
    emu.patch("DatasetVersion", "imm", {"metadata": {"labels": {"team": "vision"}}}, NS)  # metadata: fine
    emu.patch_status("DatasetVersion", "imm", {"phase": "Running"}, NS)  # status: fine
    emu.create(dataset_version("imm2", NS, parent="imm"))  # creating with any spec: no oldSelf, no check


# --- built-in kinds: the Kubernetes 1.31 schemas and kube-apiserver's rules -------------------------


def job(name: str = "j", **pod: Any) -> dict[str, Any]:
    spec = {"restartPolicy": "Never", "containers": [{"name": "step", "image": "trainer:t"}], **pod}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"template": {"spec": spec}}}


def test_a_malformed_job_is_refused_as_a_cluster_refuses_it(emu: KubeEmulator) -> None:
    body = refused(emu, job(restartPolicy="Always"))
    assert body["http"] == 422 and body["message"] == (
        'Job.batch "j" is invalid: spec.template.spec.restartPolicy: Unsupported value: "Always": supported '
        'values: "OnFailure", "Never"')
    nameless = job()
    del nameless["spec"]["template"]["spec"]["containers"][0]["name"]
    assert "spec.template.spec.containers[0].name" in causes(refused(emu, nameless))
    mounts = job(containers=[{"name": "s", "image": "i", "volumeMounts": [{"name": "run", "mountPath": "/r"}]}])
    assert causes(refused(emu, mounts)) == {"spec.template.spec.containers[0].volumeMounts[0].name": 'Not found: "run"'}
    typed = job()
    typed["spec"]["backoffLimit"] = "three"
    body = refused(emu, typed)
    assert body["http"] == 400 and "cannot be handled as a Job" in body["message"]
    assert refused(emu, job(name="x" * 64))["details"]["causes"][0]["field"] == "metadata.name"
    labelled = job(name="lab")
    labelled["metadata"]["labels"] = {"kubeforge.io/name": "y" * 64}
    assert causes(refused(emu, labelled)) == {
        "metadata.labels": f'Invalid value: "{"y" * 64}": must be no more than 63 characters'}
    unknown = job(name="unk")
    unknown["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Never"
    assert refused(emu, unknown, "?fieldValidation=Strict")["message"].endswith(
        'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolcy"')
    stored = emu.create(unknown)  # Warn: dropped
    assert "imagePullPolcy" not in stored["spec"]["template"]["spec"]["containers"][0]


def test_deployments_services_and_configmaps_are_validated(emu: KubeEmulator) -> None:
    template = {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": NS},
                  "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template}}
    assert causes(refused(emu, deployment)) == {
        "spec.template.metadata.labels": 'Invalid value: "object": `selector` does not match template `labels`'}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1-triton", "namespace": NS},
               "spec": {"ports": [{"port": 8000}]}}
    assert "metadata.name" in causes(refused(emu, service))
    no_port = {**service, "metadata": {"name": "triton", "namespace": NS}, "spec": {"ports": [{"name": "http"}]}}
    assert causes(refused(emu, no_port)) == {"spec.ports[0].port": "Required value"}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": NS},
                 "data": {"run.json": {"not": "a string"}}}
    assert refused(emu, configmap)["http"] == 400


# --- the operator's builders make what a cluster accepts -----------------------------------------


def builder_objects() -> list[dict[str, Any]]:
    settings = OperatorSettings(store="s3://bucket/pre", s3_endpoint="minio:9000", store_secret="store-creds",
                                step_service_account="kubeforge-step", job_active_deadline_seconds=3600)
    data = DatasetRef(dataset="shapes", digest="a" * 64)
    objects: list[dict[str, Any]] = []

    def res(kind: str, name: str, spec: dict[str, Any]) -> Any:
        return parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": kind, "metadata": {
            "name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1}, "spec": spec})

    dsv = res("DatasetVersion", "shapes-v1", {"dataset": "shapes", "source": {"uri": "s3://raw/", "format": "coco"}})
    objects += b.step_objects(dsv, runs.dataset_version_run(dsv, settings.store, None), settings)
    for name, extra in (("det", {}), ("y" * 63, {"distributed": {"nodes": 3, "processesPerNode": 2},
                                                 "resources": {"gpu": 2}, "tolerations": [{"key": "gpu"}]})):
        tj = res("TrainingJob", name, {"datasetVersion": "shapes-v1", "task": "object-detection",
                                       "model": {"name": "ssdlite320_mobilenet_v3_large"}, **extra})
        objects += b.step_objects(tj, runs.train_run(tj, settings.store, data), settings)
    isvc = res("InferenceService", "shapes", {"model": {"trainingJob": "det"}, "replicas": 2})
    objects += b.step_objects(isvc, runs.serve_run(isvc, settings.store, "experiments/x", "abcdef1234"), settings)
    objects += [bs.triton_deployment(isvc, settings, "rev1"), bs.triton_service(isvc)]
    return objects


def test_every_object_the_operator_builds_is_accepted_strictly(emu: KubeEmulator) -> None:
    objects = builder_objects()
    assert {o["kind"] for o in objects} == {"ConfigMap", "Job", "Service", "Deployment"}
    for obj in objects:
        rt = emu.resource(obj["kind"], obj["apiVersion"])
        status, body = emu.request("POST", emu.path(rt, NS) + "?fieldValidation=Strict", obj)
        assert status == 201, (obj["kind"], obj["metadata"]["name"], body.get("message"))


# --- the fast validity check agrees with jsonschema --------------------------------------------


MUTATIONS = [
    ("spec.backoffLimit", "3"), ("spec.completions", 1.5), ("spec.template.spec.containers", {}),
    ("spec.template.spec.containers.0.ports", [{"containerPort": "80"}]), ("spec.template.spec.containers.0", 7),
    ("spec.template.spec.containers.0.resources.limits", {"cpu": 1}), ("spec.template.spec.containers.0.bogus", 1),
    ("spec.template.spec.containers.0.env", [{"value": "x"}]), ("spec.template.spec.volumes", [{"name": "v"}]),
    ("spec.template.spec.containers.0.resources.limits", {"cpu": "1", "memory": 2}), ("metadata.labels", {"a": 1}),
    ("spec.suspend", None), ("spec.podFailurePolicy", {"rules": [{"action": "Nope"}]}), ("status.active", True),
]


def _set(obj: Any, path: str, value: Any) -> Any:
    *parents, last = path.split(".")
    for part in parents:
        obj = obj[int(part)] if isinstance(obj, list) else obj.setdefault(part, {})
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


@pytest.mark.parametrize(("path", "value"), MUTATIONS, ids=[f"{p}={v!r}" for p, v in MUTATIONS])
def test_the_fast_check_agrees_with_jsonschema(path: str, value: Any) -> None:
    fast, slow = core_schema.validator("batch/v1", "Job")
    obj = next(o for o in builder_objects() if o["kind"] == "Job")
    assert fast(obj) and not list(slow.iter_errors(obj))
    _set(obj, path, value)
    assert fast(obj) == (not list(slow.iter_errors(obj)))


def test_a_refused_write_changes_nothing(emu: KubeEmulator) -> None:
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(emu.url + emu.path(emu.resource("Job"), NS, "none"))  # anonymous: 403
    before = len(emu.list("Job", NS))
    refused(emu, job(name="nope", restartPolicy="Always"))
    assert len(emu.list("Job", NS)) == before


def test_a_changed_crd_schema_applies_to_new_writes_and_to_what_is_stored() -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.demo.io"},
           "spec": {"group": "demo.io", "scope": "Namespaced",
                    "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "properties": {
                            "size": {"type": "integer"}}}}}}}]}}
    with KubeEmulator() as emu:
        emu.create(crd)
        emu.create({"apiVersion": "demo.io/v1", "kind": "Gadget", "metadata": {"name": "g", "namespace": NS},
                    "spec": {"size": 5}})
        props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        props["size"]["maximum"] = 3
        props["color"] = {"type": "string", "default": "red"}
        emu.patch("CustomResourceDefinition", "gadgets.demo.io", {"spec": crd["spec"]}, None)
        assert emu.get("Gadget", "g", NS)["spec"] == {"size": 5, "color": "red"}  # defaulted on read
        with pytest.raises(ApiError, match=r"spec\.size in body should be less than or equal to 3"):
            emu.patch("Gadget", "g", {"spec": {"size": 4}}, NS)


def test_refused_writes_are_recorded_per_user(emu: KubeEmulator) -> None:
    before = len(emu.rejected_writes())
    refused(emu, job(name="rec", restartPolicy="Always"))
    (user, request, message), = emu.rejected_writes()[before:]
    assert user.name == "kubernetes-admin" and request.startswith("POST /apis/batch/v1/namespaces/ml/jobs")
    assert "restartPolicy" in message
