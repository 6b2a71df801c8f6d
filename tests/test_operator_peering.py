"""Two operator replicas with Kopf peering: one handles resources, the other stands by and takes over
when the first dies; nothing is handled twice.

Real: two `kubeforge operator run` processes (the chart's command, with its peering settings: the
ClusterKopfPeering the chart creates, its peering name, an empty KUBEFORGE_PEERING_PRIORITY), Kopf,
and the KMock-based Kubernetes emulator over HTTP. A pod dying is a SIGKILL (no goodbye in the
peering object), so the standby only takes over once the dead replica's keep-alive expires; the
test shortens the peering lifetime to keep that quick. A SIGTERM (a rolling update) hands over at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeforge.operator.settings import PEERING_PRIORITY_MAX, OperatorSettings
from kubeforge.testing.chart_rbac import operator_kubeconfig
from kubeforge.testing.kube_emulator import KubeEmulator, kopf_peering_crds
from kubeforge.testing.kube_operator import dataset_version, training_job
from kubeforge.testing.operator_process import OperatorProcess

CHART_VALUES = Path(__file__).resolve().parents[1] / "helm/kubeforge/values.yaml"
LIFETIME = 5  # seconds a replica's keep-alive counts (the chart's default is 60)
COUNT = 5
PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"


def peering_name() -> str:
    name = yaml.safe_load(CHART_VALUES.read_text())["peering"]["name"]
    assert name == OperatorSettings().peering_name  # the chart and the operator agree
    return name


def jobs_of(emu: KubeEmulator, ns: str, owner: str) -> list[dict[str, Any]]:
    return emu.list("Job", ns, f"kubeforge.io/name={owner}")


def reconciled(op: OperatorProcess) -> float:
    return op.sample("kubeforge_reconciles_total", kind="TrainingJob") or 0.0


def peer_priorities(emu: KubeEmulator) -> list[int]:
    """The priorities of the replicas in the peering object, as Kopf keeps them there."""
    status = emu.get("ClusterKopfPeering", peering_name(), None).get("status") or {}
    return sorted(peer["priority"] for peer in status.values())


@pytest.fixture
def peering_env(kube_emulator: KubeEmulator, kube_namespace: str) -> dict[str, str]:
    """The chart's peering objects in the emulator, a Ready DatasetVersion in this test's namespace, and
    the environment the chart's Deployment gives each replica (cluster-wide, priority empty = random
    per pod; the store is never read on this path)."""
    emu, name = kube_emulator, peering_name()
    for crd in kopf_peering_crds():
        if not emu.find("CustomResourceDefinition", crd["metadata"]["name"], None):
            emu.create(crd)
    if not emu.find("ClusterKopfPeering", name, None):
        emu.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}})
    emu.create(dataset_version("data", kube_namespace))
    # Ready, as its own run would have left it: the TrainingJobs' Jobs are the only Jobs made.
    emu.patch_status("DatasetVersion", "data", {
        "phase": "Succeeded", "digest": "e" * 64, "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
                        "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}, kube_namespace)
    return {"KUBEFORGE_STORE": "s3://peering/store", "KUBEFORGE_S3_ENDPOINT": "127.0.0.1:1",
            "KUBEFORGE_WATCH_NAMESPACES": "", "KUBEFORGE_PEERING_NAME": name, "KUBEFORGE_PEERING_PRIORITY": "",
            "KUBEFORGE_PEERING_LIFETIME_SECONDS": str(LIFETIME)}


@pytest.fixture
def replicas(kube_emulator: KubeEmulator, peering_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """`replicas(name, **env)` starts one more operator process; all are stopped after the test."""
    started: list[OperatorProcess] = []

    def start(name: str, **env: str) -> OperatorProcess:
        op = OperatorProcess(operator_kubeconfig(kube_emulator), tmp_path, name, {**peering_env, **env})
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()
    assert kube_emulator.denials() == []  # the replicas ran as the chart's ServiceAccount, refused nothing


def active_alone(emu: KubeEmulator, op: OperatorProcess) -> int:
    """Wait until `op`, the only replica, is active and announced in the peering; its priority."""
    emu.wait_for(lambda: op.sample("kubeforge_operator_active") == 1, timeout=30, message=f"{op.name} active")
    priority = int(op.sample("kubeforge_operator_peering_priority") or 0)
    assert 1 <= priority <= PEERING_PRIORITY_MAX
    emu.wait_for(lambda: peer_priorities(emu) == [priority], message=f"{op.name}'s keep-alive alone")
    return priority


def test_one_replica_handles_resources_and_the_standby_takes_over(kube_emulator: KubeEmulator,
                                                                   kube_namespace: str, replicas: Any) -> None:
    emu, ns = kube_emulator, kube_namespace
    posts = emu.request_count("POST", "jobs")
    # Alone, A resumes once it has read the peering object, and announces its random priority there.
    a = replicas("a")
    prio_a = active_alone(emu, a)
    emu.create(training_job("first", ns, "data"))
    emu.wait_for(lambda: jobs_of(emu, ns, "first"), timeout=30, message="A makes the first Job")

    # B outranks A (as a new pod of a rollout may): A pauses, B takes over.
    b = replicas("b", KUBEFORGE_PEERING_PRIORITY=str(prio_a + 1))
    emu.wait_for(lambda: a.sample("kubeforge_operator_active") == 0 and PAUSED in a.log(),
                 timeout=30, message="A pauses in favour of B")
    assert re.search(rf"{PAUSED} \[<Peer [^>]*priority={prio_a + 1},", a.log())
    emu.wait_for(lambda: b.sample("kubeforge_operator_active") == 1, timeout=30, message="B active")
    assert peer_priorities(emu) == [prio_a, prio_a + 1]
    by_a = reconciled(a)

    names = [f"tj-{i}" for i in range(COUNT)]
    for tj in names:
        emu.create(training_job(tj, ns, "data"))
    for tj in names:
        emu.wait_for(lambda tj=tj: jobs_of(emu, ns, tj), timeout=30, message=f"the Job of {tj}")
    # B looked at every one (its resume of "first" and the new ones); A, paused, at none.
    emu.wait_for(lambda: reconciled(b) >= COUNT + 1, timeout=30, message="B reconciles all")
    assert reconciled(a) == by_a
    assert a.healthz()[0] == 200  # a standby stays alive and Ready for the chart's probes
    assert emu.request_count("POST", "jobs") == posts + 1 + COUNT

    # B's pod dies without a word; once its keep-alive expires, A resumes and handles new work.
    b.kill()
    emu.wait_for(lambda: RESUMED in a.log().split(PAUSED, 1)[1] and a.sample("kubeforge_operator_active") == 1,
                 timeout=LIFETIME + 30, message="A takes over after B's keep-alive expired")
    emu.wait_for(lambda: peer_priorities(emu) == [prio_a], timeout=30, message="B cleaned from the peering")
    emu.create(training_job("after", ns, "data"))
    emu.wait_for(lambda: jobs_of(emu, ns, "after"), timeout=30, message="A makes the Job after the takeover")
    # A looked at everything B made (resuming them) and made nothing twice.
    emu.wait_for(lambda: reconciled(a) >= by_a + COUNT + 1, timeout=30, message="A reconciles all")
    for tj in ["first", *names, "after"]:
        assert len(jobs_of(emu, ns, tj)) == 1, tj
    assert emu.request_count("POST", "jobs") == posts + COUNT + 2
    for op in (a, b):
        assert "conflicting operators" not in op.log()


def test_a_replica_that_stops_cleanly_hands_over_at_once(kube_emulator: KubeEmulator, kube_namespace: str,
                                                         replicas: Any) -> None:
    """A rolling update's SIGTERM: the stopping replica leaves the peering, the standby resumes without
    waiting for its keep-alive to expire (B's record claims an hour; only its goodbye lets A resume)."""
    emu, ns = kube_emulator, kube_namespace
    posts = emu.request_count("POST", "jobs")
    a = replicas("a")
    prio_a = active_alone(emu, a)
    b = replicas("b", KUBEFORGE_PEERING_PRIORITY=str(prio_a + 1), KUBEFORGE_PEERING_LIFETIME_SECONDS="3600")
    emu.wait_for(lambda: a.sample("kubeforge_operator_active") == 0 and b.sample("kubeforge_operator_active") == 1,
                 timeout=30, message="A pauses in favour of B")
    emu.create(training_job("during", ns, "data"))
    emu.wait_for(lambda: jobs_of(emu, ns, "during"), timeout=30, message="B makes the Job")
    b.stop()
    assert b.proc is not None and b.proc.returncode == 0
    assert peer_priorities(emu) == [prio_a]  # B said goodbye on its way out
    emu.wait_for(lambda: a.sample("kubeforge_operator_active") == 1, timeout=30, message="A resumes")
    emu.create(training_job("after", ns, "data"))
    emu.wait_for(lambda: jobs_of(emu, ns, "after"), timeout=30, message="A makes the Job")
    assert [len(jobs_of(emu, ns, tj)) for tj in ("during", "after")] == [1, 1]
    assert emu.request_count("POST", "jobs") == posts + 2
