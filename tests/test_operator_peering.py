"""Two operator replicas with Kopf peering: one handles resources, the other stands by and takes over
when the first dies; nothing is handled twice.

Real: two `kubeforge operator run` processes (the chart's command, with its peering settings: the
ClusterKopfPeering the chart creates, its peering name, an empty KUBEFORGE_PEERING_PRIORITY), Kopf,
and the KMock-based Kubernetes emulator over HTTP. A pod dying is a SIGKILL (no goodbye in the
peering object), so the standby only takes over once the dead replica's keep-alive expires; the
test shortens the peering lifetime to keep that quick.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kubeforge.operator.settings import PEERING_PRIORITY_MAX, OperatorSettings
from kubeforge.testing.kube_emulator import KubeEmulator, kopf_peering_crds
from kubeforge.testing.kube_operator import dataset_version, training_job
from kubeforge.testing.operator_process import OperatorProcess

CHART_VALUES = Path(__file__).resolve().parents[1] / "helm/kubeforge/values.yaml"
NS = "peering"
LIFETIME = 5  # seconds a replica's keep-alive counts (the chart's default is 60)
COUNT = 5
PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"


def peering_name() -> str:
    name = yaml.safe_load(CHART_VALUES.read_text())["peering"]["name"]
    assert name == OperatorSettings().peering_name  # the chart and the operator agree
    return name


def jobs_of(emu: KubeEmulator, owner: str) -> list[dict[str, Any]]:
    return emu.list("Job", NS, f"kubeforge.io/name={owner}")


def reconciled(op: OperatorProcess) -> float:
    return op.sample("kubeforge_reconciles_total", kind="TrainingJob") or 0.0


def peer_priorities(emu: KubeEmulator, name: str) -> list[int]:
    status = emu.get("ClusterKopfPeering", name, None).get("status") or {}
    return sorted(peer["priority"] for peer in status.values())


def test_one_replica_handles_resources_and_the_standby_takes_over(kube_emulator: KubeEmulator,
                                                                   tmp_path: Path) -> None:
    emu, name = kube_emulator, peering_name()
    for crd in kopf_peering_crds():
        emu.create(crd)
    emu.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}})
    emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emu.create(dataset_version("data", NS))
    # Ready, as its own run would have left it: the TrainingJobs' Jobs are the only Jobs made.
    emu.patch_status("DatasetVersion", "data", {
        "phase": "Succeeded", "digest": "e" * 64, "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
                        "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}, NS)
    # As the chart's Deployment sets them (cluster-wide, priority empty = random per pod); the store
    # is never read on this path.
    env = {"KUBEFORGE_STORE": "s3://peering/store", "KUBEFORGE_S3_ENDPOINT": "127.0.0.1:1",
           "KUBEFORGE_WATCH_NAMESPACES": "", "KUBEFORGE_PEERING_NAME": name, "KUBEFORGE_PEERING_PRIORITY": "",
           "KUBEFORGE_PEERING_LIFETIME_SECONDS": str(LIFETIME)}
    a = OperatorProcess(emu.kubeconfig_path, tmp_path, "a", env)
    b: OperatorProcess | None = None
    try:
        a.start()
        # Alone, A resumes once it has read the peering object, and announces its random priority there.
        emu.wait_for(lambda: a.sample("kubeforge_operator_active") == 1, timeout=30, message="A active")
        prio_a = int(a.sample("kubeforge_operator_peering_priority") or 0)
        assert 1 <= prio_a <= PEERING_PRIORITY_MAX
        emu.wait_for(lambda: peer_priorities(emu, name) == [prio_a], message="A's keep-alive")
        emu.create(training_job("first", NS, "data"))
        emu.wait_for(lambda: jobs_of(emu, "first"), timeout=30, message="A makes the first Job")

        # B outranks A (as a new pod of a rollout may): A pauses, B takes over.
        b = OperatorProcess(emu.kubeconfig_path, tmp_path, "b",
                            {**env, "KUBEFORGE_PEERING_PRIORITY": str(prio_a + 1)})
        b.start()
        emu.wait_for(lambda: a.sample("kubeforge_operator_active") == 0 and PAUSED in a.log(),
                     timeout=30, message="A pauses in favour of B")
        assert re.search(rf"{PAUSED} \[<Peer [^>]*priority={prio_a + 1},", a.log())
        emu.wait_for(lambda: b.sample("kubeforge_operator_active") == 1, timeout=30, message="B active")
        assert peer_priorities(emu, name) == [prio_a, prio_a + 1]
        by_a = reconciled(a)

        names = [f"tj-{i}" for i in range(COUNT)]
        for tj in names:
            emu.create(training_job(tj, NS, "data"))
        for tj in names:
            emu.wait_for(lambda tj=tj: jobs_of(emu, tj), timeout=30, message=f"the Job of {tj}")
        # B looked at every one (its resume of "first" and the new ones); A, paused, at none.
        emu.wait_for(lambda: reconciled(b) >= COUNT + 1, timeout=30, message="B reconciles all")
        assert reconciled(a) == by_a
        assert a.healthz()[0] == 200  # a standby stays alive and Ready for the chart's probes
        assert emu.request_count("POST", "jobs") == 1 + COUNT

        # B's pod dies without a word; once its keep-alive expires, A resumes and handles new work.
        b.kill()
        emu.wait_for(lambda: RESUMED in a.log().split(PAUSED, 1)[1] and a.sample("kubeforge_operator_active") == 1,
                     timeout=LIFETIME + 30, message="A takes over after B's keep-alive expired")
        emu.wait_for(lambda: peer_priorities(emu, name) == [prio_a], timeout=30, message="B cleaned from the peering")
        emu.create(training_job("after", NS, "data"))
        emu.wait_for(lambda: jobs_of(emu, "after"), timeout=30, message="A makes the Job after the takeover")
        # A looked at everything B made (resuming them) and made nothing twice.
        emu.wait_for(lambda: reconciled(a) >= by_a + COUNT + 1, timeout=30, message="A reconciles all")
        for tj in ["first", *names, "after"]:
            assert len(jobs_of(emu, tj)) == 1, tj
        assert emu.request_count("POST", "jobs") == COUNT + 2
        for op in (a, b):
            assert "conflicting operators" not in op.log()
    finally:
        for op in (a, b):
            if op is not None:
                op.stop()
