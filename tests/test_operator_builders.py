"""The operator's pure builders, field by field (no cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubeforge.api import parse_resource
from kubeforge.api.training_job import TrainingJob
from kubeforge.operator import builders as b
from kubeforge.operator import builders_serving as bs
from kubeforge.operator.settings import OperatorSettings
from kubeforge.steps import runs
from kubeforge.steps.spec import DatasetRef
from kubeforge.store import layout

SECRET_VALUE = "s3cr3t-value-never-inlined"
DS = DatasetRef(dataset="shapes", digest="a" * 64)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    # The operator's own env holds the credentials; no builder may copy them anywhere.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-never-inlined")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
    monkeypatch.setenv("KUBEFORGE_STORE", "s3://bucket/pre/fix")
    monkeypatch.setenv("KUBEFORGE_S3_ENDPOINT", "minio.store:9000")
    monkeypatch.setenv("KUBEFORGE_STORE_SECRET", "store-creds")
    monkeypatch.setenv("KUBEFORGE_TRAINER_IMAGE", "trainer:cpu")
    monkeypatch.setenv("KUBEFORGE_TRAINER_GPU_IMAGE", "trainer:cuda")
    monkeypatch.setenv("KUBEFORGE_TRITON_IMAGE", "triton:24")
    monkeypatch.setenv("KUBEFORGE_JOB_BACKOFF_LIMIT", "3")
    monkeypatch.setenv("KUBEFORGE_JOB_ACTIVE_DEADLINE_SECONDS", "7200")
    monkeypatch.setenv("KUBEFORGE_JOB_TTL_SECONDS", "600")
    monkeypatch.setenv("KUBEFORGE_STEP_SERVICE_ACCOUNT", "kubeforge-step")
    return OperatorSettings()


def tj(name: str = "det", **spec: Any) -> TrainingJob:
    body = {"apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 1},
            "spec": {"datasetVersion": "shapes-v1", "task": "object-detection",
                     "model": {"name": "ssdlite320_mobilenet_v3_large"}, **spec}}
    res = parse_resource(body)
    assert isinstance(res, TrainingJob)
    return res


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_settings_read_the_chart_env_names(settings: OperatorSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEFORGE_WATCH_NAMESPACES", "ml, team-b,")
    monkeypatch.setenv("KUBEFORGE_PEERING_NAME", "kf-peer")
    monkeypatch.setenv("KUBEFORGE_METRICS_PORT", "9090")
    s = OperatorSettings()
    assert s.watch_namespaces == ["ml", "team-b"] and not s.clusterwide
    assert (s.peering_name, s.metrics_port, s.health_port) == ("kf-peer", 9090, 8081)
    assert (s.store_secret, s.job_backoff_limit, s.job_ttl_seconds) == ("store-creds", 3, 600)
    assert "AWS" not in json.dumps(s.model_dump())  # credentials are not settings


def test_child_names_are_deterministic_and_fit_63() -> None:
    assert b.child_name("det", "train") == "det-train"
    long = "x" * 63
    name = b.child_name(long, "train")
    assert len(name) == 63 and name == b.child_name(long, "train") and name != b.child_name(long, "serve")
    assert len(b.child_name(long, "train", 57)) == 57
    assert not b.child_name("a-" * 40, "train").split("-")[-2].endswith("-")


def test_train_job_field_by_field(settings: OperatorSettings) -> None:
    res = tj()
    run = runs.train_run(res, settings.store, DS)
    job = b.step_job(res, run, settings)
    meta = job["metadata"]
    name = f"det-train-{run.run_id[:8]}"  # type: ignore[index]  # one Job per run
    assert (job["apiVersion"], job["kind"], meta["name"], meta["namespace"]) == ("batch/v1", "Job", name, "ml")
    assert meta["annotations"][b.ANNOTATION_RUN_ID] == run.run_id
    assert meta["labels"] == {
        "app.kubernetes.io/name": "kubeforge", "app.kubernetes.io/instance": "det",
        "app.kubernetes.io/component": "train", "app.kubernetes.io/managed-by": "kubeforge",
        "app.kubernetes.io/part-of": "kubeforge", "kubeforge.io/kind": "TrainingJob", "kubeforge.io/name": "det"}
    assert meta["ownerReferences"] == [{"apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob", "name": "det",
                                        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
    key = layout.run_result_key("ml", "TrainingJob", "det", "uid-1", run.run_id)
    assert meta["annotations"][b.ANNOTATION_RESULT_KEY] == key and key.endswith(f"/{run.run_id}/result.json")
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (3, 7200, 600)
    assert spec["suspend"] is False and "completionMode" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "kubeforge-step"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "nodeSelector" not in pod and "tolerations" not in pod and "priorityClassName" not in pod
    c = container(job)
    assert c["image"] == "trainer:cpu" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == ["kubeforge", "step", "train", "--spec", "/etc/kubeforge/run.json", "--result-key", key]
    assert c["envFrom"] == [{"secretRef": {"name": "store-creds"}}]
    assert env_of(job)["KUBEFORGE_S3_ENDPOINT"] == "minio.store:9000"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "resources" not in c
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts[b.CACHE_DIR] == "cache" and mounts["/etc/kubeforge"] == "run-spec"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["run-spec"]["configMap"] == {"name": name} and volumes["tmp"] == {"name": "tmp",
                                                                                           "emptyDir": {}}


def test_configmap_holds_the_run_spec_only(settings: OperatorSettings) -> None:
    res = tj()
    run = runs.train_run(res, settings.store, DS)
    cm = b.run_configmap(res, run)
    assert cm["metadata"]["name"] == b.step_job_name(res, run)
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = json.loads(cm["data"]["run.json"])
    assert spec["store"] == "s3://bucket/pre/fix" and spec["experiment_prefix"].startswith("experiments/ml_")
    assert cm["metadata"]["annotations"][b.ANNOTATION_RUN_HASH] == b.text_hash(cm["data"]["run.json"])


def test_spec_overrides_settings_and_placement_passes_through(settings: OperatorSettings) -> None:
    res = tj(backoffLimit=0, activeDeadlineSeconds=60, ttlSecondsAfterFinished=0, suspend=True, queueName="gpu-q",
             nodeSelector={"pool": "a100"}, priorityClassName="high", serviceAccountName="trainer",
             tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
             resources={"gpu": 2, "cpu": "4", "memory": "16Gi"})
    job = b.step_job(res, runs.train_run(res, settings.store, DS), settings)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (0, 60, 0)
    assert spec["suspend"] is True and job["metadata"]["labels"][b.QUEUE_LABEL] == "gpu-q"
    assert pod["nodeSelector"] == {"pool": "a100"} and pod["priorityClassName"] == "high"
    assert pod["serviceAccountName"] == "trainer"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    c = container(job)
    assert c["image"] == "trainer:cuda"
    assert c["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                              "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"}}


def test_no_deadline_or_ttl_when_neither_spec_nor_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEFORGE_JOB_TTL_SECONDS", "")
    s = OperatorSettings()
    res = tj()
    spec = b.step_job(res, runs.train_run(res, s.store, DS), s)["spec"]
    assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec
    assert spec["backoffLimit"] == 2


def test_distributed_is_an_indexed_job_with_headless_service_and_torchrun(settings: OperatorSettings) -> None:
    res = tj(name="y" * 63, distributed={"nodes": 3, "processesPerNode": 2}, resources={"gpu": 2})
    run = runs.train_run(res, settings.store, DS)
    objects = b.step_objects(res, run, settings)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Service", "Job"]
    cm, svc, job = objects
    name = job["metadata"]["name"]
    assert len(name) <= 57 and cm["metadata"]["name"] == svc["metadata"]["name"] == name
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["template"]["spec"]["subdomain"] == name
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    env = env_of(job)
    assert env["MASTER_ADDR"] == f"{name}-0.{name}" and env["MASTER_PORT"] == "29500"
    assert (env["WORLD_SIZE"], env["NNODES"], env["NPROC_PER_NODE"]) == ("6", "3", "2")
    assert env["NODE_RANK"] == {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    cmd = container(job)["command"]
    assert cmd[0] == "torchrun" and "--nnodes=$(NNODES)" in cmd and "--node-rank=$(NODE_RANK)" in cmd
    assert cmd[cmd.index("-m") + 1: cmd.index("-m") + 4] == ["kubeforge.cli.main", "step", "train"]


def test_single_node_has_no_rendezvous_service(settings: OperatorSettings) -> None:
    res = tj()
    assert [o["kind"] for o in b.step_objects(res, runs.train_run(res, settings.store, DS), settings)] == [
        "ConfigMap", "Job"]


def test_owner_uid_is_required(settings: OperatorSettings) -> None:
    res = tj()
    res.metadata.uid = None
    with pytest.raises(ValueError, match="uid"):
        b.owner_reference(res)


def isvc(replicas: int = 1, job: str = "det") -> Any:
    return parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService",
                           "metadata": {"name": "shapes", "namespace": "ml", "uid": "uid-s"},
                           "spec": {"model": {"trainingJob": job}, "replicas": replicas}})


def test_serve_job_name_changes_with_the_served_model(settings: OperatorSettings) -> None:
    one, two = isvc(job="det"), isvc(job="det2")
    run1 = runs.serve_run(one, settings.store, "experiments/ml_shapes/det_torchvision", "abcdef1234")
    run2 = runs.serve_run(two, settings.store, "experiments/ml_shapes/det2_torchvision", "abcdef1234")
    job1, job2 = b.step_job(one, run1, settings), b.step_job(two, run2, settings)
    assert job1["metadata"]["name"].startswith("shapes-serve-") and job1["metadata"]["name"] != job2["metadata"][
        "name"]
    assert container(job1)["command"][:3] == ["kubeforge", "step", "serve"]
    assert "dshm" not in {v["name"] for v in job1["spec"]["template"]["spec"]["volumes"]}


def test_serve_run_ignores_replicas_and_artifact_policy(settings: OperatorSettings) -> None:
    """Scaling (or the deletion policy) is not a new serve run: same Job name, same run hash, no rollout."""
    def job_of(res: Any) -> dict[str, Any]:
        return b.step_job(res, runs.serve_run(res, settings.store, "experiments/x", "abcdef1234"), settings)

    base = job_of(isvc(replicas=1))
    scaled = parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService",
                             "metadata": {"name": "shapes", "namespace": "ml", "uid": "uid-s"},
                             "spec": {"model": {"trainingJob": "det"}, "replicas": 5, "artifactPolicy": "Delete"}})
    assert job_of(scaled)["metadata"] == base["metadata"]
    run = runs.serve_run(scaled, settings.store, "experiments/x", "abcdef1234")
    assert "replicas" not in b.run_json(run) and run.spec.model.training_job == "det"
    faster = parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService",
                             "metadata": {"name": "shapes", "namespace": "ml", "uid": "uid-s"},
                             "spec": {"model": {"trainingJob": "det"}, "runtime": {"maxBatchSize": 2}}})
    assert job_of(faster)["metadata"]["name"] != base["metadata"]["name"]  # the runtime is part of the build


def test_triton_deployment_and_service(settings: OperatorSettings) -> None:
    res = isvc(replicas=2)
    dep = bs.triton_deployment(res, settings, "rev1")
    assert dep["metadata"]["name"] == "shapes" and dep["spec"]["replicas"] == 2
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "triton:24"
    assert c["args"][:4] == [
        "tritonserver", "--model-repository=s3://minio.store:9000/bucket/pre/fix/serving/ml_shapes/onnxruntime",
        "--model-control-mode=explicit", "--load-model=shapes"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["envFrom"] == [{"secretRef": {"name": "store-creds"}}]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = bs.triton_service(res)
    assert svc["spec"]["selector"] == selector
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert bs.service_url(res) == "http://shapes.ml.svc:8000"


def test_model_change_rolls_and_replicas_do_not(settings: OperatorSettings) -> None:
    def annotation(res: Any, rev: str) -> str:
        return bs.triton_deployment(res, settings, rev)["spec"]["template"]["metadata"]["annotations"][
            bs.ANNOTATION_MODEL_HASH]

    base = annotation(isvc(), "r1")
    assert annotation(isvc(replicas=3), "r1") == base  # scaling is not a rollout
    assert annotation(isvc(job="det2"), "r1") != base
    assert annotation(isvc(), "r2") != base
    patch = bs.deployment_patch(isvc(replicas=3), settings, "r2")
    assert patch["spec"]["replicas"] == 3
    assert patch["spec"]["template"]["metadata"]["annotations"][bs.ANNOTATION_MODEL_HASH] == annotation(isvc(), "r2")


def test_https_endpoint_keeps_its_scheme_and_file_store_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEFORGE_STORE", "s3://bucket")
    monkeypatch.setenv("KUBEFORGE_S3_ENDPOINT", "https://s3.example.com")
    assert bs.repository_uri(isvc(), OperatorSettings()) == (
        "s3://https://s3.example.com/bucket/serving/ml_shapes/onnxruntime")
    monkeypatch.setenv("KUBEFORGE_STORE", "file:///tmp/x")
    with pytest.raises(ValueError, match="s3://"):
        bs.repository_uri(isvc(), OperatorSettings())


def test_secrets_are_never_inlined_and_names_fit(settings: OperatorSettings) -> None:
    objects: list[dict[str, Any]] = []
    for res in (tj(), tj(name="z" * 63, distributed={"nodes": 2}, resources={"gpu": 1})):
        objects += b.step_objects(res, runs.train_run(res, settings.store, DS), settings)
    serve = isvc()
    objects += b.step_objects(serve, runs.serve_run(serve, settings.store, "experiments/x", "abcdef1234"), settings)
    objects += [bs.triton_deployment(serve, settings, "r"), bs.triton_service(serve)]
    text = json.dumps(objects)
    assert SECRET_VALUE not in text and "AKIA-never-inlined" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text  # not even an env entry: envFrom only
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in obj["metadata"]["labels"].values())


def test_step_result_key_writes_the_result_to_the_store(tmp_path: Path) -> None:
    """The real dataset-version step: its result reaches the store key the operator reads."""
    from kubeforge.api import DatasetVersion
    from kubeforge.cli import step as step_cli
    from kubeforge.datasets.synth import generate_shapes_imagefolder
    from kubeforge.steps import runs
    from kubeforge.store import open_store

    src = generate_shapes_imagefolder(tmp_path / "src", n_per_class=2, size=24, seed=1)
    dsv = DatasetVersion.model_validate({"metadata": {"name": "v1", "namespace": "ml"}, "spec": {
        "dataset": "toy", "source": {"uri": str(src), "format": "imagefolder"}}})
    store_dir = tmp_path / "store"
    spec = tmp_path / "run.json"
    spec.write_text(runs.dataset_version_run(dsv, str(store_dir), None).model_dump_json(exclude_unset=True))
    key = layout.run_result_key("ml", "DatasetVersion", "v1", "u-1")
    out = CliRunner().invoke(step_cli.app, ["dataset-version", "--spec", str(spec), "--result-key", key])
    assert out.exit_code == 0, out.output
    result = open_store(str(store_dir)).get_json(key)
    assert len(result["digest"]) == 64 and result["stats"]["images"] == 6
    assert open_store(str(store_dir)).exists(layout.dataset_manifest_key("toy", result["digest"]))


@pytest.mark.parametrize(("env", "writes"), [
    ({}, True), ({"RANK": "0", "NODE_RANK": "0"}, True), ({"RANK": "3", "NODE_RANK": "1"}, False),
    ({"RANK": "1", "NODE_RANK": "0"}, False), ({"NODE_RANK": "2"}, False), ({"NODE_RANK": "0"}, True),
])
def test_only_rank_zero_writes_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                          writes: bool) -> None:
    """A distributed TrainingJob runs the step once per torchrun process (the builder passes --result-key
    to all of them): only global rank 0 writes the result, to the store and to --result. The step itself
    is replaced by a constant result here (six training runs would be slow); test_train_distributed.py
    runs the real step under torchrun."""
    from kubeforge.cli import step as step_cli
    from kubeforge.store import open_store

    for name in ("RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(step_cli, "run_step", lambda step, spec: {"metrics": {"accuracy": 0.5}})
    spec = tmp_path / "run.json"
    spec.write_text(json.dumps({"store": str(tmp_path / "store")}))
    key = layout.run_result_key("ml", "TrainingJob", "det", "u-1")
    out = CliRunner().invoke(step_cli.app, ["train", "--spec", str(spec), "--result-key", key,
                                            "--result", str(tmp_path / "result.json")])
    assert out.exit_code == 0, out.output
    assert open_store(str(tmp_path / "store")).exists(key) is writes
    assert (tmp_path / "result.json").exists() is writes
