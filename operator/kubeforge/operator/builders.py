"""Pure builders: a resource, its resolved run spec and the settings -> Kubernetes objects (dicts).

Nothing here does I/O; every function is unit-tested field by field
(tests/test_operator_builders.py). Secrets are referenced by name (`envFrom`), never read.

Each step runs as a `batch/v1` Job named `<resource>-<step>` (shortened with a hash to fit
63 characters), with its run spec in a ConfigMap of the same name mounted at
/etc/kubeforge/run.json. The step writes its result to the store at
`layout.run_result_key(...)`, where the operator reads it when the Job succeeds: pods hold
no API credentials (`automountServiceAccountToken: false`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubeforge.api import Resource, TrainingJob, owned
from kubeforge.api.job_policy import JobPolicy
from kubeforge.api.owned import child_name
from kubeforge.operator.settings import OperatorSettings
from kubeforge.steps.runs import STEP_NAMES
from kubeforge.steps.spec import StepRun
from kubeforge.store import layout

APP = "kubeforge"
MANAGED_BY = "kubeforge"
LABEL_KIND = "kubeforge.io/kind"
LABEL_NAME = "kubeforge.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ANNOTATION_RUN_HASH = "kubeforge.io/run-hash"
ANNOTATION_RESULT_KEY = "kubeforge.io/result-key"
# The resource's metadata.generation the Job was made for: a later spec change is detectable.
ANNOTATION_GENERATION = "kubeforge.io/generation"
# The run a Job (and its ConfigMap) does: `status.runs[].id` of its owner.
ANNOTATION_RUN_ID = "kubeforge.io/run-id"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

RUN_SPEC_DIR = "/etc/kubeforge"
RUN_SPEC_FILE = "run.json"
CACHE_DIR = "/var/cache/kubeforge"
CONTAINER = "step"
MASTER_PORT = 29500
GPU_RESOURCE = "nvidia.com/gpu"
# Indexed pods are named `<job>-<index>`: keep room for the index in a DNS label.
DISTRIBUTED_NAME_MAX = 57
NON_ROOT_UID = 1000


def text_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def labels(res: Resource, component: str) -> dict[str, str]:
    """The labels of everything made for `res`; `managed-by=kubeforge` is what the Job watch selects."""
    return {
        "app.kubernetes.io/name": APP,
        LABEL_INSTANCE: res.name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/part-of": APP,
        LABEL_KIND: res.kind,
        LABEL_NAME: res.name,
    }


def owner_reference(res: Resource) -> dict[str, Any]:
    """The controller reference of a child: garbage-collected with `res`, adoptable by no one else."""
    if not res.metadata.uid:
        raise ValueError(f"{res.key()}: metadata.uid is not set; owned objects need the owner's uid")
    return owned.owner_reference(res)


def _meta(res: Resource, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": res.namespace, "labels": {**labels(res, component), **(extra_labels or {})},
            "ownerReferences": [owner_reference(res)]}


def run_json(run: StepRun) -> str:
    # exclude_unset: the step sees what the user wrote, as in local mode (defaults are the step's).
    return run.model_dump_json(indent=2, exclude_unset=True) + "\n"


def step_job_name(res: Resource, run: StepRun | str) -> str:
    """The Job (and ConfigMap) of one run: `<resource>-<step>-<run id>`, so a new run (a changed spec
    or changed inputs) is a new Job and the earlier run's Job is never reused or confused with it."""
    run_id = run if isinstance(run, str) else run.run_id
    if not run_id:
        raise ValueError(f"{res.key()}: a step Job's name needs the run id")
    step = f"{STEP_NAMES[res.kind]}-{run_id[:8]}"
    distributed = isinstance(res, TrainingJob) and res.spec.distributed.nodes > 1
    return child_name(res.name, step, DISTRIBUTED_NAME_MAX if distributed else 63)


def result_key(res: Resource, run: StepRun | str) -> str:
    run_id = run if isinstance(run, str) else run.run_id
    return layout.run_result_key(res.namespace, res.kind, res.name, res.metadata.uid or "", run_id)


def run_configmap(res: Resource, run: StepRun) -> dict[str, Any]:
    """The ConfigMap holding run.json (no credentials: run specs never carry any)."""
    text = run_json(run)
    meta = _meta(res, step_job_name(res, run), STEP_NAMES[res.kind])
    meta["annotations"] = {ANNOTATION_RUN_HASH: text_hash(text)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {RUN_SPEC_FILE: text}}


def _policy(res: Resource) -> JobPolicy:
    spec = getattr(res, "spec", None)
    return spec if isinstance(spec, JobPolicy) else JobPolicy()


def _resources(res: Resource) -> dict[str, Any]:
    if not isinstance(res, TrainingJob):
        return {}
    want = res.spec.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if want.cpu:
        requests["cpu"] = want.cpu
    if want.memory:
        requests["memory"] = limits["memory"] = want.memory
    if want.gpu > 0:
        # Extended resources are limits (requests default to them); the device plugin schedules.
        limits[GPU_RESOURCE] = str(want.gpu)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def uses_gpu(res: Resource) -> bool:
    return isinstance(res, TrainingJob) and res.spec.resources.gpu > 0


def _env(settings: OperatorSettings) -> list[dict[str, Any]]:
    env = [
        # A read-only root filesystem: everything writable lives under /tmp and the cache.
        {"name": "HOME", "value": "/tmp"},
        {"name": "KUBEFORGE_CACHE_DIR", "value": CACHE_DIR},
        {"name": "TORCH_HOME", "value": f"{CACHE_DIR}/torch"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if settings.s3_endpoint:
        env.append({"name": "KUBEFORGE_S3_ENDPOINT", "value": settings.s3_endpoint})
    return env


def _distributed_env(job_name: str, nodes: int, procs: int) -> list[dict[str, Any]]:
    return [
        {"name": "MASTER_ADDR", "value": f"{job_name}-0.{job_name}"},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "WORLD_SIZE", "value": str(nodes * procs)},
        {"name": "NNODES", "value": str(nodes)},
        {"name": "NPROC_PER_NODE", "value": str(procs)},
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}},
    ]


def step_command(res: Resource, key: str) -> list[str]:
    """The container command: the step entrypoint, under torchrun for multi-node training."""
    step = STEP_NAMES[res.kind]
    args = ["step", step, "--spec", f"{RUN_SPEC_DIR}/{RUN_SPEC_FILE}", "--result-key", key]
    if isinstance(res, TrainingJob) and res.spec.distributed.nodes > 1:
        # $(VAR) is expanded by the kubelet from the container's env.
        return ["torchrun", "--nnodes=$(NNODES)", "--nproc-per-node=$(NPROC_PER_NODE)",
                "--node-rank=$(NODE_RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)",
                "-m", "kubeforge.cli.main", *args]
    return ["kubeforge", *args]


def step_image(res: Resource, settings: OperatorSettings) -> str:
    """A custom model trains in its own image (built FROM the trainer image, so it has `kubeforge step`)."""
    if isinstance(res, TrainingJob) and res.spec.model.framework == "custom" and res.spec.model.image:
        return res.spec.model.image
    return settings.trainer_gpu_image if uses_gpu(res) else settings.trainer_image


def step_job(res: Resource, run: StepRun, settings: OperatorSettings) -> dict[str, Any]:
    """The `batch/v1` Job that runs `res`'s step."""
    policy = _policy(res)
    name = step_job_name(res, run)
    component = STEP_NAMES[res.kind]
    distributed = isinstance(res, TrainingJob) and res.spec.distributed.nodes > 1
    env = _env(settings)
    if distributed:
        assert isinstance(res, TrainingJob)
        env += _distributed_env(name, res.spec.distributed.nodes, res.spec.distributed.processes_per_node)
    mounts = [
        {"name": "run-spec", "mountPath": RUN_SPEC_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "run-spec", "configMap": {"name": name}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
    ]
    if isinstance(res, TrainingJob):
        # DataLoader workers and NCCL share tensors through /dev/shm (64 MiB by default).
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": step_image(res, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": step_command(res, result_key(res, run)),
        "envFrom": [{"secretRef": {"name": settings.store_secret}}],
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    resources = _resources(res)
    if resources:
        container["resources"] = resources
    if distributed:
        container["ports"] = [{"name": "rendezvous", "containerPort": MASTER_PORT}]
    pod_labels = labels(res, component)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # steps never talk to the API server
        "securityContext": {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID,
                            "fsGroup": NON_ROOT_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    account = policy.service_account_name or settings.step_service_account
    if account:
        pod_spec["serviceAccountName"] = account
    if policy.node_selector:
        pod_spec["nodeSelector"] = dict(policy.node_selector)
    if policy.tolerations:
        pod_spec["tolerations"] = [t.dump() for t in policy.tolerations]
    if policy.priority_class_name:
        pod_spec["priorityClassName"] = policy.priority_class_name
    if distributed:
        pod_spec["subdomain"] = name  # the headless Service: `<job>-<i>.<job>` resolves
    job_spec: dict[str, Any] = {
        "backoffLimit": policy.backoff_limit if policy.backoff_limit is not None else settings.job_backoff_limit,
        "suspend": policy.suspend,
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    deadline = policy.active_deadline_seconds or settings.job_active_deadline_seconds
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    ttl = policy.ttl_seconds_after_finished
    ttl = ttl if ttl is not None else settings.job_ttl_seconds
    if ttl is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl
    if distributed:
        assert isinstance(res, TrainingJob)
        nodes = res.spec.distributed.nodes
        job_spec.update(completionMode="Indexed", completions=nodes, parallelism=nodes)
    extra = {QUEUE_LABEL: policy.queue_name} if policy.queue_name else None
    meta = _meta(res, name, component, extra)
    meta["annotations"] = {
        ANNOTATION_RUN_HASH: text_hash(run_json(run)), ANNOTATION_RESULT_KEY: result_key(res, run),
        ANNOTATION_GENERATION: str(res.metadata.generation or 0), ANNOTATION_RUN_ID: run.run_id or "",
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def rendezvous_service(res: Resource, run: StepRun) -> dict[str, Any]:
    """The headless Service that gives an indexed Job's pods stable DNS names for torchrun."""
    name = step_job_name(res, run)
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(res, name, STEP_NAMES[res.kind]),
        "spec": {
            "clusterIP": "None",
            # Rendezvous happens before any pod is Ready.
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: name},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }


def step_objects(res: Resource, run: StepRun, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Everything one step needs, in creation order (the Job last: what it mounts exists first)."""
    objects = [run_configmap(res, run)]
    if isinstance(res, TrainingJob) and res.spec.distributed.nodes > 1:
        objects.append(rendezvous_service(res, run))
    objects.append(step_job(res, run, settings))
    return objects


def canonical_hash(obj: Any) -> str:
    return text_hash(json.dumps(obj, sort_keys=True, separators=(",", ":")))
