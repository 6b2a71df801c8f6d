"""The benchmark step: evaluate one or more ONNX exports on a DatasetVersion, write the results.

Reads the dataset manifest (checked against its digest) and each model's export,
model_meta.json and train_val_split.json from the store; writes `metrics.json`, then
`report.html` (which is rendered from metrics.json's content) under the run's output prefix.
"""

from __future__ import annotations

import base64
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from kubeforge.api.common import now_rfc3339
from kubeforge.datasets import versions
from kubeforge.datasets.manifest import Manifest
from kubeforge.evaluation import bootstrap, detection_analysis
from kubeforge.evaluation.classification import classification_metrics, weighted_headline
from kubeforge.evaluation.cocoeval import CocoEvaluator
from kubeforge.evaluation.detection import ImageDetections, detection_metrics, to_coco
from kubeforge.evaluation.gate import gate_status
from kubeforge.evaluation.groundtruth import ClassMap, classification_truth, detection_truth, select_images
from kubeforge.evaluation.inference import OnnxModel, onnxruntime_version
from kubeforge.evaluation.instances import ImageInstances, instance_metrics, segm_coco, truth_segmentations
from kubeforge.evaluation.report import render_report
from kubeforge.evaluation.report_images import (
    Sample,
    classification_sample,
    detection_sample,
    segmentation_sample,
    spread,
)
from kubeforge.evaluation.segmentation import (
    BACKGROUND,
    boundary_counts,
    class_mask,
    confusion,
    headline_of_sums,
    pixel_sums,
    scores_of_sums,
    segmentation_metrics,
)
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
SEGMENTATION_SAMPLES = 4
GALLERY = 3  # best and worst images per model
DISAGREEMENTS = 8
SCHEMA = "https://kubeforge.io/schemas/benchmark-metrics/v2.json"


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


# stats_for(weights, classes): the headline metrics with image i counted weights[i] times (None: once each),
# restricted to some class indices of the model (None: all evaluated classes).
StatsFor = Callable[[np.ndarray | None, Sequence[int] | None], dict[str, float | None]]


@dataclass
class _Evaluated:
    """What one model's evaluation leaves for the document, the galleries, the bootstrap and the comparison."""

    metrics: dict[str, Any]
    used: list[int]  # manifest indices, in evaluation order
    samples: list[Sample]  # the spread of samples (group "sample")
    per_image: list[float | None]  # the task's per-image metric (catalog.BENCHMARK_METRICS) of each used image
    draw: Callable[[int], Sample]  # position in `used` -> that image drawn with truth and prediction
    stats_for: StatsFor
    class_index: dict[str, int]  # evaluated class name -> the index stats_for's `classes` takes
    replicates: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # metric -> value per resample
    # Positions in `used` with nothing to show (no object, no kept detection): a perfect score, and never
    # a gallery image, which would fill "best" with empty pictures.
    blank: frozenset[int] = frozenset()


def _softmax(logits: np.ndarray) -> np.ndarray:
    if not len(logits):
        return logits.astype(np.float64)
    z = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _evaluate_classification(
    who: str, model: OnnxModel, images: _Images, manifest: Manifest, indices: list[int], classes: ClassMap
) -> _Evaluated:
    kept, y_true = classification_truth(manifest, indices, classes)
    if not kept:
        raise ValueError(
            f"{who}: none of the {len(indices)} selected images of dataset {manifest.dataset!r} is "
            f"labelled with one of the model's classes {classes.model_classes}"
        )
    logits = model.classify(images.get(i) for i in kept)
    y_pred = logits.argmax(axis=1) if len(kept) else np.zeros(0, dtype=np.int64)
    # Probabilities (softmax of the logits) for top-k, ROC AUC, calibration and the per-image score.
    probs = _softmax(logits)
    names = classes.model_classes
    metrics = classification_metrics(y_true, y_pred, names, probs)
    wrong = [j for j in range(len(kept)) if y_true[j] != y_pred[j]]
    right = [j for j in range(len(kept)) if y_true[j] == y_pred[j]]
    chosen = (wrong[: CLASSIFICATION_SAMPLES // 2] + right)[:CLASSIFICATION_SAMPLES]

    def draw(j: int) -> Sample:
        return classification_sample(manifest.images[kept[j]].file_name, images.get(kept[j]), names[y_true[j]],
                                     names[y_pred[j]], float(probs[j, y_pred[j]]))

    def stats_for(weights: np.ndarray | None, subset: Sequence[int] | None) -> dict[str, float | None]:
        w = np.ones(len(kept)) if weights is None else weights
        return dict(weighted_headline(y_true, y_pred, len(names), w, subset))

    return _Evaluated(metrics=metrics, used=kept, samples=[draw(j) for j in chosen],
                      per_image=[float(probs[j, y_true[j]]) for j in range(len(kept))], draw=draw,
                      stats_for=stats_for, class_index={n: k for k, n in enumerate(names)})


def _evaluate_objects(
    model: OnnxModel, images: _Images, manifest: Manifest, indices: list[int], classes: ClassMap, iou: float,
    masks: bool,
) -> _Evaluated:
    """Detection, and with `masks` instance segmentation (each detection's mask too, evaluation.instances)."""
    truths = detection_truth(manifest, indices, classes)
    evaluated = classes.evaluated()
    position = np.full(len(classes.model_classes), -1, dtype=np.int64)
    position[evaluated] = np.arange(len(evaluated))
    detections, kept_masks, dropped, invalid = [], [], 0, 0
    for n, i in enumerate(indices):
        found = model.instances(images.get(i)) if masks else None
        raw = found.detections if found is not None else model.detect(images.get(i))
        # Classes the dataset does not label cannot be judged right or wrong: leave them out. A NaN or
        # infinite box or score (a diverged model) is dropped and counted, with its mask.
        finite = np.isfinite(raw.boxes).all(axis=1) & np.isfinite(raw.scores)
        known = position[raw.labels] >= 0
        keep = known & finite
        dropped += int((~known & finite).sum())
        invalid += int((~finite).sum())
        detections.append(ImageDetections(raw.boxes[keep], raw.scores[keep], position[raw.labels[keep]]))
        if found is not None:
            kept_masks.append([m for m, k in zip(found.masks, keep, strict=True) if k])
        if (n + 1) % 50 == 0:
            _log(f"  {n + 1}/{len(indices)} images")
    names = [classes.model_classes[k] for k in evaluated]
    # One matching and one COCO evaluation per IoU type, shared by the metrics and the bootstrap.
    matched = detection_analysis.match_all(truths, detections, len(names), iou)
    coco = to_coco(truths, detections, names)
    box = CocoEvaluator.from_dicts(*coco, "bbox")
    segm, segm_evaluator, segmentations = None, None, []
    if masks:
        instances = [ImageInstances(d, m) for d, m in zip(detections, kept_masks, strict=True)]
        segmentations = truth_segmentations(manifest, indices, classes)
        segm = segm_coco(truths, segmentations, instances, names)
        segm_evaluator = CocoEvaluator.from_dicts(*segm, "segm")
        metrics = instance_metrics(truths, segmentations, instances, names, iou, box, segm_evaluator, matched)
    else:
        metrics = detection_metrics(truths, detections, names, iou, box, matched)
    metrics["detectionsOfClassesNotInDataset"] = dropped
    metrics["invalidDetections"] = invalid
    if invalid:
        _log(f"  {invalid} detection(s) with a NaN or infinite box or score were left out")
    metrics.update(detection_analysis.analysis(matched, names, metrics["threshold"], iou, metrics))
    stats = detection_analysis.ObjectStats(truths, matched, coco, names, metrics["threshold"], segm, box=box,
                                           mask=segm_evaluator)
    for row, curve in zip(metrics["perClass"], detection_analysis.pr_curves(stats.precision(), len(names)),
                          strict=True):
        row["curve"] = curve
    if masks:
        metrics["mask"]["bySize"] = detection_analysis.mask_by_size(matched, metrics["mask"])
    counts = detection_analysis.per_image_counts(matched, metrics["threshold"])
    per_image = detection_analysis.image_f1(counts)
    blank = frozenset(int(j) for j in np.flatnonzero(counts.sum(axis=1) == 0))

    def draw(j: int) -> Sample:
        return detection_sample(manifest.images[indices[j]].file_name, images.get(indices[j]), truths[j],
                                detections[j], names, metrics["threshold"],
                                segmentations[j] if masks else None, kept_masks[j] if masks else None)

    return _Evaluated(metrics=metrics, used=indices, samples=[draw(j) for j in spread(len(indices), DETECTION_SAMPLES)],
                      per_image=[float(v) for v in per_image], draw=draw, stats_for=stats, blank=blank,
                      class_index={n: k for k, n in enumerate(names)})


def _evaluate_semantic(
    model: OnnxModel, images: _Images, manifest: Manifest, indices: list[int], classes: ClassMap
) -> _Evaluated:
    """Pixels at each image's own size: the predicted mask is resized nearest-neighbour, as `predict`
    returns it. Objects of dataset classes the model lacks are background (`evaluation.segmentation`)."""
    num_classes = len(classes.model_classes)
    per_image = manifest.annotations_by_image()
    # The summed confusion matrix for the document; per image only its pixel sums (the bootstrap's input).
    cm_total = np.zeros((num_classes, num_classes), dtype=np.int64)
    sums = np.zeros((len(indices), 3, num_classes), dtype=np.int64)
    inter = np.zeros(num_classes, dtype=np.int64)
    union = np.zeros(num_classes, dtype=np.int64)
    sampled = set(spread(len(indices), SEGMENTATION_SAMPLES))
    samples = []
    predictions = model.segment(images.get(i) for i in indices)
    for n, (i, predicted) in enumerate(zip(indices, predictions, strict=True)):
        truth, _ = class_mask(manifest.images[i], per_image[i], classes.category_to_model)
        image_cm = confusion(truth, predicted, num_classes)
        cm_total += image_cm
        sums[n] = pixel_sums(image_cm)
        b_inter, b_union = boundary_counts(truth, predicted, num_classes)
        inter += b_inter
        union += b_union
        if n in sampled:
            samples.append(segmentation_sample(manifest.images[i].file_name, images.get(i), truth, predicted,
                                               scores_of_sums(sums[n])["mIoU"]))
        if (n + 1) % 50 == 0:
            _log(f"  {n + 1}/{len(indices)} images")
    metrics = segmentation_metrics(cm_total, classes.model_classes, (inter, union))
    flat = sums.reshape(len(indices), -1).astype(np.float64)

    def draw(j: int) -> Sample:
        # Masks are not kept (a val set of large images would not fit): predict the one image again.
        i = indices[j]
        truth, _ = class_mask(manifest.images[i], per_image[i], classes.category_to_model)
        (predicted,) = list(model.segment([images.get(i)]))
        return segmentation_sample(manifest.images[i].file_name, images.get(i), truth, predicted,
                                   scores_of_sums(sums[j])["mIoU"])

    def stats_for(weights: np.ndarray | None, subset: Sequence[int] | None) -> dict[str, float | None]:
        total = flat.sum(axis=0) if weights is None else np.asarray(weights, dtype=np.float64) @ flat
        return headline_of_sums(total.reshape(3, num_classes),
                                None if subset is None else [k for k in subset if k != 0])

    return _Evaluated(metrics=metrics, used=indices, samples=samples,
                      per_image=[scores_of_sums(s)["mIoU"] for s in sums], draw=draw, stats_for=stats_for,
                      class_index={n: k for k, n in enumerate(classes.model_classes)})


def _headline(task: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 6) for k in catalog.BENCHMARK_METRICS[task].headline
            if metrics.get(k) is not None}


def evaluate_model(
    run: BenchmarkRun, store: Store, manifest: Manifest, images: _Images, ref: BenchmarkModel, workdir: Path
) -> tuple[dict[str, Any], list[Sample], list[int], _Evaluated]:
    """Metrics document entry, report samples, the evaluated manifest indices and what the bootstrap and
    the comparison need, for one model."""
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
        evaluated = _evaluate_classification(files.who, model, images, manifest, indices, classes)
        evaluated_names = list(meta.classes)
    elif meta.task == "semantic-segmentation":
        evaluated = _evaluate_semantic(model, images, manifest, indices, classes)
        evaluated_names = list(meta.classes)
    else:
        evaluated = _evaluate_objects(model, images, manifest, indices, classes, run.spec.iou_threshold,
                                      meta.task == "instance-segmentation")
        evaluated_names = [meta.classes[k] for k in classes.evaluated()]
    metrics, used, samples = evaluated.metrics, evaluated.used, evaluated.samples
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
        "perImage": {"metric": catalog.BENCHMARK_METRICS[meta.task].per_image,
                     "fileNames": [manifest.images[i].file_name for i in used],
                     "values": evaluated.per_image},
        "timings": timings,
    }
    intervals = _intervals(run, evaluated, entry["headline"], files.who)
    if intervals is not None:
        entry["intervals"] = intervals
    samples = samples + _galleries(evaluated, entry["perImage"]["metric"])
    if run.spec.speed.enabled:
        entry["speed"] = measure_speed(run.spec.speed, store, ref, meta, files.onnx_path,
                                       workdir / ref.training_job / "speed", run.triton)
    _log(f"{files.who}: {entry['headline']} in {timings['totalSeconds']} s")
    return entry, samples, used, evaluated


def _plan(run: BenchmarkRun) -> bootstrap.Plan:
    b = run.spec.bootstrap
    return bootstrap.Plan(resamples=b.resamples, seed=b.seed, confidence=b.confidence)


def _intervals(run: BenchmarkRun, evaluated: _Evaluated, head: dict[str, float], who: str
               ) -> dict[str, dict[str, float]] | None:
    """Bootstrap intervals of the headline metrics (evaluation.bootstrap); None when resamples is 0."""
    plan = _plan(run)
    if plan.resamples == 0:
        return None
    start = time.perf_counter()
    weights = bootstrap.resample_weights(len(evaluated.used), plan.resamples, plan.seed)
    point = evaluated.stats_for(None, None)
    names = [k for k in head if point.get(k) is not None]
    evaluated.replicates = bootstrap.replicate(lambda w: evaluated.stats_for(w, None), weights, names)
    out = bootstrap.intervals(evaluated.replicates, {k: point[k] for k in names}, plan.confidence)
    _log(f"{who}: {plan.resamples} bootstrap resamples of {len(evaluated.used)} images in "
         f"{time.perf_counter() - start:.2f} s")
    return out


def _galleries(evaluated: _Evaluated, metric: str) -> list[Sample]:
    """The best and the worst GALLERY images by their per-image score (no image in both)."""
    scored = [(v, j) for j, v in enumerate(evaluated.per_image) if v is not None and j not in evaluated.blank]
    best = sorted(scored, key=lambda p: (-p[0], p[1]))[:GALLERY]
    taken = {j for _, j in best}
    worst = [p for p in sorted(scored, key=lambda p: (p[0], p[1])) if p[1] not in taken][:GALLERY]
    out = []
    for group, chosen in (("best", best), ("worst", worst)):
        for value, j in chosen:
            sample = evaluated.draw(j)
            caption = sample.caption if sample.scored else f"{sample.caption}; {metric} {value:.2f}"
            out.append(dataclasses.replace(sample, group=group, caption=caption))
    return out


def _comparison(doc_models: dict[str, dict[str, Any]], used: dict[str, list[int]], order: list[str],
                evaluated: dict[str, _Evaluated], plan: bootstrap.Plan) -> dict[str, Any]:
    names = sorted({k for m in doc_models.values() for k in m["headline"]} - {"threshold"})
    best = catalog.benchmark_best(doc_models, order)
    class_sets = [doc_models[m]["evaluatedClasses"] for m in order]
    shared = [c for c in class_sets[0] if all(c in other for other in class_sets[1:])]
    differ = any(set(other) != set(class_sets[0]) for other in class_sets[1:])
    differences, points = _differences(names, doc_models, used, order, evaluated, plan, shared if differ else None)
    out: dict[str, Any] = {
        "sameImages": all(used[m] == used[order[0]] for m in order),
        "best": best,
        "table": [{"trainingJob": m, **doc_models[m]["headline"]} for m in order],
        "sharedClasses": shared,
        "classSetsDiffer": differ,
        "differences": differences,
        "disagreements": _disagreements(doc_models, order),
    }
    if differ:
        # Each model's headline on the shared classes: what the comparison's best, table and a gate's
        # betterThan judge, so they agree with the differences.
        out["sharedMetrics"] = {m: {k: (None if v is None else round(float(v), 6)) for k, v in points[m].items()}
                                for m in order}
        out["best"] = catalog.benchmark_best(
            {m: {"task": doc_models[m]["task"], "headline": {k: v for k, v in out["sharedMetrics"][m].items()
                                                            if v is not None}} for m in order}, order)
    return out


def _differences(names: list[str], doc_models: dict[str, dict[str, Any]], used: dict[str, list[int]],
                 order: list[str], evaluated: dict[str, _Evaluated], plan: bootstrap.Plan,
                 shared: list[str] | None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """a - b for each headline metric and pair a before b, with the bootstrap interval of the difference;
    and the point values they were taken from, by model.

    Same class sets: the models' own numbers and bootstrap replicates. Different class sets: every
    model's metrics are recomputed on the shared classes only (stats_for with `classes`), on the
    same resamples."""
    points: dict[str, dict[str, float | None]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    for m in order:
        ev = evaluated[m]
        if shared is None:
            points[m] = {k: ev.metrics.get(k) for k in names}
            replicates[m] = ev.replicates
            continue
        subset = [ev.class_index[c] for c in shared]
        points[m] = ev.stats_for(None, subset)
        weights = bootstrap.resample_weights(len(ev.used), plan.resamples, plan.seed)
        replicates[m] = bootstrap.replicate(lambda w, ev=ev, subset=subset: ev.stats_for(w, subset), weights,
                                            [k for k in names if points[m].get(k) is not None])
    out: dict[str, list[dict[str, Any]]] = {}
    for k in names:
        rows = []
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                pa, pb = points[a].get(k), points[b].get(k)
                if pa is None or pb is None:
                    continue
                rows.append({"a": a, "b": b, **bootstrap.difference(
                    float(pa), float(pb), replicates[a].get(k), replicates[b].get(k), plan.confidence,
                    paired=used[a] == used[b])})
        if rows:
            out[k] = rows
    return out, points


def _disagreements(doc_models: dict[str, dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """The images (evaluated by every model) whose per-image scores differ most between the models."""
    values: dict[str, dict[str, float]] = {}
    for m in order:
        per = doc_models[m]["perImage"]
        for name, v in zip(per["fileNames"], per["values"], strict=True):
            if v is not None:
                values.setdefault(name, {})[m] = v
    rows = [(max(v.values()) - min(v.values()), n, name, v) for n, (name, v) in enumerate(values.items())
            if len(v) == len(order)]
    rows = [r for r in rows if r[0] > 0]
    rows.sort(key=lambda r: (-r[0], r[1]))
    return [{"fileName": name, "values": {m: v[m] for m in order}} for _, _, name, v in rows[:DISAGREEMENTS]]


def _disagreement_samples(doc: dict[str, Any], evaluated: dict[str, _Evaluated], order: list[str]) -> list[Sample]:
    """Each disagreement image drawn once per model (group "disagree")."""
    out = []
    for row in doc["comparison"]["disagreements"]:
        for m in order:
            position = doc["models"][m]["perImage"]["fileNames"].index(row["fileName"])
            sample = evaluated[m].draw(position)
            out.append(dataclasses.replace(sample, group="disagree",
                                           caption=f"{m}: {sample.caption}; {row['values'][m]:.2f}"))
    return out


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
    evaluated: dict[str, _Evaluated] = {}
    with tempfile.TemporaryDirectory(prefix="kubeforge-bench-") as tmp:
        for ref in spec.models:
            name = ref.training_job
            models[name], samples[name], used[name], evaluated[name] = evaluate_model(
                spec, store, manifest, images, ref, Path(tmp)
            )
            preview = _augmentation_preview(store, ref)
            if preview is not None:
                models[ref.training_job]["augmentationPreviewUri"], previews[ref.training_job] = preview
    doc: dict[str, Any] = {
        "kind": "BenchmarkMetrics",
        "formatVersion": 2,
        "schema": SCHEMA,
        "benchmark": {"namespace": spec.namespace, "name": spec.name},
        "dataset": {"dataset": spec.dataset.dataset, "digest": spec.dataset.digest,
                    "task": manifest.task, "split": spec.spec.split},
        "iouThreshold": spec.spec.iou_threshold,
        "bootstrap": _plan(spec).to_json(),
        "onnxruntimeVersion": onnxruntime_version(),
        "createdAt": now_rfc3339(),
        "modelOrder": order,
        "models": models,
    }
    if len(order) > 1:
        doc["comparison"] = _comparison(models, used, order, evaluated, _plan(spec))
        samples["__comparison__"] = _disagreement_samples(doc, evaluated, order)
    # The gate before anything is written: a gate naming a metric the task lacks fails the run cleanly.
    gate = gate_status(doc, spec.spec.gate, spec.models, spec.run_id)  # promotion gate (evaluation.gate)
    if spec.spec.gate:
        doc["gate"] = gate["gate"]
    prefix = spec.output_prefix.rstrip("/")
    metrics_key, report_key = f"{prefix}/{METRICS_FILE}", f"{prefix}/{REPORT_FILE}"
    store.put_json(metrics_key, doc)
    store.put_bytes(report_key, render_report(doc, samples, previews).encode("utf-8"))
    first = models[order[0]]
    # The status line: the first model's primary metric (the one a gate without conditions ranks by).
    primary = catalog.BENCHMARK_METRICS[first["task"]].headline[0]
    value = first["metrics"].get(primary)
    headline = f"{primary}={value:.3f}" if value is not None else f"{primary}=n/a"
    return {
        "metricsUri": store.url(metrics_key),
        "reportUri": store.url(report_key),
        "metrics": {name: models[name]["headline"] for name in order},
        "intervals": {name: {k: [round(v["low"], 6), round(v["high"], 6)] for k, v in models[name]["intervals"].items()}
                      for name in order if models[name].get("intervals")},
        "headline": headline,
        **gate,
    }
