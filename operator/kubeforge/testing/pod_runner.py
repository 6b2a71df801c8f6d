"""A kubelet, Job controller and Deployment controller for the Kubernetes emulator (test infrastructure).

The emulator runs no controllers. `PodRunner` plays the ones an operator of ours relies on, in one
namespace, by polling the API like a controller's informer would (a list every `poll` seconds):

- **Job controller + kubelet.** For every `batch/v1` Job that is not finished or suspended it
  creates a Pod (`<job>-<5 chars>`, labelled and owned as the Job controller does), runs the pod
  template's first container as a local subprocess, and reports back: `startTime`/`active`/`ready`
  while it runs, then `succeeded` with the conditions `SuccessCriteriaMet` and `Complete`, or
  `failed` and, once `backoffLimit` is spent, `FailureTarget` and `Failed` (reason
  `BackoffLimitExceeded`; `DeadlineExceeded` past `activeDeadlineSeconds`). A failed pod is
  replaced by a new one until then (without the controller's exponential back-off delay). The Pod's
  `containerStatuses[0].state.terminated` carries the exit code and the termination message, written
  before the Job's conditions, as a kubelet reports before the Job controller sees it. When a Job is
  deleted (or marked for deletion) while its process runs, the process group gets SIGTERM and,
  after a short grace, SIGKILL (the emulator's garbage collector removes the Pod with its Job).
- **Deployment controller + kubelet for Triton.** For every Deployment whose container runs
  `tritonserver`, it starts the local `tritonserver` (`kubeforge.serving.triton_server`, as local
  mode does) on the repository named by `--model-repository` and the model of `--load-model`, then
  patches the Deployment's status (`observedGeneration`, `replicas`, `updatedReplicas`,
  `readyReplicas`, `availableReplicas`, `Available`/`Progressing`) once Triton is ready. A changed
  pod template restarts it (a rollout); a Deployment deleted or scaled to 0 stops it. One local
  server stands for all replicas.

How a container becomes a process (the choices, and why):

- **Image = this virtual environment.** The container's command is mapped: `kubeforge` ->
  `[sys.executable, "-m", "kubeforge.cli.main"]`, `torchrun` -> `torch.distributed.run`; `args`
  follow, `$(VAR)` is expanded from the container's env as the kubelet does. The process starts from
  the image's environment (`image_env`: PATH, PYTHONPATH, locale of this process), never the whole
  of ours, plus the container's `envFrom` and `env`, read from the emulator the way the kubelet
  reads them (a Secret's `data` base64-decoded; a missing Secret leaves the pod Pending with
  `CreateContainerConfigError`, retried every poll).
- **Volumes are host folders, mount paths are rewritten.** Each volume becomes
  `<workdir>/<pod>/volumes/<volume>` (a ConfigMap's or Secret's keys written as files, `emptyDir`
  an empty folder). A process cannot see a folder at the Job's `mountPath` (e.g.
  `/etc/kubeforge/run.json`) without a container, so every command argument and env value that is a
  path under a mount path (also the part after `--flag=`) is rewritten to the host folder, and
  `TMPDIR` points at the `/tmp` volume when there is one. `subPath` is not supported.
- **Termination message.** The step writes `/dev/termination-log` in a pod; here the runner gives
  each container a file of its own through `KUBEFORGE_TERMINATION_LOG` (the hook in
  `kubeforge.cli.step`) and reads it as the kubelet reads `terminationMessagePath`: at most 4096
  bytes; with `terminationMessagePolicy: FallbackToLogsOnError` and an empty file after a failure,
  the last 80 lines (at most 2048 bytes) of the log instead.
- **Services are port-forwards.** Triton listens on free loopback ports, not on the Deployment's
  8000/8001/8002 (a cluster DNS name such as `http://svc.ns.svc:8000` does not resolve here);
  `endpoint(service)` gives the local URL of the Triton behind a Service, like `kubectl port-forward`.
- **The Python-backend variant.** The local tritonserver has only the Python backend, so a
  repository ending in `/onnxruntime` (the cluster variant the operator points NGC Triton at) is
  served from its sibling `/python` (the same model; `kubeforge.serving.triton_repo` builds both).
  `served_repositories` records both URIs.

Not emulated: the pod security context (the process runs as this user), resource requests and
limits (no OOMKilled), indexed Jobs with more than one completion, init containers, probes other
than Triton's own readiness.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kubeforge.cli.step import TERMINATION_LOG_ENV
from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_objects import ApiError, Body, now_iso

log = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
NODE_NAME = "pod-runner"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
KILL_GRACE_SECONDS = 5.0
# What the image (this venv) brings to every container's environment.
IMAGE_ENV_NAMES = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "LD_LIBRARY_PATH")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def default_commands(python: str = sys.executable) -> dict[str, list[str]]:
    """Container command[0] -> the local command that stands for it (the image is this venv)."""
    return {"kubeforge": [python, "-m", "kubeforge.cli.main"],
            "torchrun": [python, "-m", "torch.distributed.run"],
            "python": [python], "python3": [python]}


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """`$(VAR)` from `env`, as the kubelet expands command, args and env values; unknown refs stay."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def rewrite_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """A path under a mount path (the whole value, or the part after `--flag=`) -> the host folder."""
    head, sep, value = text.partition("=") if text.startswith("-") else ("", "", text)
    for mount in sorted(mounts, key=len, reverse=True):
        base = mount.rstrip("/") or "/"
        if value == base or value.startswith(base.rstrip("/") + "/"):
            value = str(mounts[mount]) + value[len(base):]
            break
    return f"{head}{sep}{value}"


def _condition(type_: str, reason: str, message: str) -> Body:
    now = now_iso()
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _true(status: Body, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])


def job_finished(job: Body) -> bool:
    status = job.get("status") or {}
    return _true(status, "Complete") or _true(status, "Failed")


class ContainerConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError (a Secret or ConfigMap it cannot read)."""


@dataclass
class PodProcess:
    """One pod of a Job: its API object's name and the local process standing for its container."""

    job_uid: str
    job_name: str
    pod_name: str
    pod_dir: Path
    log_path: Path
    term_path: Path
    fallback_to_logs: bool
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    deleted: bool = False  # its Job went away: killed, not reported


@dataclass
class TritonInstance:
    """The local tritonserver standing for one Deployment's pods."""

    deployment_uid: str
    template_key: str
    replicas: int
    thread: threading.Thread | None = None
    process: Any = None  # kubeforge.serving.triton_server.TritonProcess once ready
    error: str = ""
    stop_requested: bool = False


@dataclass
class RunnerState:
    pods: dict[str, PodProcess] = field(default_factory=dict)  # job uid -> the pod running now
    tritons: dict[str, TritonInstance] = field(default_factory=dict)  # deployment name -> server


class PodRunner:
    """`with PodRunner(api, namespace, workdir) as runner:` plays the controllers while the block runs."""

    def __init__(self, api: KubeClient, namespace: str, workdir: str | Path, *, poll: float = 0.2,
                 commands: Mapping[str, list[str]] | None = None, image_env: Mapping[str, str] | None = None,
                 triton_backend_dir: Path | None = None, triton_ready_timeout: float = 180.0) -> None:
        self.api = api
        self.namespace = namespace
        self.workdir = Path(workdir)
        self.poll = poll
        self.commands = dict(commands or default_commands())
        self.image_env = dict(image_env if image_env is not None else
                              {k: os.environ[k] for k in IMAGE_ENV_NAMES if k in os.environ})
        self.triton_backend_dir = triton_backend_dir
        self.triton_ready_timeout = triton_ready_timeout
        self.state = RunnerState()
        # (job name, pod name, exit code) of every process that ended, and the repositories served.
        self.finished: list[tuple[str, str, int]] = []
        self.served_repositories: dict[str, tuple[str, str]] = {}  # deployment -> (asked, served)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, kill every step process and stop every tritonserver."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for pod in list(self.state.pods.values()):
            self._kill(pod)
        for name in list(self.state.tritons):
            self._stop_triton(name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a controller keeps going; the test sees the error list
                log.exception("pod runner tick failed")
                self.errors.append(repr(exc))
            self._stop.wait(self.poll)

    def tick(self) -> None:
        """One pass of every controller (also callable from a test for determinism)."""
        self._sync_jobs()
        self._sync_deployments()

    # --- what tests ask --------------------------------------------------------------------------
    def running_pid(self, job_name: str) -> int | None:
        """The pid of the process running `job_name`'s pod now, if any."""
        with self._lock:
            for pod in self.state.pods.values():
                if pod.job_name == job_name and pod.proc is not None and pod.proc.poll() is None:
                    return pod.proc.pid
        return None

    def pod_log(self, job_name: str) -> str:
        """The log of the last pod of `job_name` (for failure messages in tests)."""
        logs = sorted(self.workdir.glob(f"{job_name}-*/log.txt"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace") if logs else ""

    def endpoint(self, service: str) -> str:
        """The local HTTP URL of the Triton behind Service `service` (what a port-forward gives)."""
        svc = self.api.get("Service", service, self.namespace)
        selector = (svc.get("spec") or {}).get("selector") or {}
        for dep in self.api.list("Deployment", self.namespace):
            labels = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                inst = self.state.tritons.get(dep["metadata"]["name"])
                if inst is not None and inst.process is not None:
                    return str(inst.process.http_url)
                raise LookupError(f"Service {service}: Deployment {dep['metadata']['name']} has no ready Triton "
                                  f"({inst.error if inst else 'not started'})")
        raise LookupError(f"Service {service}: no Deployment matches its selector {selector}")

    # --- Jobs --------------------------------------------------------------------------------------
    def _sync_jobs(self) -> None:
        jobs = {j["metadata"]["uid"]: j for j in self.api.list("Job", self.namespace)}
        for uid, pod in list(self.state.pods.items()):
            job = jobs.get(uid)
            if job is None or job["metadata"].get("deletionTimestamp"):
                pod.deleted = True
                self._kill(pod)
                with self._lock:
                    del self.state.pods[uid]
        for uid, job in jobs.items():
            if job_finished(job) or job["metadata"].get("deletionTimestamp"):
                continue
            pod = self.state.pods.get(uid)
            if pod is None:
                if (job.get("spec") or {}).get("suspend"):
                    continue
                self._start_pod(job)
            elif pod.proc is None:
                self._start_pod(job, pod)  # still waiting for its Secret or ConfigMap
            elif pod.proc.poll() is not None:
                self._pod_ended(job, pod)
            else:
                self._check_deadline(job, pod)

    def _start_pod(self, job: Body, pod: PodProcess | None = None) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        template = spec.get("template") or {}
        container = (template.get("spec") or {}).get("containers", [{}])[0]
        if pod is None:
            pod_name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
            pod_dir = self.workdir / pod_name
            pod_dir.mkdir(parents=True)
            pod = PodProcess(
                job_uid=meta["uid"], job_name=meta["name"], pod_name=pod_name, pod_dir=pod_dir,
                log_path=pod_dir / "log.txt", term_path=pod_dir / "termination-log",
                fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError")
            self._create_pod_object(job, pod, container)
            with self._lock:
                self.state.pods[meta["uid"]] = pod
            status = job.get("status") or {}
            self.api.patch_status("Job", meta["name"], {
                "startTime": status.get("startTime") or now_iso(), "active": 1, "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {}}, self.namespace)
        try:
            cmd, env, cwd = self._container_process(job, pod, container)
        except ContainerConfigError as exc:
            self._patch_pod(pod, {"phase": "Pending", "containerStatuses": [{
                "name": container.get("name", ""), "image": container.get("image", ""), "ready": False,
                "restartCount": 0, "started": False,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}}]})
            return
        pod.started_at = now_iso()
        with open(pod.log_path, "ab") as out:
            pod.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._patch_pod(pod, {
            "phase": "Running", "startTime": pod.started_at, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": pod.started_at}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": container.get("name", ""), "image": container.get("image", ""), "ready": True,
                "restartCount": 0, "started": True, "containerID": f"local://{pod.proc.pid}",
                "state": {"running": {"startedAt": pod.started_at}}}]})
        self.api.patch_status("Job", job["metadata"]["name"], {"active": 1, "ready": 1}, self.namespace)

    def _create_pod_object(self, job: Body, pod: PodProcess, container: Body) -> None:
        meta, template = job["metadata"], (job.get("spec") or {}).get("template") or {}
        labels = {**((template.get("metadata") or {}).get("labels") or {}), JOB_NAME_LABEL: meta["name"],
                  "job-name": meta["name"], CONTROLLER_UID_LABEL: meta["uid"], "controller-uid": meta["uid"]}
        self.api.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.pod_name, "namespace": self.namespace, "labels": labels,
                         "annotations": (template.get("metadata") or {}).get("annotations") or {},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": {**(template.get("spec") or {}), "nodeName": NODE_NAME},
        })
        self._patch_pod(pod, {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_iso()}]})

    def _patch_pod(self, pod: PodProcess, status: Body) -> None:
        with contextlib.suppress(ApiError):  # gone with its Job: nothing to report on
            self.api.patch_status("Pod", pod.pod_name, status, self.namespace)

    def _container_process(self, job: Body, pod: PodProcess, container: Body) -> tuple[list[str], dict[str, str],
                                                                                        str]:
        pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        mounts = self._volumes(pod_spec, container, pod.pod_dir)
        env = {**self.image_env, **self.container_env(container, pod_meta={"name": pod.pod_name,
                                                                            "namespace": self.namespace})}
        env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        env[TERMINATION_LOG_ENV] = str(pod.term_path)
        command = [expand_vars(a, env) for a in container.get("command") or []]
        args = [expand_vars(a, env) for a in container.get("args") or []]
        if not command:
            raise ContainerConfigError(f"container {container.get('name')!r}: no command (image entrypoints "
                                       "are not known to the pod runner)")
        local = self.commands.get(command[0])
        if local is None:
            raise ContainerConfigError(f"container {container.get('name')!r}: no local stand-in for command "
                                       f"{command[0]!r} (known: {sorted(self.commands)})")
        argv = [*local, *(rewrite_paths(a, mounts) for a in [*command[1:], *args])]
        cwd = rewrite_paths(container["workingDir"], mounts) if container.get("workingDir") else str(pod.pod_dir)
        return argv, env, cwd

    def _volumes(self, pod_spec: Body, container: Body, pod_dir: Path) -> dict[str, Path]:
        """Write each volume the container mounts into a host folder; mountPath -> folder."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ContainerConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
            if mount.get("subPath"):
                raise ContainerConfigError(f"volumeMount {mount['name']!r}: subPath is not supported here")
            folder = pod_dir / "volumes" / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                data = self._read("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("optional"))
                files = {k: v.encode() for k, v in (data.get("data") or {}).items()}
                files |= {k: base64.b64decode(v) for k, v in (data.get("binaryData") or {}).items()}
                self._write_items(folder, files, volume["configMap"].get("items"))
            elif "secret" in volume:
                data = self._read("Secret", volume["secret"]["secretName"], volume["secret"].get("optional"))
                self._write_items(folder, secret_data(data), volume["secret"].get("items"))
            elif "emptyDir" not in volume:
                raise ContainerConfigError(f"volume {mount['name']!r}: only configMap, secret and emptyDir are "
                                           "supported here")
            mounts[mount["mountPath"]] = folder
        return mounts

    @staticmethod
    def _write_items(folder: Path, files: Mapping[str, bytes], items: list[Body] | None) -> None:
        wanted = {i["key"]: i["path"] for i in items} if items else {k: k for k in files}
        for key, rel in wanted.items():
            if key not in files:
                raise ContainerConfigError(f"volume item {key!r} is not in the source object")
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[key])

    def _read(self, kind: str, name: str, optional: bool | None) -> Body:
        obj = self.api.find(kind, name, self.namespace)
        if obj is None:
            if optional:
                return {}
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        return obj

    def container_env(self, container: Body, pod_meta: Mapping[str, Any]) -> dict[str, str]:
        """The container's environment from `envFrom` and `env`, read from the API as the kubelet does."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                ref = source["secretRef"]
                values = {k: v.decode() for k, v in secret_data(self._read("Secret", ref["name"],
                                                                           ref.get("optional"))).items()}
            elif "configMapRef" in source:
                ref = source["configMapRef"]
                values = dict(self._read("ConfigMap", ref["name"], ref.get("optional")).get("data") or {})
            else:
                raise ContainerConfigError(f"envFrom entry {source} is not supported")
            env.update({prefix + k: v for k, v in values.items()})
        for item in container.get("env") or []:
            if "valueFrom" not in item:
                env[item["name"]] = expand_vars(str(item.get("value", "")), env)
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                kind, ref = ("Secret", source["secretKeyRef"]) if "secretKeyRef" in source else \
                    ("ConfigMap", source["configMapKeyRef"])
                obj = self._read(kind, ref["name"], ref.get("optional"))
                values = secret_data(obj) if kind == "Secret" else \
                    {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                if ref["key"] not in values:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError(f'couldn\'t find key {ref["key"]} in {kind} '
                                               f'{self.namespace}/{ref["name"]}')
                env[item["name"]] = values[ref["key"]].decode()
            elif "fieldRef" in source:
                env[item["name"]] = field_value(source["fieldRef"]["fieldPath"], pod_meta)
            else:
                raise ContainerConfigError(f"env {item['name']!r}: valueFrom {sorted(source)} is not supported")
        return env

    def _check_deadline(self, job: Body, pod: PodProcess) -> None:
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        start = (job.get("status") or {}).get("startTime")
        if not deadline or not start:
            return
        started = datetime.datetime.fromisoformat(start).timestamp()
        if time.time() - started > float(deadline):
            self._kill(pod)
            self._pod_ended(job, pod, deadline_exceeded=True)

    def _pod_ended(self, job: Body, pod: PodProcess, deadline_exceeded: bool = False) -> None:
        assert pod.proc is not None
        code = pod.proc.returncode if pod.proc.returncode is not None else pod.proc.wait()
        exit_code = code if code >= 0 else 128 - code  # killed by a signal: 128 + signal, as containers report
        message = self._termination_message(pod, exit_code)
        finished = now_iso()
        self._patch_pod(pod, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [{"type": t, "status": "False", "lastTransitionTime": finished}
                           for t in ("ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": (((job["spec"]["template"]["spec"]).get("containers") or [{}])[0]).get("name", ""),
                "ready": False, "restartCount": 0, "started": False, "containerID": f"local://{pod.proc.pid}",
                "state": {"terminated": {
                    "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "message": message, "startedAt": pod.started_at, "finishedAt": finished,
                    "containerID": f"local://{pod.proc.pid}"}}}]})
        self.finished.append((pod.job_name, pod.pod_name, exit_code))
        with self._lock:
            self.state.pods.pop(pod.job_uid, None)
        name, status, spec = job["metadata"]["name"], job.get("status") or {}, job.get("spec") or {}
        if exit_code == 0 and not deadline_exceeded:
            reached = "Reached expected number of succeeded pods"
            self.api.patch_status("Job", name, {
                "active": 0, "ready": 0, "succeeded": int(status.get("succeeded") or 0) + 1,
                "completionTime": finished,
                "conditions": [*(status.get("conditions") or []),
                               _condition("SuccessCriteriaMet", "CompletionsReached", reached),
                               _condition("Complete", "CompletionsReached", reached)]}, self.namespace)
            return
        failed = int(status.get("failed") or 0) + 1
        if deadline_exceeded:
            reason, text = "DeadlineExceeded", "Job was active longer than specified deadline"
        elif failed > int(spec.get("backoffLimit", 6)):
            reason, text = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        else:  # restartPolicy Never: the controller makes a new pod for the next try
            self.api.patch_status("Job", name, {"failed": failed, "active": 0, "ready": 0}, self.namespace)
            job = self.api.get("Job", name, self.namespace)
            if not job_finished(job):
                self._start_pod(job)
            return
        self.api.patch_status("Job", name, {
            "failed": failed, "active": 0, "ready": 0,
            "conditions": [*(status.get("conditions") or []), _condition("FailureTarget", reason, text),
                           _condition("Failed", reason, text)]}, self.namespace)

    def _termination_message(self, pod: PodProcess, exit_code: int) -> str:
        try:
            message = pod.term_path.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
        except OSError:
            message = ""
        if not message.strip() and exit_code != 0 and pod.fallback_to_logs:
            try:
                lines = pod.log_path.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            except OSError:
                lines = []
            message = b"\n".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return message

    def _kill(self, pod: PodProcess) -> None:
        proc = pod.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if pod.deleted:
            self.finished.append((pod.job_name, pod.pod_name, 128 + signal.SIGTERM))

    # --- Deployments (Triton) ----------------------------------------------------------------------
    def _sync_deployments(self) -> None:
        deployments = {d["metadata"]["name"]: d for d in self.api.list("Deployment", self.namespace)}
        for name, inst in list(self.state.tritons.items()):
            dep = deployments.get(name)
            if dep is None or dep["metadata"]["uid"] != inst.deployment_uid or \
                    dep["metadata"].get("deletionTimestamp"):
                self._stop_triton(name)
        for name, dep in deployments.items():
            spec = dep.get("spec") or {}
            container = (((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            if not argv or Path(argv[0]).name != "tritonserver":
                continue
            replicas = int(spec.get("replicas", 1))
            key = json.dumps(spec.get("template"), sort_keys=True)
            inst = self.state.tritons.get(name)
            if inst is not None and (inst.template_key != key or (replicas == 0) != (inst.replicas == 0)):
                self._stop_triton(name)  # a rollout (Recreate): the old server goes first
                inst = None
            if inst is None:
                inst = TritonInstance(dep["metadata"]["uid"], key, replicas)
                self.state.tritons[name] = inst
                if replicas > 0:
                    inst.thread = threading.Thread(target=self._run_triton, args=(dep, container, inst),
                                                   name=f"triton-{name}", daemon=True)
                    inst.thread.start()
            inst.replicas = replicas
            self._report_deployment(dep, inst)

    def _run_triton(self, dep: Body, container: Body, inst: TritonInstance) -> None:
        from kubeforge.serving.triton_repo import CLUSTER_VARIANT, LOCAL_VARIANT
        from kubeforge.serving.triton_server import TritonError, start_triton

        name = dep["metadata"]["name"]
        args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in container.get("args") or [] if "=" in a}
        asked = args.get("--model-repository", "")
        served = asked
        if asked.rstrip("/").endswith(f"/{CLUSTER_VARIANT}"):
            served = asked.rstrip("/")[: -len(CLUSTER_VARIANT)] + LOCAL_VARIANT
        self.served_repositories[name] = (asked, served)
        pod_dir = self.workdir / f"{name}-triton-{uuid.uuid4().hex[:5]}"
        pod_dir.mkdir(parents=True)
        try:
            env = self.container_env(container, {"name": pod_dir.name, "namespace": self.namespace})
            if env.get("HOME", "").startswith("/tmp"):
                env["HOME"] = str(pod_dir)
            process = start_triton(served, args.get("--load-model", name), log_path=pod_dir / "triton.log",
                                   env=env, ready_timeout=self.triton_ready_timeout,
                                   backend_dir=self.triton_backend_dir)
        except (TritonError, ContainerConfigError, ApiError, OSError) as exc:
            inst.error = str(exc)
            self.errors.append(f"Deployment {name}: {exc}")
            return
        if inst.stop_requested:  # removed while it was starting
            from kubeforge.serving.triton_server import stop_triton

            stop_triton(process.pid, timeout=5)
            return
        inst.process = process

    def _report_deployment(self, dep: Body, inst: TritonInstance) -> None:
        """The Deployment controller's status: ready once the local Triton answers /v2/health/ready."""
        replicas = inst.replicas
        ready = replicas if inst.process is not None else 0
        generation = dep["metadata"].get("generation", 1)
        available = ready >= replicas
        status = {
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": replicas - ready,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False",
                 "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                 "message": "Deployment has minimum availability." if available else
                 (inst.error or "Deployment does not have minimum availability.")},
                {"type": "Progressing", "status": "False" if inst.error else "True",
                 "reason": "ProgressDeadlineExceeded" if inst.error else
                 ("NewReplicaSetAvailable" if available else "ReplicaSetUpdated"),
                 "message": inst.error or f'ReplicaSet "{dep["metadata"]["name"]}" is progressing.'}],
        }
        old = dep.get("status") or {}
        counts = {k: v for k, v in status.items() if k != "conditions"}
        if {k: old.get(k) for k in counts} != {k: v or None for k, v in counts.items()} or \
                [(c.get("type"), c.get("status")) for c in old.get("conditions") or []] != \
                [(c["type"], c["status"]) for c in status["conditions"]]:
            # The controller leaves zero counts out: null removes them in a merge patch.
            patch = {**{k: v or None for k, v in counts.items()}, "conditions": status["conditions"],
                     "observedGeneration": generation}
            self.api.patch_status("Deployment", dep["metadata"]["name"], patch, self.namespace)

    def _stop_triton(self, name: str) -> None:
        from kubeforge.serving.triton_server import stop_triton

        inst = self.state.tritons.pop(name, None)
        if inst is None:
            return
        inst.stop_requested = True
        if inst.process is not None:
            stop_triton(inst.process.pid, timeout=5)
            inst.process = None


def secret_data(secret: Body) -> dict[str, bytes]:
    """A Secret's values as the kubelet sees them: `data` decoded. `stringData` is write-only on a real
    server (merged into `data` on write); the emulator keeps it as sent, so it counts here too."""
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out |= {k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()}
    return out


def field_value(path: str, pod_meta: Mapping[str, Any]) -> str:
    """The downward API for the fields a pod runner knows: metadata.name, metadata.namespace,
    metadata.annotations['k'] / labels['k'] (empty here: pods get the template's, not indexed ones)."""
    if path in ("metadata.name", "metadata.namespace"):
        return str(pod_meta.get(path.split(".")[1], ""))
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if match:
        return str((pod_meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path == "spec.nodeName":
        return NODE_NAME
    raise ContainerConfigError(f"fieldRef {path!r} is not supported here")


__all__ = ["PodRunner", "default_commands", "expand_vars", "field_value", "rewrite_paths", "secret_data"]
