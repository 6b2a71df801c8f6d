"""The quickstart through the operator, end to end: seconds from `kubectl apply` to Ready, per resource.

    .venv/bin/python benchmarks/operator_e2e.py [--images 40 --image-size 128 --epochs 1]

One command starts everything it needs in this process or as children, and stops it all after:
SeaweedFS (the store), the KMock-based Kubernetes emulator (HTTP), the real operator as
`kubeforge operator run` in its own process (production settings, logged in through a kubeconfig,
Kopf peering on), and `kubeforge.testing.pod_runner.PodRunner` playing the kubelet and the Job and
Deployment controllers (each step is a real `kubeforge step …` process; Triton is the local
`tritonserver` on the S3 repository the Deployment names, Python-backend variant). The data is made
with `kubeforge datasets synth shapes` and uploaded to SeaweedFS; examples/quickstart/*.yaml are
applied at once, with the data's s3:// prefix and the sizes given here (the defaults are the test's
tiny ones; `--images 500 --image-size 160 --epochs 8` is the demo's configuration).

Printed: a table with, per resource, when it was first Running, when it was Ready (Succeeded, or
an InferenceService's `ready: true`) and how long it spent Waiting for its references, all in
seconds from the apply; then, last, one JSON line with `ready` (the InferenceService went Ready
and `kubeforge predict --url` answered), `total_s` (apply -> prediction answered) and `seconds`
(apply -> Ready, per resource).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kubeforge.testing.chart_rbac import operator_kubeconfig
from kubeforge.testing.kube_emulator import KubeEmulator, kopf_peering_crds
from kubeforge.testing.operator_process import OperatorProcess
from kubeforge.testing.pod_runner import PodRunner
from kubeforge.testing.seaweedfs import SeaweedFS

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"
NS = "quickstart"
BUCKET = "bench-e2e"
SECRET = "kubeforge-store"
# (kind, name) in the order the quickstart makes them; the Benchmark is made by the TrainingJob.
RESOURCES = [("DatasetVersion", "shapes-v1"), ("TrainingJob", "shapes-detector"),
             ("Benchmark", "shapes-detector-benchmark"), ("InferenceService", "shapes")]


def kubeforge(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run([sys.executable, "-m", "kubeforge.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kubeforge {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def start_operator(emu: KubeEmulator, s3: SeaweedFS, workdir: Path) -> OperatorProcess:
    """`kubeforge operator run -n NS`, as the chart's Deployment runs it; started once /healthz answers."""
    env = {**s3.env(), "KUBEFORGE_STORE": f"s3://{BUCKET}/store", "KUBEFORGE_STORE_SECRET": SECRET}
    return OperatorProcess(operator_kubeconfig(emu), workdir, "e2e", env, args=("operator", "run", "-n", NS)).start()


def manifests(source_uri: str, image_size: int, epochs: int) -> list[dict[str, Any]]:
    docs = [d for p in sorted(QUICKSTART.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = NS
        if doc["kind"] == "DatasetVersion":
            doc["spec"]["source"]["uri"] = source_uri
        if doc["kind"] == "TrainingJob":
            doc["spec"]["model"]["imageSize"] = image_size
            doc["spec"]["hyperparameters"]["epochs"] = epochs
            if epochs <= 2:  # the demo's 50 warm-up iterations would be the whole of a tiny run
                doc["spec"]["hyperparameters"]["scheduler"]["warmupIterations"] = 2
    return docs


def is_ready(kind: str, status: dict[str, Any]) -> bool:
    return status.get("ready") is True if kind == "InferenceService" else status.get("phase") == "Succeeded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs of every pod)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="operator-e2e-"))
    result: dict[str, Any] = {"ready": False, "total_s": None, "seconds": {}}
    first: dict[str, dict[str, float]] = {f"{k}/{n}": {} for k, n in RESOURCES}
    try:
        with SeaweedFS(workdir / "seaweedfs", stop_grace=3.0) as s3, KubeEmulator(workdir=workdir) as emu:
            env = {**os.environ, **s3.env()}
            raw = workdir / "raw" / "shapes"
            kubeforge("datasets", "synth", "shapes", "--out", str(raw), "--images", str(args.images),
                      "--size", str(args.image_size), "--seed", "3", env=env)
            _upload(raw, s3)
            emu.apply_crds(ROOT / "crds")
            for crd in kopf_peering_crds():
                emu.create(crd)
            emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            emu.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                        "metadata": {"name": "kubeforge", "namespace": NS}})
            emu.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
                        "data": {k: base64.b64encode(v.encode()).decode() for k, v in s3.env().items()
                                 if k.startswith("AWS_")}})
            operator = start_operator(emu, s3, workdir)
            try:
                with PodRunner(emu, NS, workdir / "pods") as runner:
                    result |= run_flow(emu, runner, env, args, first, raw)
            finally:
                operator.stop()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}", file=sys.stderr)

    print(f"{'resource':<44}{'running at':>12}{'ready at':>10}{'waiting':>10}")
    for key, seen in first.items():
        def cell(v: float | None) -> str:
            return f"{v:.1f}" if v is not None else "-"
        print(f"{key:<44}{cell(seen.get('Running')):>12}{cell(seen.get('Ready')):>10}"
              f"{cell(seen.get('waiting')):>10}")
    print(f"{'prediction answered (total)':<44}{'':>12}{result['total_s'] or '-'!s:>10}")
    print(json.dumps(result))


def _upload(raw: Path, s3: SeaweedFS) -> None:
    from kubeforge.store.s3 import S3Store

    store = S3Store(BUCKET, "raw/shapes", endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key)
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        store.put_file(path.relative_to(raw).as_posix(), path)


def run_flow(emu: KubeEmulator, runner: PodRunner, env: dict[str, str], args: argparse.Namespace,
             first: dict[str, dict[str, float]], raw: Path) -> dict[str, Any]:
    """Apply the quickstart, watch every resource to Ready, then ask for a prediction."""
    start = time.monotonic()
    for doc in manifests(f"s3://{BUCKET}/raw/shapes/", args.image_size, args.epochs):
        emu.create(doc)
    waiting_since: dict[str, float] = {}
    deadline = start + args.timeout
    while time.monotonic() < deadline:
        now = time.monotonic() - start
        for kind, name in RESOURCES:
            key = f"{kind}/{name}"
            status = (emu.find(kind, name, NS) or {}).get("status") or {}
            phase = status.get("phase")
            if phase == "Failed":
                raise RuntimeError(f"{key} failed: {status.get('message')}\n{runner.pod_log(name)[-3000:]}")
            if phase == "Waiting":
                waiting_since.setdefault(key, now)
            elif key in waiting_since and "waiting" not in first[key]:
                first[key]["waiting"] = now - waiting_since[key]
            if phase:
                first[key].setdefault(phase, now)
            if is_ready(kind, status):
                first[key].setdefault("Ready", now)
        if all("Ready" in seen for seen in first.values()):
            break
        time.sleep(0.1)
    seconds = {key: round(seen["Ready"], 1) for key, seen in first.items() if "Ready" in seen}
    if len(seconds) < len(first):
        return {"ready": False, "seconds": seconds, "error": f"not Ready within {args.timeout:.0f} s",
                "runner_errors": runner.errors}
    sample = sorted((raw / "images").iterdir())[0]
    answer = json.loads(kubeforge("predict", "shapes", str(sample), "--url", runner.endpoint("shapes"),
                                  "--threshold", "0.0", "--json", env=env))
    total = time.monotonic() - start
    return {"ready": bool(answer and answer[0].get("task")), "total_s": round(total, 1), "seconds": seconds,
            "detections": len(answer[0]["detections"]) if answer else 0,
            "waiting_s": {k: round(v["waiting"], 1) for k, v in first.items() if "waiting" in v},
            "images": args.images, "image_size": args.image_size, "epochs": args.epochs,
            "operator": "kubeforge operator run (subprocess)", "api": "KubeEmulator (KMock subclass, HTTP)",
            "runner_errors": runner.errors}


if __name__ == "__main__":
    main()
