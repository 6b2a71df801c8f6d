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
  server stands for all replicas, and one Pod object (Running, `podIP` 127.0.0.1, its container
  ports rewritten to the local server's) for it: the operator reads each pod's Triton metrics.

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

import contextlib
import datetime
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_objects import ApiError, Body, now_iso
from kubeforge.testing.kubelet import (
    NODE_NAME,
    ContainerConfigError,
    Kubelet,
    default_commands,
    expand_vars,
    rewrite_paths,
)
from kubeforge.testing.triton_deployments import TritonDeployments

log = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
KILL_GRACE_SECONDS = 5.0
# What the image (this venv) brings to every container's environment.
IMAGE_ENV_NAMES = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "LD_LIBRARY_PATH")


def _condition(type_: str, reason: str, message: str) -> Body:
    now = now_iso()
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _true(status: Body, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])


def job_finished(job: Body) -> bool:
    status = job.get("status") or {}
    return _true(status, "Complete") or _true(status, "Failed")


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



class PodRunner:
    """`with PodRunner(api, namespace, workdir) as runner:` plays the controllers while the block runs."""

    def __init__(self, api: KubeClient, namespace: str, workdir: str | Path, *, poll: float = 0.2,
                 commands: Mapping[str, list[str]] | None = None, image_env: Mapping[str, str] | None = None,
                 triton_backend_dir: Path | None = None, triton_ready_timeout: float = 180.0) -> None:
        self.api = api
        self.namespace = namespace
        self.workdir = Path(workdir)
        self.poll = poll
        self.kubelet = Kubelet(api, namespace, image_env if image_env is not None else
                               {k: os.environ[k] for k in IMAGE_ENV_NAMES if k in os.environ},
                               commands or default_commands())
        self.tritons = TritonDeployments(api, namespace, self.workdir, self.kubelet, triton_backend_dir,
                                         triton_ready_timeout)
        self.pods: dict[str, PodProcess] = {}  # job uid -> the pod running now
        # (job name, pod name, exit code) of every process that ended.
        self.finished: list[tuple[str, str, int]] = []
        self.errors: list[str] = self.tritons.errors  # one list: the test asserts it stays empty
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
        for pod in list(self.pods.values()):
            self._kill(pod)
        self.tritons.stop_all()

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
        self.tritons.sync()

    # --- what tests ask --------------------------------------------------------------------------
    def running_pid(self, job_name: str) -> int | None:
        """The pid of the process running `job_name`'s pod now, if any."""
        with self._lock:
            for pod in self.pods.values():
                if pod.job_name == job_name and pod.proc is not None and pod.proc.poll() is None:
                    return pod.proc.pid
        return None

    def pod_log(self, job_name: str) -> str:
        """The log of the last pod of `job_name` (for failure messages in tests)."""
        logs = sorted(self.workdir.glob(f"{job_name}-*/log.txt"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace") if logs else ""

    def endpoint(self, service: str) -> str:
        """The local HTTP URL of the Triton behind Service `service` (what a port-forward gives)."""
        return self.tritons.endpoint(service)

    @property
    def served_repositories(self) -> dict[str, tuple[str, str]]:
        """Deployment name -> (the repository it asked for, the one the local Triton serves)."""
        return self.tritons.served_repositories

    # --- Jobs --------------------------------------------------------------------------------------
    def _sync_jobs(self) -> None:
        jobs = {j["metadata"]["uid"]: j for j in self.api.list("Job", self.namespace)}
        for uid, pod in list(self.pods.items()):
            job = jobs.get(uid)
            if job is None or job["metadata"].get("deletionTimestamp"):
                pod.deleted = True
                self._kill(pod)
                with self._lock:
                    del self.pods[uid]
        for uid, job in jobs.items():
            if job_finished(job) or job["metadata"].get("deletionTimestamp"):
                continue
            pod = self.pods.get(uid)
            if pod is None and int((job.get("spec") or {}).get("completions") or 1) > 1:
                # One pod per Job here: an indexed, multi-pod Job would be misreported, so it is refused.
                message = f"Job {job['metadata']['name']}: more than one completion is not emulated"
                if message not in self.errors:
                    self.errors.append(message)
                continue
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
                self.pods[meta["uid"]] = pod
            status = job.get("status") or {}
            self.api.patch_status("Job", meta["name"], {
                "startTime": status.get("startTime") or now_iso(), "active": 1, "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {}}, self.namespace)
        try:
            pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
            cmd, env, cwd = self.kubelet.process(pod_spec, container, pod.pod_name, pod.pod_dir, pod.term_path)
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
            self.pods.pop(pod.job_uid, None)
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


__all__ = ["PodRunner", "default_commands", "expand_vars", "rewrite_paths"]
