"""Train-step run specs and interrupted runs, for tests that call `kubeforge.steps.train.run` directly."""

from __future__ import annotations

from typing import Any

from kubeforge.api.training_job import TrainingJobSpec
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import Store, layout


def train_run_spec(store: Store, ref: DatasetRef, name: str, job: dict[str, Any]) -> TrainRun:
    """The run spec of TrainingJob `name` (namespace default) on `ref`; the experiment prefix is named after
    the framework the API resolves for the model, as the runtimes name it."""
    framework = TrainingJobSpec.model_validate(job).model.framework
    return TrainRun.model_validate({
        "store": store.uri, "namespace": "default", "name": name, "spec": job, "dataset": ref.model_dump(),
        "experiment_prefix": layout.experiment_prefix("default", ref.dataset, name, framework),
    })


def stop_after_first_epoch(store: Store, prefix: str) -> str:
    """Make a finished run (trained with checkpointEvery: 1) look stopped after epoch 1: last.pt is epoch 1's,
    no experiment_info.json, the metrics log ends at epoch 1. Returns epoch 1's metrics line."""
    store.put_bytes(f"{prefix}/{layout.CHECKPOINT_LAST}", store.get_bytes(f"{prefix}/checkpoints/epoch_0001.pt"))
    store.delete(f"{prefix}/{layout.EXPERIMENT_INFO}")
    first = store.get_bytes(f"{prefix}/{layout.METRICS_LOG}").decode().splitlines()[0]
    store.put_bytes(f"{prefix}/{layout.METRICS_LOG}", (first + "\n").encode())
    return first
