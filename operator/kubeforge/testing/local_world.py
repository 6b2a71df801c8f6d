"""Local-mode test worlds: a generated classification dataset, its DatasetVersion and tiny classifiers in
YAML (one epoch at 32 px), run by `kubeforge run -f` in a state directory and store of their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeforge.testing.cli import kubeforge

SHAPES_VERSION = """
apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {name: shapes-cls}
spec: {dataset: shapes-cls, source: {uri: data, format: imagefolder}}
"""


def classifier(name: str, model: str = "resnet18") -> str:
    """A TrainingJob on shapes-cls: `model` at 32 px, one epoch, exported to ONNX, no Benchmark."""
    return f"""---
apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  datasetVersion: shapes-cls
  task: classification
  model: {{name: {model}, imageSize: 32}}
  split: {{method: random, trainPercent: 50, seed: 1}}
  hyperparameters: {{epochs: 1, batchSize: 8}}
  export: [onnx]
  benchmark: {{enabled: false}}
"""


def classifiers(*names_models: tuple[str, str]) -> str:
    """shapes-cls and one classifier per (name, model)."""
    return SHAPES_VERSION + "".join(classifier(name, model) for name, model in names_models)


@contextmanager
def local_world(work: Path, images: int, stop: str | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """(work, env): `work/data` holds `images` generated shapes per class; env points kubeforge at a state
    directory and store under `work`. `stop`: the InferenceService stopped on exit (its tritonserver)."""
    env = {**os.environ, "KUBEFORGE_STATE_DIR": str(work / "state"), "KUBEFORGE_STORE": (work / "store").as_uri()}
    kubeforge("datasets", "synth", "shapes", "--task", "classification", "--out", str(work / "data"),
              "--images", str(images), "--size", "32", "--seed", "5", env=env)
    try:
        yield work, env
    finally:
        if stop:
            kubeforge("stop", "inferenceservice", stop, env=env, check=False)
