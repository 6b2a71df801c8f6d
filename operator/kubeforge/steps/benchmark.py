"""The benchmark step: evaluate one or more ONNX exports on a DatasetVersion, write the results.

Reads the dataset manifest (checked against its digest) and each model's export,
model_meta.json and train_val_split.json from the store; writes `metrics.json`, then
`report.html` (which is rendered from metrics.json's content) under the run's output prefix.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from kubeforge.api.common import now_rfc3339
from kubeforge.datasets import versions
from kubeforge.datasets.manifest import Manifest
from kubeforge.evaluation.classification import classification_metrics
from kubeforge.evaluation.detection import ImageDetections, detection_metrics
from kubeforge.evaluation.groundtruth import ClassMap, classification_truth, detection_truth, select_images
from kubeforge.evaluation.inference import OnnxModel, onnxruntime_version
from kubeforge.evaluation.instances import ImageInstances, instance_metrics, truth_segmentations
from kubeforge.evaluation.report import render_report
from kubeforge.evaluation.report_images import (
    Sample,
    classification_sample,
    detection_sample,
    segmentation_sample,
    spread,
)
from kubeforge.evaluation.segmentation import BACKGROUND, class_mask, confusion, scores, segmentation_metrics
from kubeforge.evaluation.speed import measure_speed
from kubeforge.models import catalog
from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import load_rgb
from kubeforge.steps.spec import BenchmarkModel, BenchmarkRun
from kubeforge.store import Store, layout, open_store

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
DETECTION_SAMPLES = 4
CLASSIFICATION_SAMPLES = 6
DETECTION_STATUS = ("AP", "AP50", "AP75", "precision", "recall", "f1", "threshold")
# Instance segmentation: COCO mask AP first (evaluation.instances), then the box metrics of detection.
INSTANCE_STATUS = ("maskAP", "maskAP50", "maskAP75", *DETECTION_STATUS)
CLASSIFICATION_STATUS = ("accuracy", "macroPrecision", "macroRecall", "macroF1", "weightedF1")
SEGMENTATION_SAMPLES = 4
SEMANTIC_STATUS = ("mIoU", "meanDice", "pixelAccuracy")


def _log(message: str) -> None:
    # stdout carries the step's result when --result is not given; progress goes to stderr.
    print(message, file=sys.stderr, flush=True)


def load_manifest(store: Store, dataset: str, digest: str) -> Manifest:
    """The version's manifest, verified against its digest; a missing one is a ValueError naming it."""
    try:
        return versions.load_manifest(store, dataset, digest)
    except KeyError:
        key = layout.dataset_manifest_key(dataset, digest)
        raise ValueError(f"dataset {dataset!r} version {digest}: {key} not found in store {store.uri}") from None


class _ModelFiles:
    """A model's export and contract, fetched from its experiment prefix."""

    def __init__(self, store: Store, run: BenchmarkRun, model: BenchmarkModel, workdir: Path) -> None:
        self.who = f"TrainingJob {run.namespace}/{model.training_job}"
        prefix = model.experiment_prefix.rstrip("/")
        self.onnx_key = f"{prefix}/{layout.ONNX_EXPORT}"
        meta_key = f"{prefix}/{layout.MODEL_META}"
        for key in (self.onnx_key, meta_key):
            if not store.exists(key):
                raise ValueError(
                    f"{self.who}: {key} not found in store {store.uri}; "
                    "did the training finish and export ONNX?"
                )
        try:
            self.meta = ModelMeta.model_validate_json(store.get_bytes(meta_key))
        except ValidationError as exc:
            raise ValueError(f"{self.who}: {meta_key} is not a valid model_meta.json: {exc}") from exc
        self.split_source = f"{self.who}: {prefix}/{layout.TRAIN_VAL_SPLIT}"
        split_key = f"{prefix}/{layout.TRAIN_VAL_SPLIT}"
        self.split_doc = store.get_json(split_key) if store.exists(split_key) else None
        self.onnx_path = workdir / model.training_job / "model.onnx"
        store.get_file(self.onnx_key, self.onnx_path)
        self.export_uri = store.url(self.onnx_key)


class _Images:
    """Image bytes by blob, fetched once and shared by every model of the run."""

    def __init__(self, store: Store, manifest: Manifest) -> None:
        self.store, self.manifest = store, manifest
        self._bytes: dict[str, bytes] = {}

    def get(self, index: int) -> Image.Image:
        img = self.manifest.images[index]
        if img.blob not in self._bytes:
            try:
                self._bytes[img.blob] = self.store.get_blob(img.blob)
            except KeyError:
                raise ValueError(
                    f"{img.file_name}: image blob {img.blob} missing from store {self.store.uri}"
                ) from None
        return load_rgb(self._bytes[img.blob])


def _evaluate_classification(
    who: str, model: OnnxModel, images: _Images, manifest: Manifest, indices: list[int], classes: ClassMap
) -> tuple[dict[str, Any], list[int], list[Sample]]:
    kept, y_true = classification_truth(manifest, indices, classes)
    if not kept:
        raise ValueError(
            f"{who}: none of the {len(indices)} selected images of dataset {manifest.dataset!r} is "
            f"labelled with one of the model's classes {classes.model_classes}"
        )
    logits = model.classify(images.get(i) for i in kept)
    y_pred = logits.argmax(axis=1) if len(kept) else np.zeros(0, dtype=np.int64)
    metrics = classification_metrics(y_true, y_pred, classes.model_classes)
    # Softmax only for the captions; metrics use argmax, which softmax does not change.
    probs = np.exp(logits - logits.max(axis=1, keepdims=True)) if len(kept) else logits
    probs = probs / probs.sum(axis=1, keepdims=True) if len(kept) else probs
    wrong = [j for j in range(len(kept)) if y_true[j] != y_pred[j]]
    right = [j for j in range(len(kept)) if y_true[j] == y_pred[j]]
    chosen = (wrong[: CLASSIFICATION_SAMPLES // 2] + right)[:CLASSIFICATION_SAMPLES]
    names = classes.model_classes
    samples = [
        classification_sample(manifest.images[kept[j]].file_name, images.get(kept[j]), names[y_true[j]],
                              names[y_pred[j]], float(probs[j, y_pred[j]]))
        for j in chosen
    ]
    return metrics, kept, samples


def _evaluate_objects(
    model: OnnxModel, images: _Images, manifest: Manifest, indices: list[int], classes: ClassMap, iou: float,
    masks: bool,
) -> tuple[dict[str, Any], list[int], list[Sample]]:
    """Detection, and with `masks` instance segmentation (each detection's mask too, evaluation.instances)."""
    truths = detection_truth(manifest, indices, classes)
    evaluated = classes.evaluated()
    position = np.full(len(classes.model_classes), -1, dtype=np.int64)
    position[evaluated] = np.arange(len(evaluated))
    detections, kept_masks, dropped = [], [], 0
    for n, i in enumerate(indices):
        found = model.instances(images.get(i)) if masks else None
        raw = found.detections if found is not None else model.detect(images.get(i))
        # Classes the dataset does not label cannot be judged right or wrong: leave them out.
        keep = position[raw.labels] >= 0
        dropped += int((~keep).sum())
        detections.append(ImageDetections(raw.boxes[keep], raw.scores[keep], position[raw.labels[keep]]))
        if found is not None:
            kept_masks.append([m for m, k in zip(found.masks, keep, strict=True) if k])
        if (n + 1) % 50 == 0:
            _log(f"  {n + 1}/{len(indices)} images")
    names = [classes.model_classes[k] for k in evaluated]
    if masks:
        instances = [ImageInstances(d, m) for d, m in zip(detections, kept_masks, strict=True)]
        metrics = instance_metrics(truths, truth_segmentations(manifest, indices, classes), instances, names,
                                   iou_threshold=iou)
    else:
        metrics = detection_metrics(truths, detections, names, iou_threshold=iou)
    metrics["detectionsOfClassesNotInDataset"] = dropped
    samples = [
        detection_sample(manifest.images[indices[j]].file_name, images.get(indices[j]), truths[j],
                         detections[j], names, metrics["threshold"])
        for j in spread(len(indices), DETECTION_SAMPLES)
    ]
    return metrics, indices, samples


def _evaluate_semantic(
    model: OnnxModel, images: _Images, manifest: Manifest, indices: list[int], classes: ClassMap
) -> tuple[dict[str, Any], list[int], list[Sample]]:
    """Pixels at each image's own size: the predicted mask is resized nearest-neighbour, as `predict`
    returns it. Objects of dataset classes the model lacks are background (`evaluation.segmentation`)."""
    num_classes = len(classes.model_classes)
    per_image = manifest.annotations_by_image()
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    sampled = set(spread(len(indices), SEGMENTATION_SAMPLES))
    samples = []
    predictions = model.segment(images.get(i) for i in indices)
    for n, (i, predicted) in enumerate(zip(indices, predictions, strict=True)):
        truth, _ = class_mask(manifest.images[i], per_image[i], classes.category_to_model)
        image_cm = confusion(truth, predicted, num_classes)
        cm += image_cm
        if n in sampled:
            samples.append(segmentation_sample(manifest.images[i].file_name, images.get(i), truth, predicted,
                                               scores(image_cm)["mIoU"]))
        if (n + 1) % 50 == 0:
            _log(f"  {n + 1}/{len(indices)} images")
    return segmentation_metrics(cm, classes.model_classes), indices, samples


def _headline(task: str, metrics: dict[str, Any]) -> dict[str, float]:
    if task == "semantic-segmentation":
        return {k: round(float(metrics[k]), 6) for k in SEMANTIC_STATUS if metrics.get(k) is not None}
    if task == "instance-segmentation":
        names = INSTANCE_STATUS
    else:
        names = DETECTION_STATUS if task == "object-detection" else CLASSIFICATION_STATUS
    return {k: round(float(metrics[k]), 6) for k in names if metrics.get(k) is not None}


def evaluate_model(
    run: BenchmarkRun, store: Store, manifest: Manifest, images: _Images, ref: BenchmarkModel, workdir: Path
) -> tuple[dict[str, Any], list[Sample], list[int]]:
    """Metrics document entry, report samples and the evaluated manifest indices for one model."""
    start = time.perf_counter()
    files = _ModelFiles(store, run, ref, workdir)
    meta = files.meta
    if not catalog.trains_on(meta.task, manifest.task):
        raise ValueError(
            f"{files.who}: model_meta.json task is {meta.task!r} but dataset {manifest.dataset!r} "
            f"is {manifest.task!r}"
        )
    # A semantic model's background is every pixel no object covers: no dataset names it.
    classes = ClassMap.build(manifest, meta.classes, f"{files.who} model_meta.json",
                             implicit=[BACKGROUND] if meta.task == "semantic-segmentation" else [])
    indices, missing = select_images(manifest, run.spec.split, files.split_doc, files.split_source)
    if not indices:
        raise ValueError(f"{files.who}: dataset {manifest.dataset!r} has no images (split {run.spec.split!r})")
    _log(f"{files.who}: {len(indices)} images ({run.spec.split}), {meta.task}, {meta.architecture}")
    model = OnnxModel.load(files.onnx_path, meta)
    if meta.task == "classification":
        metrics, used, samples = _evaluate_classification(files.who, model, images, manifest, indices, classes)
        evaluated_names = list(meta.classes)
    elif meta.task == "semantic-segmentation":
        metrics, used, samples = _evaluate_semantic(model, images, manifest, indices, classes)
        evaluated_names = list(meta.classes)
    else:
        metrics, used, samples = _evaluate_objects(model, images, manifest, indices, classes,
                                                   run.spec.iou_threshold, meta.task == "instance-segmentation")
        evaluated_names = [meta.classes[k] for k in classes.evaluated()]
    timings = model.timings.to_json() | {"totalSeconds": round(time.perf_counter() - start, 3)}
    entry = {
        "trainingJob": ref.training_job,
        "experimentPrefix": ref.experiment_prefix,
        "checkpoint": ref.checkpoint,
        "exportUri": files.export_uri,
        "task": meta.task,
        "framework": meta.framework,
        "architecture": meta.architecture,
        "classes": list(meta.classes),
        "evaluatedClasses": evaluated_names,
        "modelClassesNotInDataset": classes.not_in_dataset,
        "datasetClassesNotInModel": classes.not_in_model,
        "split": run.spec.split,
        "imageCount": len(used),
        "skippedImages": len(indices) - len(used),
        "splitFilesMissing": len(missing),
        "headline": _headline(meta.task, metrics),
        "metrics": metrics,
        "timings": timings,
    }
    if run.spec.speed.enabled:
        entry["speed"] = measure_speed(run.spec.speed, store, ref, meta, files.onnx_path,
                                       workdir / ref.training_job / "speed", run.triton)
    _log(f"{files.who}: {entry['headline']} in {timings['totalSeconds']} s")
    return entry, samples, used


def _comparison(doc_models: dict[str, dict[str, Any]], used: dict[str, list[int]], order: list[str]) -> dict[str, Any]:
    names = sorted({k for m in doc_models.values() for k in m["headline"]} - {"threshold"})
    best = {}
    for k in names:
        values = {m: doc_models[m]["headline"][k] for m in order if k in doc_models[m]["headline"]}
        if values:
            best[k] = max(values, key=lambda m: values[m])
    return {
        "sameImages": all(used[m] == used[order[0]] for m in order),
        "best": best,
        "table": [{"trainingJob": m, **doc_models[m]["headline"]} for m in order],
    }


def _augmentation_preview(store: Store, ref: BenchmarkModel) -> tuple[str, str] | None:
    """(URI, base64 PNG) of the grid of augmented training samples the model's run saved, if it did."""
    key = f"{ref.experiment_prefix.rstrip('/')}/{layout.AUGMENTATION_PREVIEW}"
    if not store.exists(key):
        return None
    return store.url(key), base64.b64encode(store.get_bytes(key)).decode("ascii")


def run(spec: BenchmarkRun) -> dict[str, Any]:
    """Evaluate every model of the run; returns the Benchmark's partial status (camelCase)."""
    order = [m.training_job for m in spec.models]
    duplicates = sorted({n for n in order if order.count(n) > 1})
    if duplicates:
        raise ValueError(f"spec.models: TrainingJob {duplicates} listed more than once; expected each once")
    store = open_store(spec.store)
    store.check()
    manifest = load_manifest(store, spec.dataset.dataset, spec.dataset.digest)
    images = _Images(store, manifest)
    models: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[Sample]] = {}
    used: dict[str, list[int]] = {}
    previews: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kubeforge-bench-") as tmp:
        for ref in spec.models:
            models[ref.training_job], samples[ref.training_job], used[ref.training_job] = evaluate_model(
                spec, store, manifest, images, ref, Path(tmp)
            )
            preview = _augmentation_preview(store, ref)
            if preview is not None:
                models[ref.training_job]["augmentationPreviewUri"], previews[ref.training_job] = preview
    doc: dict[str, Any] = {
        "kind": "BenchmarkMetrics",
        "formatVersion": 1,
        "benchmark": {"namespace": spec.namespace, "name": spec.name},
        "dataset": {"dataset": spec.dataset.dataset, "digest": spec.dataset.digest,
                    "task": manifest.task, "split": spec.spec.split},
        "iouThreshold": spec.spec.iou_threshold,
        "onnxruntimeVersion": onnxruntime_version(),
        "createdAt": now_rfc3339(),
        "modelOrder": order,
        "models": models,
    }
    if len(order) > 1:
        doc["comparison"] = _comparison(models, used, order)
    prefix = spec.output_prefix.rstrip("/")
    metrics_key, report_key = f"{prefix}/{METRICS_FILE}", f"{prefix}/{REPORT_FILE}"
    store.put_json(metrics_key, doc)
    store.put_bytes(report_key, render_report(doc, samples, previews).encode("utf-8"))
    first = models[order[0]]
    if first["task"] == "instance-segmentation":
        mask_ap = first["metrics"].get("maskAP")
        headline = f"maskAP={mask_ap:.3f}" if mask_ap is not None else "maskAP=n/a"
    elif first["task"] == "semantic-segmentation":
        miou = first["metrics"].get("mIoU")
        headline = f"mIoU={miou:.3f}" if miou is not None else "mIoU=n/a"
    elif first["task"] == "object-detection":
        ap50 = first["metrics"].get("AP50")
        headline = f"AP50={ap50:.3f}" if ap50 is not None else "AP50=n/a"
    else:
        headline = f"acc={first['metrics']['accuracy']:.3f}"
    return {
        "metricsUri": store.url(metrics_key),
        "reportUri": store.url(report_key),
        "metrics": {name: models[name]["headline"] for name in order},
        "headline": headline,
    }
