"""Lifecycle paths of the real Kopf operator beyond the basic flows of test_operator_handlers.py.

Emulated: the Kubernetes API server (KubeEmulator: KMock's emulator over HTTP, pruning custom
resources by their CRD schema as a real server does) and every controller: nothing runs pods, so a
test plays the Job controller (patches Job status, writes the step's result to the store at
`layout.run_result_key`), the Deployment controller (patches `readyReplicas`) and the trainer
(writes `progress.json`). Kopf, the operator's handlers, its client calls and the SeaweedFS S3
store are real.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kubeforge.testing.kube_operator import (
    GV,
    SECRET,
    complete_job,
    condition,
    ready_dataset_version,
    start_job,
    status_of,
    training_job,
    wait_job,
    wait_phase,
)

TRITON = "registry.test/tritonserver:t"


@pytest.fixture
def op(kubeforge_operator: Any) -> dict[str, Any]:
    """The operator watching this test's namespace (progress timer every 0.2 s)."""
    return kubeforge_operator(triton_image=TRITON, progress_interval_seconds=0.2)


def trained(op: dict[str, Any], name: str, dsv: str = "data", **spec: Any) -> dict[str, Any]:
    """A TrainingJob taken through its real flow to Succeeded; returns its body."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    if emu.find("DatasetVersion", dsv, ns) is None:
        ready_dataset_version(emu, store, dsv, ns)
    owner = emu.create(training_job(name, ns, dsv, **spec))
    job = wait_job(emu, ns, name)
    complete_job(emu, store, owner, job, {"metrics": {"accuracy": 0.9},
                                          "bestMetric": {"name": "accuracy", "value": 0.9, "epoch": 1}})
    wait_phase(emu, "TrainingJob", name, ns, "Succeeded")
    return emu.get("TrainingJob", name, ns)


def inference_service(name: str, ns: str, model: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "InferenceService", "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"trainingJob": model}, **spec}}


def serve_jobs(emu: Any, ns: str, name: str) -> list[dict[str, Any]]:
    return [j for j in emu.list("Job", ns, f"kubeforge.io/name={name}")
            if j["metadata"]["labels"]["kubeforge.io/kind"] == "InferenceService"]


def complete_serve_job(op: dict[str, Any], name: str, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Wait for a serve Job not in `exclude`, write the serve step's result and complete it."""
    emu, ns = op["emu"], op["ns"]
    job = emu.wait_for(lambda: [j for j in serve_jobs(emu, ns, name) if j["metadata"]["name"] not in exclude],
                       message=f"a new serve Job of {name}")[0]
    owner = emu.get("InferenceService", name, ns)
    complete_job(emu, op["store"], owner, job, {"modelName": name})
    return job


def template_hash(dep: dict[str, Any]) -> str:
    return dep["spec"]["template"]["metadata"]["annotations"]["kubeforge.io/model-hash"]


def test_inference_service_end_to_end(op: dict[str, Any]) -> None:
    """TrainingJob Succeeded -> serve Job -> Triton Deployment + Service -> ready with a url;
    a model/runtime change rolls the Deployment (new template hash), a replica change does not."""
    emu, ns, settings = op["emu"], op["ns"], op["settings"]
    trained(op, "clf")
    emu.create(inference_service("svc", ns, "clf"))
    job = complete_serve_job(op, "svc")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["kubeforge", "step", "serve"]

    dep = emu.wait_for(lambda: emu.find("Deployment", "svc", ns), message="the Triton Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == TRITON
    bucket_prefix = op["store"].uri.removeprefix("s3://")
    repo = f"s3://{settings.s3_endpoint.removeprefix('http://')}/{bucket_prefix}/serving/{ns}_svc/onnxruntime"
    assert f"--model-repository={repo}" in container["args"]
    assert "--model-control-mode=explicit" in container["args"] and "--load-model=svc" in container["args"]
    assert sorted(p["containerPort"] for p in container["ports"]) == [8000, 8001, 8002]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert op["secret"] not in json.dumps(dep) and op["access"] not in json.dumps(dep)
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    svc = emu.get("Service", "svc", ns)
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {("http", 8000), ("grpc", 8001),
                                                                       ("metrics", 8002)}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert status_of(emu, "InferenceService", "svc", ns).get("ready") is False

    # Play the Deployment controller: its pods pass /v2/health/ready.
    emu.patch_status("Deployment", "svc", {"observedGeneration": dep["metadata"]["generation"], "replicas": 1,
                                           "readyReplicas": 1, "updatedReplicas": 1}, ns)
    ready = emu.wait_for(lambda: (s := status_of(emu, "InferenceService", "svc", ns)).get("ready") is True and s,
                         message="InferenceService ready")
    assert ready["url"] == f"http://svc.{ns}.svc:8000"
    assert condition(ready, "Ready")["status"] == "True"
    first_hash = template_hash(dep)

    # Replicas only: patched in place, same template hash, no new serve Job.
    jobs_before = {j["metadata"]["name"] for j in serve_jobs(emu, ns, "svc")}
    emu.patch("InferenceService", "svc", {"spec": {"replicas": 3}}, ns)
    scaled = emu.wait_for(lambda: (d := emu.get("Deployment", "svc", ns))["spec"]["replicas"] == 3 and d,
                          message="replicas 3")
    assert template_hash(scaled) == first_hash
    time.sleep(1.0)  # room for a (wrong) new serve run to show up
    assert {j["metadata"]["name"] for j in serve_jobs(emu, ns, "svc")} == jobs_before
    assert status_of(emu, "InferenceService", "svc", ns)["ready"] is False  # 1 of 3 ready

    # A runtime change is a new serve run; once it completes, the template hash changes (a rollout).
    emu.patch("InferenceService", "svc", {"spec": {"runtime": {"maxBatchSize": 4}}}, ns)
    complete_serve_job(op, "svc", exclude=frozenset(jobs_before))
    rolled = emu.wait_for(lambda: template_hash(d := emu.get("Deployment", "svc", ns)) != first_hash and d,
                          message="a new template hash")
    assert rolled["spec"]["replicas"] == 3
    emu.wait_for(lambda: len(serve_jobs(emu, ns, "svc")) == 1, message="the old serve Job deleted")

    # A different model (another TrainingJob): a new hash again.
    trained(op, "clf2")
    second_hash = template_hash(rolled)
    before = {j["metadata"]["name"] for j in serve_jobs(emu, ns, "svc")}
    emu.patch("InferenceService", "svc", {"spec": {"model": {"trainingJob": "clf2"}}}, ns)
    complete_serve_job(op, "svc", exclude=frozenset(before))
    emu.wait_for(lambda: template_hash(emu.get("Deployment", "svc", ns)) not in (first_hash, second_hash),
                 message="a third template hash")


def test_progress_timer_mirrors_progress_json(op: dict[str, Any]) -> None:
    """While the Job runs, the trainer's progress.json reaches status.progress through the timer."""
    emu, ns, store = op["emu"], op["ns"], op["store"]
    ready_dataset_version(emu, store, "data", ns)
    emu.create(training_job("tj", ns, "data", hyperparameters={"epochs": 5, "batchSize": 4}))
    job = wait_job(emu, ns, "tj")
    start_job(emu, job)
    running = wait_phase(emu, "TrainingJob", "tj", ns, "Running")
    assert "progress" not in running
    prefix = running["outputPrefix"]
    store.put_json(f"{prefix}/progress.json", {"epoch": 2, "epochs": 5, "metrics": {"loss": 0.5, "accuracy": 0.7}})
    started = time.monotonic()
    progress = emu.wait_for(lambda: status_of(emu, "TrainingJob", "tj", ns).get("progress"), timeout=10,
                            message="status.progress")
    assert progress == {"epoch": 2, "epochs": 5, "metrics": {"loss": 0.5, "accuracy": 0.7}}
    assert time.monotonic() - started < 5  # a few 0.2 s intervals, not the 10 s default
    store.put_json(f"{prefix}/progress.json", {"epoch": 3, "epochs": 5, "metrics": {"loss": 0.4}})
    emu.wait_for(lambda: status_of(emu, "TrainingJob", "tj", ns)["progress"]["epoch"] == 3, timeout=10,
                 message="epoch 3")


def test_benchmark_enabled_creates_an_owned_benchmark(op: dict[str, Any]) -> None:
    """spec.benchmark.enabled: after success, `<job>-benchmark` exists, controlled by the job, and runs."""
    emu, ns = op["emu"], op["ns"]
    tj = trained(op, "bb", benchmark={"enabled": True})
    bench = emu.wait_for(lambda: emu.find("Benchmark", "bb-benchmark", ns), message="the Benchmark")
    assert bench["metadata"]["ownerReferences"] == [{
        "apiVersion": GV, "kind": "TrainingJob", "name": "bb", "uid": tj["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}]
    assert bench["spec"]["models"] == [{"trainingJob": "bb", "checkpoint": "best"}]
    assert status_of(emu, "TrainingJob", "bb", ns)["benchmark"] == "bb-benchmark"
    job = wait_job(emu, ns, "bb-benchmark")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["kubeforge", "step", "benchmark"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == bench["metadata"]["uid"]
    complete_job(emu, op["store"], bench, job, {"metrics": {"bb": {"accuracy": 0.9}}})
    wait_phase(emu, "Benchmark", "bb-benchmark", ns, "Succeeded")


# --- Kopf's progress storage against a pruning API server --------------------------------------------

PROBE_GROUP = "probe.kubeforge.test"


def probe_crd() -> dict[str, Any]:
    """A CRD whose status schema keeps only `note`: no x-kubernetes-preserve-unknown-fields anywhere."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{PROBE_GROUP}"},
        "spec": {"group": PROBE_GROUP, "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                   "status": {"type": "object", "properties": {"note": {"type": "string"}}},
                               }}}}]},
    }


def run_probe(emu: Any, kopf_operator: Any, ns: str, status_storage: bool) -> tuple[list[int], bool]:
    """Run a tiny Kopf operator whose create handler fails (TemporaryError) until Kopf says it is a
    retry; return the `retry` it saw on each run and whether it ever succeeded. `status_storage`:
    Kopf's progress in status (pruned here), else the operator's real persistence settings
    (annotations). The object is touched three times meanwhile (a label), as the other writers of a
    real resource do: each touch is an event."""
    import kopf

    from kubeforge.operator.handlers import configure
    from kubeforge.operator.settings import OperatorSettings

    if emu.find("CustomResourceDefinition", f"widgets.{PROBE_GROUP}", None) is None:
        emu.create(probe_crd())
    registry = kopf.OperatorRegistry()
    calls: list[int] = []
    succeeded: list[bool] = []

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, OperatorSettings())
        if status_storage:
            settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")

    @kopf.on.create(PROBE_GROUP, "v1", "widgets", registry=registry, id="probe")
    def create(retry: int, **_: Any) -> None:
        calls.append(retry)
        if retry < 1:
            raise kopf.TemporaryError("not yet", delay=0.1)
        succeeded.append(True)

    thread = kopf_operator(registry, namespaces=(ns,))
    emu.create({"apiVersion": f"{PROBE_GROUP}/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": ns},
                "spec": {"size": 1}})
    for touch in range(3):
        time.sleep(0.4)
        emu.patch("Widget", "w", {"metadata": {"labels": {"touched": str(touch)}}}, ns)
    time.sleep(0.4)
    thread.stop()
    return calls, bool(succeeded)


def test_progress_in_a_pruned_status_is_lost_but_annotations_keep_it(kube_emulator: Any, kopf_operator: Any) -> None:
    """The emulator prunes status by the CRD schema, as a real API server does.

    With Kopf's progress in status (Kopf 1.45), the progress patch is pruned away: the handler runs
    again as a first try (`retry == 0` every time, Kopf's retry count lost), then Kopf keeps re-sending
    the pruned patch on every later event and never runs it again: it never succeeds. With the
    operator's configuration (annotations) it runs exactly twice, the failure and the counted retry,
    and succeeds; later events do not run it again.
    """
    results = {}
    for status_storage in (True, False):
        ns = f"probe-{'status' if status_storage else 'annotations'}-{time.monotonic_ns() % 10**8}"
        kube_emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        results[status_storage] = run_probe(kube_emulator, kopf_operator, ns, status_storage)
    assert results[False] == ([0, 1], True), results
    calls, succeeded = results[True]
    assert len(calls) >= 2 and set(calls) == {0} and not succeeded, results
