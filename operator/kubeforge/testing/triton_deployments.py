"""The pod runner's Deployment controller and kubelet for Triton (test infrastructure).

For every Deployment whose container runs `tritonserver`, the local `tritonserver`
(`kubeforge.serving.triton_server`, as local mode starts it) serves the repository named by
`--model-repository` (its Python-backend sibling: see `kubeforge.testing.pod_runner`), and the
Deployment's status says when it is ready. One local server stands for all replicas, and one Pod
object for it (Running at 127.0.0.1 with the local server's ports), what the operator lists to read
each pod's metrics.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeforge.testing.kube_client import KubeClient
from kubeforge.testing.kube_objects import ApiError, Body
from kubeforge.testing.kubelet import NODE_NAME, ContainerConfigError, Kubelet


@dataclass
class TritonInstance:
    """The local tritonserver standing for one Deployment's pods."""

    deployment_uid: str
    template_key: str
    replicas: int
    thread: threading.Thread | None = None
    process: Any = None  # kubeforge.serving.triton_server.TritonProcess once ready
    error: str = ""
    pod_name: str | None = None  # the Pod object standing for the server, once it is ready
    stop_requested: bool = False
    # stop() and a server that just became ready must agree on who stops it.
    lock: threading.Lock = field(default_factory=threading.Lock)


class TritonDeployments:
    """Runs and reports the Triton Deployments of one namespace."""

    def __init__(self, api: KubeClient, namespace: str, workdir: Path, kubelet: Kubelet,
                 backend_dir: Path | None = None, ready_timeout: float = 180.0) -> None:
        self.api = api
        self.namespace = namespace
        self.workdir = workdir
        self.kubelet = kubelet
        self.backend_dir = backend_dir
        self.ready_timeout = ready_timeout
        self.servers: dict[str, TritonInstance] = {}  # deployment name -> its server
        self.served_repositories: dict[str, tuple[str, str]] = {}  # deployment -> (asked, served)
        self.errors: list[str] = []

    def stop_all(self, starting_timeout: float = 60.0) -> None:
        """Stop every server; one still starting is stopped by its thread once start_triton returns."""
        threads = [inst.thread for inst in self.servers.values() if inst.thread is not None]
        for name in list(self.servers):
            self.stop(name)
        for thread in threads:
            thread.join(starting_timeout)

    def endpoint(self, service: str) -> str:
        """The local HTTP URL of the Triton behind Service `service` (what a port-forward gives)."""
        svc = self.api.get("Service", service, self.namespace)
        selector = (svc.get("spec") or {}).get("selector") or {}
        for dep in self.api.list("Deployment", self.namespace):
            labels = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                inst = self.servers.get(dep["metadata"]["name"])
                if inst is not None and inst.process is not None:
                    return str(inst.process.http_url)
                raise LookupError(f"Service {service}: Deployment {dep['metadata']['name']} has no ready Triton "
                                  f"({inst.error if inst else 'not started'})")
        raise LookupError(f"Service {service}: no Deployment matches its selector {selector}")

    def sync(self) -> None:
        """One pass: start, roll, stop and report every Triton Deployment of the namespace."""
        deployments = {d["metadata"]["name"]: d for d in self.api.list("Deployment", self.namespace)}
        for name, inst in list(self.servers.items()):
            dep = deployments.get(name)
            if dep is None or dep["metadata"]["uid"] != inst.deployment_uid or \
                    dep["metadata"].get("deletionTimestamp"):
                self.stop(name)
        for name, dep in deployments.items():
            spec = dep.get("spec") or {}
            container = (((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            if not argv or Path(argv[0]).name != "tritonserver":
                continue
            replicas = int(spec.get("replicas", 1))
            key = json.dumps(spec.get("template"), sort_keys=True)
            inst = self.servers.get(name)
            if inst is not None and (inst.template_key != key or (replicas == 0) != (inst.replicas == 0)):
                self.stop(name)  # a rollout (Recreate): the old server goes first
                inst = None
            if inst is None:
                inst = TritonInstance(dep["metadata"]["uid"], key, replicas)
                self.servers[name] = inst
                if replicas > 0:
                    inst.thread = threading.Thread(target=self._run, args=(dep, container, inst),
                                                   name=f"triton-{name}", daemon=True)
                    inst.thread.start()
            inst.replicas = replicas
            self._ensure_pod(dep, container, inst)
            self._report(dep, inst)

    def _ensure_pod(self, dep: Body, container: Body, inst: TritonInstance) -> None:
        """The ReplicaSet controller's and kubelet's Pod for a ready server: labelled by the template,
        Running at 127.0.0.1, its container ports the local server's (the pod network of this runner:
        what the operator reads a pod's metrics from)."""
        process = inst.process
        if process is None or inst.pod_name is not None:
            return
        name = f"{dep['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        self.api.create(pod_of(dep, process, name))
        inst.pod_name = name
        self.api.patch_status("Pod", name, running_status(container, process), self.namespace)

    def _run(self, dep: Body, container: Body, inst: TritonInstance) -> None:
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
            env = self.kubelet.container_env(container, {"name": pod_dir.name, "namespace": self.namespace})
            if env.get("HOME", "").startswith("/tmp"):
                env["HOME"] = str(pod_dir)
            process = start_triton(served, args.get("--load-model", name), log_path=pod_dir / "triton.log",
                                   env=env, ready_timeout=self.ready_timeout,
                                   backend_dir=self.backend_dir)
        except (TritonError, ContainerConfigError, ApiError, OSError) as exc:
            inst.error = str(exc)
            self.errors.append(f"Deployment {name}: {exc}")
            return
        with inst.lock:
            if not inst.stop_requested:
                inst.process = process
                return
        from kubeforge.serving.triton_server import stop_triton

        stop_triton(process.pid, timeout=5)  # removed while it was starting

    def _report(self, dep: Body, inst: TritonInstance) -> None:
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

    def stop(self, name: str) -> None:
        from kubeforge.serving.triton_server import stop_triton

        inst = self.servers.pop(name, None)
        if inst is None:
            return
        if inst.pod_name is not None:
            self.api.delete("Pod", inst.pod_name, self.namespace, missing_ok=True)
        with inst.lock:
            inst.stop_requested = True
            process, inst.process = inst.process, None
        if process is not None:
            stop_triton(process.pid, timeout=5)


def _port(url: str) -> int:
    return int(url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])


def pod_of(dep: Body, process: Any, name: str) -> Body:
    """The ReplicaSet controller's Pod `name` of Deployment `dep`, standing for the local tritonserver
    `process`: the template's labels and spec, its container ports the local server's (the pod network
    here is 127.0.0.1 with the local ports)."""
    local = {"http": _port(process.http_url), "grpc": _port(process.grpc_url), "metrics": _port(process.metrics_url)}
    template = (dep.get("spec") or {}).get("template") or {}
    spec = json.loads(json.dumps(template.get("spec") or {}))
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") in local:
                p["containerPort"] = local[p["name"]]
    meta = dep["metadata"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": (template.get("metadata") or {}).get("labels") or {},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": {**spec, "nodeName": NODE_NAME}}


def running_status(container: Body, process: Any) -> Body:
    """The kubelet's status of that Pod: Running and Ready at 127.0.0.1."""
    return {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "hostIP": "127.0.0.1",
            "conditions": [{"type": t, "status": "True"} for t in ("PodScheduled", "Initialized",
                                                                   "ContainersReady", "Ready")],
            "containerStatuses": [{"name": container.get("name", "triton"), "ready": True, "started": True,
                                   "restartCount": 0, "image": container.get("image", ""), "imageID": "",
                                   "containerID": f"local://{process.pid}", "state": {"running": {}}}]}
