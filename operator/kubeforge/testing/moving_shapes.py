"""Around the generated moving-shapes video (`kubeforge.datasets.synth_video`, users have it as `kubeforge
datasets synth video`): a detector trained for it through the real train step, and noisy copies of its true
boxes, for the tracking tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kubeforge.datasets.synth_video import MIN_VISIBLE, SIDE_FRACTION, MovingShapes, TrueBox, render

__all__ = ["MIN_VISIBLE", "MovingShapes", "TrueBox", "noisy_detections", "render", "train_detector"]


def train_detector(root: Path, size: int = 128, n_images: int = 300, epochs: int = 10,
                   seed: int = 11) -> tuple[Path, Any]:
    """Train `ssdlite320_mobilenet_v3_large` from scratch on synth shapes (CPU, minutes); export ONNX.

    Returns (model.onnx path, ModelMeta). The model is a real TrainingJob's export, trained through the
    train step as a user's would be, so tracking is measured on real detections (misses, jitter, false
    positives), not on the truth.
    """
    from kubeforge.models.meta import ModelMeta
    from kubeforge.steps import train
    from kubeforge.store import LocalStore, layout
    from kubeforge.testing.shapes import shapes_version
    from kubeforge.testing.train_runs import train_run_spec

    root = Path(root)
    # 50 warm-up steps (the recipe) where there are enough; a quarter of them for a tiny speed-only run.
    warmup = min(50, (int(n_images * 0.9) // 8) * epochs // 4)
    store = LocalStore(root / "store")
    ref = shapes_version(store, root / "src", n_images=n_images, size=size, seed=seed)
    spec = train_run_spec(store, ref, "shapes-det", {
        "datasetVersion": "shapes-v1", "task": "object-detection",
        "model": {"name": "ssdlite320_mobilenet_v3_large", "imageSize": size},
        "split": {"method": "random", "trainPercent": 90, "seed": 7},
        "hyperparameters": {"epochs": epochs, "batchSize": 8, "optimizer": {"type": "AdamW", "lr": 1.0e-3},
                            "scheduler": {"type": "cosine", "warmupIterations": warmup}},
    })
    train.run(spec)
    prefix = spec.experiment_prefix
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    onnx = root / "model.onnx"
    store.get_file(f"{prefix}/{layout.ONNX_EXPORT}", onnx)
    return onnx, meta


def noisy_detections(video: MovingShapes, jitter: float = 0.05, miss: float = 0.1, false_per_frame: float = 0.2,
                     seed: int = 0) -> list[Any]:
    """The truth as a detector's Predictions with known faults: each box's corners moved by up to `jitter`
    of its side, a `miss` share dropped, about `false_per_frame` random boxes added per frame, scores drawn
    at random (true boxes 0.5..1, false ones 0.1..0.7). The sanity line for a tracker: its scores on these
    show what it does with near-perfect detections, apart from the detector."""
    from kubeforge.serving.client import Detection, Prediction

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD7]))
    size = video.frames[0].shape[0]
    preds = []
    for f, boxes in enumerate(video.truth):
        dets = []
        for b in boxes:
            if rng.random() < miss:
                continue
            x1, y1, x2, y2 = b.box
            side = max(x2 - x1, y2 - y1)
            moved = np.array(b.box) + rng.uniform(-jitter, jitter, 4) * side
            dets.append(Detection(b.kind, video.classes.index(b.kind), float(rng.uniform(0.5, 1.0)),
                                  [float(v) for v in np.clip(moved, 0, size)]))
        for _ in range(rng.poisson(false_per_frame)):
            side = float(rng.uniform(*SIDE_FRACTION)) * size
            x, y = rng.uniform(0, size - side, 2)
            k = int(rng.integers(0, len(video.classes)))
            dets.append(Detection(video.classes[k], k, float(rng.uniform(0.1, 0.7)),
                                  [float(x), float(y), float(x + side), float(y + side)]))
        preds.append(Prediction(image=f"moving-shapes#frame={f}", width=size, height=size, task="object-detection",
                                detections=sorted(dets, key=lambda d: -d.score), frame=f,
                                timestamp=f / video.fps))
    return preds
