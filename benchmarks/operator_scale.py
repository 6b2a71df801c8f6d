"""Operator scale: N TrainingJobs at once; how long until every one has its Job, and at what memory.

    .venv/bin/python benchmarks/operator_scale.py [--count 500]

The Kubernetes API is the KMock-based emulator (kubeforge.testing.kube_emulator) served over HTTP
in this process, enforcing what an API server enforces (the Helm chart's RBAC, CRD and core-kind
schemas); the operator is the real one, `kubeforge operator run`, in its own process, logged in as
the chart's ServiceAccount through a kubeconfig, so its memory is its own. The DatasetVersion the
TrainingJobs train on is made Ready up front (as its controller would have), so the measured path
is: TrainingJob created ->
operator resolves its DatasetVersion -> ConfigMap + Job created. Creation-to-Job latency is taken
from a watch on Jobs (the moment the emulator streams the Job's ADDED event).

The last line printed is one JSON object: created, with_job, seconds_until_all, median_s, p99_s,
peak_rss_mb, denied (requests RBAC refused the operator) and rejected (its writes the API server
refused), both must be 0, and more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from kubeforge.testing.chart_rbac import chart_accounts, operator_kubeconfig
from kubeforge.testing.kube_emulator import KubeEmulator, kopf_peering_crds
from kubeforge.testing.kube_operator import dataset_version, training_job
from kubeforge.testing.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"


def rss_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def watch_jobs(emu: KubeEmulator, seen: dict[str, float], stop: threading.Event) -> None:
    """Record when each TrainingJob's Job first appears (by its kubeforge.io/name label)."""
    while not stop.is_set():
        try:
            with emu.stream(f"/apis/batch/v1/namespaces/{NS}/jobs?watch=true&timeoutSeconds=5") as rsp:
                for line in rsp:
                    event = json.loads(line)
                    owner = (event["object"]["metadata"].get("labels") or {}).get("kubeforge.io/name")
                    if event["type"] == "ADDED" and owner:
                        seen.setdefault(owner, time.monotonic())
        except OSError:
            time.sleep(0.1)


def start_operator(emu: KubeEmulator, workdir: Path) -> OperatorProcess:
    """`kubeforge operator run -n NS` as the chart's ServiceAccount; started once /healthz answers."""
    env = {"KUBEFORGE_STORE": "s3://bench/store", "KUBEFORGE_S3_ENDPOINT": "127.0.0.1:1"}  # never read here
    return OperatorProcess(operator_kubeconfig(emu), workdir, "scale", env, args=("operator", "run", "-n", NS)).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--creators", type=int, default=4, help="parallel client threads creating resources")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    with KubeEmulator(workdir=workdir) as emu:
        emu.apply_crds(ROOT / "crds")
        for crd in kopf_peering_crds():  # as the chart installs them: `operator run` is not standalone
            emu.create(crd)
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        emu.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                    "metadata": {"name": "kubeforge", "namespace": NS}})
        emu.create(dataset_version("data", NS))
        # Ready, as the DatasetVersion's own run would have left it (observedGeneration: nothing to redo).
        emu.patch_status("DatasetVersion", "data", {
            "phase": "Succeeded", "digest": "e" * 64, "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
                            "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}, NS)
        operator = start_operator(emu, workdir)
        proc, log = operator.proc, operator.log_path
        assert proc is not None
        peak = {"rss": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak["rss"] = max(peak["rss"], rss_kb(proc.pid, "VmRSS"))
                time.sleep(0.1)

        seen: dict[str, float] = {}
        created: dict[str, float] = {}
        threads = [threading.Thread(target=sample, daemon=True),
                   threading.Thread(target=watch_jobs, args=(emu, seen, stop), daemon=True)]
        for thread in threads:
            thread.start()
        idle_rss = rss_kb(proc.pid, "VmRSS")

        def create(offset: int) -> None:
            for i in range(offset, args.count, args.creators):
                name = f"tj-{i:04d}"
                emu.create(training_job(name, NS, "data"))
                created[name] = time.monotonic()

        start = time.monotonic()
        creators = [threading.Thread(target=create, args=(k,)) for k in range(args.creators)]
        for thread in creators:
            thread.start()
        for thread in creators:
            thread.join()
        created_in = time.monotonic() - start
        deadline = start + args.timeout
        while time.monotonic() < deadline and len(set(created) & set(seen)) < args.count:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        until_all = time.monotonic() - start
        hwm = rss_kb(proc.pid, "VmHWM")
        denied = len(emu.denials(chart_accounts().operator_user))
        rejected = len(emu.rejected_writes(chart_accounts().operator_user))
        stop.set()
        operator.stop()

    with_job = sorted(seen[n] - created[n] for n in created if n in seen)
    ok = len(with_job) == args.count
    p99 = with_job[min(len(with_job) - 1, round(0.99 * (len(with_job) - 1)))] if with_job else None
    result = {
        "created": len(created), "with_job": len(with_job),
        "seconds_until_all": round(until_all, 2) if ok else None,
        "seconds_creating": round(created_in, 2),
        "median_s": round(statistics.median(with_job), 3) if with_job else None,
        "p99_s": round(p99, 3) if p99 is not None else None,
        "max_s": round(with_job[-1], 3) if with_job else None,
        "peak_rss_mb": round(max(peak["rss"], hwm) / 1024, 1),
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "jobs_in_api": len(seen), "denied": denied, "rejected": rejected,
        "operator": "kubeforge operator run (subprocess)",
        "api": "KubeEmulator (KMock subclass, HTTP)",
    }
    print(f"{'metric':<22}{'value':>14}")
    for key in ("created", "with_job", "seconds_creating", "seconds_until_all", "median_s", "p99_s", "max_s",
                "idle_rss_mb", "peak_rss_mb", "denied", "rejected"):
        print(f"{key:<22}{result[key]!s:>14}")
    if not ok:
        print(f"not every TrainingJob got its Job; operator log: {log}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
