"""The pod runner on its own: Jobs against the Kubernetes emulator, run as real local processes.

Each Job's container is `python -c …` (mapped to this interpreter, as `kubeforge` is in the
end-to-end tests), so what the runner promises is checked in seconds: the ConfigMap mounted where
the Job mounts it, the env from `env`/`envFrom`, the Job controller's status and conditions, the
termination message in the Pod, retries up to `backoffLimit`, and a deleted Job's process killed.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from kubeforge.testing.pod_runner import PodRunner, expand_vars, rewrite_paths

# Reads the mounted file (its path an argument, as `kubeforge step --spec` gets it) and the env,
# writes them to its log, and exits with $EXIT_CODE after writing the termination message where
# the step would (KUBEFORGE_TERMINATION_LOG).
SCRIPT = """
import os, sys, time
print(open(sys.argv[1]).read(), os.environ['TOKEN'], os.environ['GREETING'], flush=True)
time.sleep(float(os.environ.get('SLEEP', '0')))
code = int(os.environ.get('EXIT_CODE', '0'))
if code:
    open(os.environ['KUBEFORGE_TERMINATION_LOG'], 'w').write('step failed: ' + os.environ['GREETING'])
sys.exit(code)
"""


def job(name: str, ns: str, backoff: int = 0, **env: str) -> dict[str, Any]:
    container = {
        "name": "step", "image": "registry.test/app:t", "command": ["python", "-c", SCRIPT],
        "args": ["/etc/app/conf.txt"],
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "env": [{"name": "NAME", "value": "world"}, {"name": "GREETING", "value": "hello $(NAME)"},
                *({"name": k, "value": v} for k, v in env.items())],
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/app", "readOnly": True}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {"backoffLimit": backoff, "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "restartPolicy": "Never", "containers": [container],
                "volumes": [{"name": "conf", "configMap": {"name": "conf"}}]}}}}


@pytest.fixture
def runner(kube_emulator: Any, kube_namespace: str, tmp_path: Path) -> Any:
    kube_emulator.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf",
                                                                                "namespace": kube_namespace},
                          "data": {"conf.txt": "from the configmap"}})
    with PodRunner(kube_emulator, kube_namespace, tmp_path / "pods", poll=0.05) as running:
        yield running
        assert not running.errors, running.errors


def add_secret(emu: Any, ns: str) -> None:
    emu.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
                "data": {"TOKEN": base64.b64encode(b"s3cr3t").decode()}})


def conditions(job: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c.get("reason", "") for c in (job.get("status") or {}).get("conditions") or []
            if c["status"] == "True"}


def finished(emu: Any, ns: str, name: str) -> dict[str, Any]:
    return emu.wait_for(lambda: (j := emu.get("Job", name, ns)) and ({"Complete", "Failed"} & set(conditions(j)))
                        and j, timeout=30, message=f"Job {name} finished")


def pods_of(emu: Any, ns: str, name: str) -> list[dict[str, Any]]:
    return emu.list("Pod", ns, f"batch.kubernetes.io/job-name={name}")


def test_a_job_runs_with_its_mounts_and_env_and_completes(runner: Any, kube_emulator: Any,
                                                           kube_namespace: str) -> None:
    emu, ns = kube_emulator, kube_namespace
    add_secret(emu, ns)
    created = emu.create(job("ok", ns))
    done = finished(emu, ns, "ok")
    status = done["status"]
    assert conditions(done) == {"SuccessCriteriaMet": "CompletionsReached", "Complete": "CompletionsReached"}
    assert status["succeeded"] == 1 and status["active"] == 0 and status["startTime"] and status["completionTime"]
    [pod] = pods_of(emu, ns, "ok")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert pod["metadata"]["labels"]["app"] == "ok"
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert runner.pod_log("ok").strip() == "from the configmap s3cr3t hello world"


def test_a_failing_pod_is_retried_then_the_job_fails_with_the_message(runner: Any, kube_emulator: Any,
                                                                       kube_namespace: str) -> None:
    emu, ns = kube_emulator, kube_namespace
    add_secret(emu, ns)
    emu.create(job("bad", ns, backoff=1, EXIT_CODE="3"))
    done = finished(emu, ns, "bad")
    assert conditions(done) == {"FailureTarget": "BackoffLimitExceeded", "Failed": "BackoffLimitExceeded"}
    assert done["status"]["failed"] == 2 and done["status"]["active"] == 0
    pods = pods_of(emu, ns, "bad")
    assert len(pods) == 2  # restartPolicy Never: a new pod for the retry
    for pod in pods:
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
        assert terminated["message"] == "step failed: hello world"


def test_without_a_termination_message_the_log_tail_is_used(runner: Any, kube_emulator: Any,
                                                             kube_namespace: str) -> None:
    emu, ns = kube_emulator, kube_namespace
    add_secret(emu, ns)
    spec = job("crash", ns)
    spec["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python", "-c", "import sys; print('line one', flush=True); print('it broke', file=sys.stderr); sys.exit(2)"]
    emu.create(spec)
    finished(emu, ns, "crash")
    [pod] = pods_of(emu, ns, "crash")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2 and terminated["message"] == "line one\nit broke"


def test_a_missing_secret_holds_the_pod_until_it_exists(runner: Any, kube_emulator: Any,
                                                        kube_namespace: str) -> None:
    emu, ns = kube_emulator, kube_namespace
    emu.create(job("early", ns))
    waiting = emu.wait_for(lambda: [p for p in pods_of(emu, ns, "early")
                                    if "waiting" in ((p.get("status") or {}).get("containerStatuses") or [{}])[0]
                                    .get("state", {})], timeout=10, message="the pod waiting")[0]
    state = waiting["status"]["containerStatuses"][0]["state"]["waiting"]
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "creds" not found'}
    add_secret(emu, ns)
    assert "Complete" in conditions(finished(emu, ns, "early"))
    assert len(pods_of(emu, ns, "early")) == 1


def test_deleting_a_running_job_kills_its_process(runner: Any, kube_emulator: Any, kube_namespace: str) -> None:
    emu, ns = kube_emulator, kube_namespace
    add_secret(emu, ns)
    emu.create(job("slow", ns, SLEEP="60"))
    pid = emu.wait_for(lambda: runner.running_pid("slow"), timeout=10, message="the process running")
    assert emu.get("Job", "slow", ns)["status"]["active"] == 1
    emu.delete("Job", "slow", ns)
    emu.wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=15, message="the process killed")
    emu.wait_for(lambda: not pods_of(emu, ns, "slow"), timeout=5, message="the pod collected with its Job")
    assert ("slow", 128 + 15) in [(j, code) for j, _, code in runner.finished]


def test_paths_under_a_mount_and_kubelet_variables_are_rewritten() -> None:
    mounts = {"/etc/kubeforge": Path("/w/run-spec"), "/tmp": Path("/w/tmp")}
    assert rewrite_paths("/etc/kubeforge/run.json", mounts) == "/w/run-spec/run.json"
    assert rewrite_paths("--spec=/etc/kubeforge/run.json", mounts) == "--spec=/w/run-spec/run.json"
    assert rewrite_paths("/tmp", mounts) == "/w/tmp"
    assert rewrite_paths("/tmpfoo/x", mounts) == "/tmpfoo/x"  # not under the mount
    assert rewrite_paths("s3://bucket/etc/kubeforge", mounts) == "s3://bucket/etc/kubeforge"
    assert expand_vars("--rank=$(NODE_RANK) $(MISSING)", {"NODE_RANK": "0"}) == "--rank=0 $(MISSING)"
