"""Seconds per epoch of one quickstart-sized detection training alone, then of two at once.

    .venv/bin/python benchmarks/train_concurrency.py [--images 500 --image-size 160 --epochs 2]

Each training is a real `kubeforge step train` process on the shapes dataset (SSDlite, batch 8, from
scratch, no export), in a local store under a temporary directory. The runs:

- `alone`: one training with the whole CPU (its thread budget is the affinity mask);
- `pair-cpu`: two at once, each told `spec.resources.cpu` = half the cores (kubeforge_trainers.threads
  sizes torch's thread pool from it; the kernel still schedules both over every core);
- `pair-pinned`: two at once, each pinned to its own half of the cores (an affinity mask, like a
  cpuset-pinned pod), which also becomes its thread budget;
- `pair-unlimited` (only with --unlimited): two at once with no limit, each sizing its pools for the
  whole machine (what happened before thread budgets: 2x oversubscription).

Run it on a quiet machine: anything else running skews every number. Prints a table, then one JSON
object as the last line (`secondsPerEpoch` per run and process, and `slowdown` = pair / alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import shapes_version

KUBEFORGE = Path(sys.executable).with_name("kubeforge")



def run_spec(store: LocalStore, ref: DatasetRef, name: str, args: argparse.Namespace, cpu: str | None) -> TrainRun:
    resources: dict[str, Any] = {"gpu": 0} | ({"cpu": cpu} if cpu else {})
    return TrainRun.model_validate({
        "store": store.uri, "namespace": "default", "name": name, "dataset": ref.model_dump(),
        "experiment_prefix": layout.experiment_prefix("default", ref.dataset, name, "torchvision"),
        "spec": {
            "datasetVersion": "shapes-v1", "task": "object-detection",
            "model": {"name": "ssdlite320_mobilenet_v3_large", "imageSize": args.image_size},
            "split": {"trainPercent": 80, "seed": 7},
            "hyperparameters": {"epochs": args.epochs, "batchSize": 8, "numWorkers": args.workers,
                                "optimizer": {"type": "AdamW", "lr": 1e-3},
                                "scheduler": {"type": "cosine", "warmupIterations": 1}},
            "resources": resources, "export": [],
        },
    })


def launch(spec: TrainRun, work: Path, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    path = work / f"{spec.name}.json"
    path.write_text(spec.model_dump_json())
    env = {**os.environ, "KUBEFORGE_CACHE_DIR": str(work / "cache")}
    # Thread counts come from the step's own budget, not from inherited OpenMP settings.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen([str(KUBEFORGE), "step", "train", "--spec", str(path), "--result", str(work / "r.json")],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(work / f"{spec.name}.log", "wb"),
                            preexec_fn=preexec)


def run_group(store: LocalStore, ref: DatasetRef, args: argparse.Namespace, work: Path, label: str,
              members: list[tuple[str | None, set[int] | None]]) -> dict[str, Any]:
    """Start every member at once and wait; per member: seconds per epoch and its thread plan."""
    specs = [run_spec(store, ref, f"{label}-{k}", args, cpu) for k, (cpu, _) in enumerate(members)]
    t0 = time.perf_counter()
    procs = [launch(s, work, cpus) for s, (_, cpus) in zip(specs, members, strict=True)]
    codes = [p.wait(timeout=args.timeout) for p in procs]
    wall = time.perf_counter() - t0
    failed = [s.name for s, c in zip(specs, codes, strict=True) if c != 0]
    if failed:
        tail = (work / f"{failed[0]}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{label}: training {failed} failed; {failed[0]}'s log ends:\n{tail}")
    out = []
    for spec in specs:
        info = store.get_json(f"{spec.experiment_prefix}/{layout.EXPERIMENT_INFO}")
        out.append({"secondsPerEpoch": info["secondsPerEpoch"], "threads": info["training"]["threads"]})
    return {"wallSeconds": round(wall, 2), "processes": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="shapes images (the quickstart: 500)")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="hyperparameters.numWorkers of every run")
    parser.add_argument("--unlimited", action="store_true", help="also run two at once with no limit")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one group may take")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit(f"needs at least 2 CPUs to share; this process may use {len(cores)}")
    half = len(cores) // 2
    halves = [set(cores[:half]), set(cores[half:2 * half])]
    groups: dict[str, list[tuple[str | None, set[int] | None]]] = {
        "alone": [(None, None)],
        "pair-cpu": [(str(half), None), (str(half), None)],
        "pair-pinned": [(None, halves[0]), (None, halves[1])],
    }
    if args.unlimited:
        groups["pair-unlimited"] = [(None, None), (None, None)]
    with tempfile.TemporaryDirectory(prefix="kubeforge-concurrency-") as tmp:
        work = Path(tmp)
        store = LocalStore(work / "store")
        ref = shapes_version(store, work / "src", args.images, args.image_size, seed=7)
        results = {label: run_group(store, ref, args, work, label, members) for label, members in groups.items()}

    alone = results["alone"]["processes"][0]["secondsPerEpoch"]
    table = Table(title=f"SSDlite {args.image_size} px, {args.images} images, {args.epochs} epochs, "
                        f"{len(cores)} CPUs")
    for column in ("run", "process", "threads (budget from)", "s/epoch", "vs alone", "wall s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    slowdown: dict[str, float] = {}
    for label, group in results.items():
        per = [p["secondsPerEpoch"] for p in group["processes"]]
        slowdown[label] = round(statistics.mean(per) / alone, 3)
        for k, p in enumerate(group["processes"]):
            t = p["threads"]
            table.add_row(label, str(k), f"{t['intraOp']} ({t['budgetFrom']} {t['cpuBudget']})",
                          f"{p['secondsPerEpoch']:.2f}", f"{p['secondsPerEpoch'] / alone:.2f}x",
                          f"{group['wallSeconds']:.1f}")
    Console(stderr=True).print(table)
    print(json.dumps({"cpus": len(cores), "images": args.images, "imageSize": args.image_size, "epochs": args.epochs,
                      "runs": results, "slowdown": slowdown}))


if __name__ == "__main__":
    main()
