"""The fixed store layout (DESIGN.md): the one place that knows where things go."""

from __future__ import annotations

import re

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


BLOB_PREFIX = "blobs/sha256/"


def blob_key(sha256_hex: str) -> str:
    if not _HEX64.match(sha256_hex):
        raise ValueError(f"not a sha256 hex digest: {sha256_hex!r}")
    return f"{BLOB_PREFIX}{sha256_hex[:2]}/{sha256_hex}"


def dataset_version_prefix(dataset: str, digest: str) -> str:
    return f"datasets/{dataset}/{digest}"


def dataset_manifest_key(dataset: str, digest: str) -> str:
    return f"{dataset_version_prefix(dataset, digest)}/manifest.json"


def dataset_stats_key(dataset: str, digest: str) -> str:
    return f"{dataset_version_prefix(dataset, digest)}/stats.json"


def experiment_prefix(namespace: str, dataset: str, training_job: str, framework: str) -> str:
    return f"experiments/{namespace}_{dataset}/{training_job}_{framework}"


def run_output_prefix(base: str, run_id: str) -> str:
    """Where one run of an experiment or benchmark writes: runs never overwrite each other."""
    return f"{base}/runs/{run_id}"


def benchmark_prefix(namespace: str, benchmark: str) -> str:
    return f"benchmarks/{namespace}_{benchmark}"


def prediction_prefix(namespace: str, prediction_job: str) -> str:
    return f"predictions/{namespace}_{prediction_job}"


def serving_prefix(namespace: str, inference_service: str) -> str:
    return f"serving/{namespace}_{inference_service}"


# Files inside an experiment prefix; experiment_info.json is written last.
EXPERIMENT_INFO = "experiment_info.json"
MODEL_META = "model_meta.json"
HYPERPARAMETERS = "hyperparameters.yaml"
TRAIN_VAL_SPLIT = "train_val_split.json"
RUN_SPEC = "run_spec.json"
PROGRESS = "progress.json"
METRICS_LOG = "metrics.jsonl"
CHECKPOINT_BEST = "checkpoints/best.pt"
CHECKPOINT_LAST = "checkpoints/last.pt"
ONNX_EXPORT = "export/model.onnx"
# OpenVINO IR converted from the ONNX export (the .bin sits beside the .xml) and a TensorRT engine.
OPENVINO_EXPORT = "export/openvino/model.xml"
OPENVINO_WEIGHTS = "export/openvino/model.bin"
TENSORRT_EXPORT = "export/model.plan"
# A grid of augmented training samples with their boxes/masks, written before the first epoch.
AUGMENTATION_PREVIEW = "preview/augmentations.png"


def run_prefix(namespace: str, kind: str, name: str, uid: str) -> str:
    """What one resource's runs record in cluster mode (keyed by uid: a re-created resource is new)."""
    return f"runs/{kind.lower()}/{namespace}_{name}/{uid}"


def run_result_key(namespace: str, kind: str, name: str, uid: str, run_id: str | None = None) -> str:
    """A step's result (its partial status) written by `kubeforge step … --result-key`, read by the operator;
    one per run, so an earlier run's result is never taken for a later one's."""
    base = run_prefix(namespace, kind, name, uid)
    return f"{base}/{run_id}/result.json" if run_id else f"{base}/result.json"
