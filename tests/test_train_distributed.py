"""The train step under torchrun: two CPU processes (gloo) train one model on disjoint shards,
and rank 0 alone publishes the experiment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kubeforge.datasets.versions import load_manifest
from kubeforge.ports import free_port
from kubeforge.steps import train
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import classification_version
from kubeforge_trainers.models import build_model

pytestmark = pytest.mark.slow
SIZE = 32


def _classification_version(store: LocalStore, src: Path) -> tuple[DatasetRef, int]:
    """As in test_train_step.py, at 32 px: 3 classes x 8 images."""
    ref = classification_version(store, src, n_per_class=8, size=SIZE, seed=2)
    return ref, len(load_manifest(store, ref.dataset, ref.digest).categories)


def test_two_processes_train_one_model_and_rank_zero_publishes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref, n_classes = _classification_version(store, tmp_path / "src")
    spec = TrainRun.model_validate({
        "store": store.uri, "namespace": "default", "name": "ddp", "dataset": ref.model_dump(),
        "experiment_prefix": layout.experiment_prefix("default", ref.dataset, "ddp", "torchvision"),
        "spec": {"datasetVersion": "shapes-cls-v1", "task": "classification",
                 "model": {"name": "resnet18", "imageSize": SIZE},
                 "hyperparameters": {"epochs": 1, "batchSize": 4,
                                     "scheduler": {"type": "cosine", "warmupIterations": 1}}},
    })
    spec_path, result_path = tmp_path / "run.json", tmp_path / "out.json"
    spec_path.write_text(spec.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", train.ENV_CACHE_DIR: str(tmp_path / "cache")}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "kubeforge.cli.main", "step", "train",
         "--spec", str(spec_path), "--result", str(result_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Rank 1 says it left the result to rank 0: the result file was written by one process.
    assert proc.stderr.count("the result is rank 0's to write") == 1, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(result_path.read_text())

    prefix = spec.experiment_prefix
    keys = sorted(k[len(prefix) + 1:] for k in store.list(prefix + "/"))
    # One set of artifacts: no per-rank duplicates, no stray temporaries.
    for rel in (layout.CHECKPOINT_BEST, layout.CHECKPOINT_LAST, layout.ONNX_EXPORT, layout.MODEL_META,
                layout.RUN_SPEC, layout.PROGRESS, layout.METRICS_LOG, layout.EXPERIMENT_INFO):
        assert rel in keys, keys
    assert not [k for k in keys if ".tmp" in k], keys

    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["status"] == "Succeeded" and info["result"] == result
    assert info["worldSize"] == 2 and store.get_json(f"{prefix}/{layout.RUN_SPEC}")["worldSize"] == 2
    lines = store.get_bytes(f"{prefix}/{layout.METRICS_LOG}").decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    assert json.loads(store.get_bytes(f"{prefix}/{layout.PROGRESS}"))["phase"] == "Succeeded"

    # Each rank trained on its own half of the training split (DistributedSampler pads to equal shards).
    n_train = len(json.loads(store.get_bytes(f"{prefix}/{layout.TRAIN_VAL_SPLIT}"))["train"])
    per_rank = info["samplesPerRank"]
    assert len(per_rank) == 2 and per_rank[0] == per_rank[1]
    half = -(-n_train // 2)
    assert half - 4 < per_rank[0] <= half, (per_rank, n_train)  # drop_last may drop one partial batch

    # The checkpoint holds the unwrapped module: a plain single-process model loads it as is.
    ckpt_path = tmp_path / "last.pt"
    store.get_file(f"{prefix}/{layout.CHECKPOINT_LAST}", ckpt_path)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    model = build_model("resnet18", "classification", n_classes, SIZE, False)
    model.load_state_dict(ckpt["model"])
    assert ckpt["epoch"] == 1 and result["bestMetric"]["epoch"] == 1
    assert result["onnxParityMaxAbsDiff"] < 1e-3
