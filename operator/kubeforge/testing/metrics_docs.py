"""metrics.json documents (formatVersion 2) with every key of the contract, for report, schema and CLI tests.

The numbers are generated (seeded) and merely plausible: these documents exercise rendering and
validation, not the metrics themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kubeforge.models.catalog import BENCHMARK_METRICS, benchmark_best

CLASSES = ["circle", "square", "triangle"]
SCHEMA_URI = "https://kubeforge.io/schemas/benchmark-metrics/v2.json"


def _r(x: float) -> float:
    return round(float(x), 6)


def _interval(value: float, rng: np.random.Generator) -> dict[str, float]:
    half = float(rng.uniform(0.01, 0.05))
    return {"low": _r(max(0.0, value - half)), "high": _r(min(1.0, value + half))}


def _calibration(rng: np.random.Generator) -> dict[str, Any]:
    bins = []
    for b in range(10):
        count = int(rng.integers(0, 30)) if b else 0
        conf = None if count == 0 else _r(b / 10 + rng.uniform(0, 0.1))
        acc = None if count == 0 else _r(min(1.0, max(0.0, (conf or 0) + rng.normal(0, 0.08))))
        bins.append({"low": _r(b / 10), "high": _r((b + 1) / 10), "count": count, "confidence": conf, "accuracy": acc})
    return {"ece": _r(rng.uniform(0.02, 0.1)), "mce": _r(rng.uniform(0.1, 0.3)),
            "bestCalibratedConfidence": _r(rng.uniform(0.3, 0.7)), "bins": bins}


def _pr_curve(rng: np.random.Generator, quality: float) -> dict[str, list[float]]:
    recall = np.linspace(0, 1, 101)
    precision = np.clip(1 - (recall ** (1 / max(quality, 0.05))) * rng.uniform(0.2, 0.6), 0, 1)
    keep = recall <= quality + 0.1
    return {"recall": [_r(v) for v in recall[keep]], "precision": [_r(v) for v in precision[keep]]}


def _speed(rng: np.random.Generator, batched: bool, size: int) -> dict[str, Any]:
    rows = []
    for runtime, factor in (("torch", 1.6), ("onnxruntime", 1.0), ("openvino", 0.8)):
        for batch in (1, 8, 16):
            median = factor * (2.0 + rng.uniform(0, 0.5)) * (batch if not batched else batch ** 0.7)
            rows.append({"runtime": runtime, "batchSize": batch, "medianMs": _r(median),
                         "p95Ms": _r(median * rng.uniform(1.05, 1.3)),
                         "imagesPerSecond": _r(batch / median * 1000), "batched": batched})
    return {"device": "cpu (2 threads)", "inputSize": [size, size], "warmup": 2, "runs": 10, "rows": rows,
            "skipped": [{"runtime": "triton", "reason": "InferenceService svc <b>x</b> is not ready"}]}


def _per_image(rng: np.random.Generator, files: list[str], metric: str) -> dict[str, Any]:
    values: list[float | None] = [_r(v) for v in rng.uniform(0, 1, len(files))]
    values[-1] = None
    return {"metric": metric, "fileNames": files, "values": values}


def _objects_metrics(rng: np.random.Generator, quality: float, instance: bool) -> dict[str, Any]:
    thr = np.linspace(0.99, 0.01, 40)
    recall = np.clip(np.linspace(0.05, quality + 0.05, 40), 0, 1)
    precision = np.clip(1 - recall * rng.uniform(0.1, 0.4), 0, 1)
    f1 = 2 * precision * recall / (precision + recall)
    best = int(np.argmax(f1))
    m: dict[str, Any] = {
        "AP": _r(quality * 0.7), "AP50": _r(quality), "AP75": _r(quality * 0.75), "APs": None,
        "APm": _r(quality * 0.6), "APl": _r(quality * 0.8), "AR1": _r(quality * 0.5), "AR10": _r(quality * 0.8),
        "AR100": _r(quality * 0.82), "iouThreshold": 0.5, "threshold": _r(thr[best]),
        "precision": _r(precision[best]), "recall": _r(recall[best]), "f1": _r(f1[best]),
        "numGroundTruth": 40, "numDetections": 400,
        "curve": {"confidence": [_r(v) for v in thr], "precision": [_r(v) for v in precision],
                  "recall": [_r(v) for v in recall], "f1": [_r(v) for v in f1]},
        "perClass": [],
        "counts": {"tp": 30, "fp": 6, "fn": 10},
        "confusion": {"labels": [*CLASSES, "background"],
                      "matrix": [[10, 1, 0, 3], [2, 9, 1, 4], [0, 0, 11, 3], [2, 3, 1, 0]]},
        "confusedPairs": [{"truth": "square", "predicted": "circle", "count": 2},
                          {"truth": "circle", "predicted": "square", "count": 1},
                          {"truth": "square", "predicted": "triangle", "count": 1}],
        "calibration": _calibration(rng), "matchedIoU": _r(rng.uniform(0.6, 0.9)),
        "bySize": {"small": {"AP": None, "AR": None, "numGroundTruth": 0, "recall": None},
                   "medium": {"AP": _r(quality * 0.6), "AR": _r(quality * 0.7), "numGroundTruth": 12,
                              "recall": _r(quality * 0.75)},
                   "large": {"AP": _r(quality * 0.8), "AR": _r(quality * 0.85), "numGroundTruth": 28,
                             "recall": _r(quality * 0.9)}},
        "detectionsOfClassesNotInDataset": 0,
    }
    for k, name in enumerate(CLASSES):
        q = quality * (1 - 0.1 * k)
        row = {"class": name, "precision": _r(q), "recall": _r(q * 0.9), "f1": _r(q * 0.95), "tp": 10, "fp": 2,
               "fn": 3, "support": 13, "AP": _r(q * 0.7), "AP50": _r(q), "curve": _pr_curve(rng, q)}
        if instance:
            row |= {"maskAP": _r(q * 0.65), "maskAP50": _r(q * 0.95)}
        m["perClass"].append(row)
    if instance:
        m |= {"maskAP": _r(quality * 0.65), "maskAP50": _r(quality * 0.95), "maskAP75": _r(quality * 0.6)}
        m["mask"] = {"AP": m["maskAP"], "AP50": m["maskAP50"], "AP75": m["maskAP75"],
                     "bySize": {k: dict(v) for k, v in m["bySize"].items()}}
    return m


def _classification_metrics(rng: np.random.Generator, quality: float) -> dict[str, Any]:
    cm = [[12, 2, 1], [1, 13, 1], [0, 3, 11]]
    per = [{"class": c, "precision": _r(quality - 0.02 * k), "recall": _r(quality - 0.03 * k),
            "f1": _r(quality - 0.025 * k), "support": 15, "rocAuc": _r(0.9 + 0.02 * k)} for k, c in enumerate(CLASSES)]
    return {"accuracy": _r(quality), "count": 44, "macroPrecision": _r(quality - 0.01),
            "macroRecall": _r(quality - 0.02), "macroF1": _r(quality - 0.015), "weightedPrecision": _r(quality),
            "weightedRecall": _r(quality), "weightedF1": _r(quality - 0.01),
            "confusionMatrix": {"labels": CLASSES, "matrix": cm}, "perClass": per,
            "topK": {"top1": _r(quality)}, "rocAuc": _r(0.93), "calibration": _calibration(rng)}


def _semantic_metrics(rng: np.random.Generator, quality: float) -> dict[str, Any]:
    labels = ["__bg__", *CLASSES]
    per = [{"class": c, "iou": _r(quality - 0.05 * k), "dice": _r(quality - 0.03 * k), "truthPixels": 1000 + k,
            "predictedPixels": 990 + k, "boundaryIoU": _r(quality - 0.2 - 0.02 * k)} for k, c in enumerate(labels)]
    return {"mIoU": _r(quality), "meanDice": _r(quality + 0.05), "pixelAccuracy": _r(0.95),
            "backgroundIoU": per[0]["iou"], "perClass": per, "boundaryIoU": _r(quality - 0.2),
            "confusionMatrix": {"labels": labels, "matrix": [[900, 30, 20, 10], [20, 950, 5, 5],
                                                              [10, 5, 970, 5], [15, 0, 5, 980]]}}


def v2_doc(task: str = "object-detection", models: tuple[str, ...] = ("det-a", "det-b"), seed: int = 0,
           class_sets_differ: bool = False) -> dict[str, Any]:
    """A formatVersion 2 metrics document for `task` with `models` (2+: with a comparison)."""
    rng = np.random.default_rng(seed)
    files = [f"img_{i:03d}.png" for i in range(12)]
    doc: dict[str, Any] = {
        "kind": "BenchmarkMetrics", "formatVersion": 2, "schema": SCHEMA_URI,
        "benchmark": {"namespace": "team-a", "name": "compare <shapes>"},
        "dataset": {"dataset": "shapes", "digest": "a" * 64, "task": task, "split": "val"},
        "iouThreshold": 0.5, "onnxruntimeVersion": "1.32.0", "createdAt": "2026-12-03T21:00:00Z",
        "bootstrap": {"resamples": 200, "seed": 0, "confidence": 0.95},
        "modelOrder": list(models), "models": {},
    }
    for n, name in enumerate(models):
        quality = 0.85 - 0.1 * n
        if task in ("object-detection", "instance-segmentation"):
            metrics = _objects_metrics(rng, quality, task == "instance-segmentation")
        elif task == "classification":
            metrics = _classification_metrics(rng, quality)
        else:
            metrics = _semantic_metrics(rng, quality)
        headline = {k: metrics[k] for k in BENCHMARK_METRICS[task].headline if metrics.get(k) is not None}
        doc["models"][name] = {
            "trainingJob": name, "experimentPrefix": f"experiments/team-a_shapes/{name}/runs/abc{n}",
            "checkpoint": "best", "exportUri": f"file:///store/experiments/{name}/export/model.onnx", "task": task,
            "framework": "torchvision", "architecture": "resnet18", "classes": CLASSES, "evaluatedClasses": CLASSES,
            "modelClassesNotInDataset": [], "datasetClassesNotInModel": [], "split": "val", "imageCount": len(files),
            "skippedImages": 0, "splitFilesMissing": 0, "headline": headline, "metrics": metrics,
            "timings": {"loadSeconds": 0.1, "preprocessSeconds": 0.2, "inferenceSeconds": 0.5, "images": 12,
                        "calls": 12, "msPerImage": 4.1, "imagesPerSecond": 243.9, "totalSeconds": 1.5},
            "intervals": {k: _interval(v, rng) for k, v in headline.items() if k != "threshold"},
            "perImage": _per_image(rng, files, BENCHMARK_METRICS[task].per_image),
            "speed": _speed(rng, task in ("classification", "semantic-segmentation"), 64),
        }
    if len(models) > 1:
        names = sorted({k for m in doc["models"].values() for k in m["headline"]} - {"threshold"})
        differences: dict[str, list[dict[str, Any]]] = {}
        for k in names:
            rows = []
            for i, a in enumerate(models):
                for b in models[i + 1:]:
                    d = doc["models"][a]["headline"][k] - doc["models"][b]["headline"][k]
                    low, high = d - 0.04, d + 0.04
                    rows.append({"a": a, "b": b, "difference": _r(d), "low": _r(low), "high": _r(high),
                                 "excludesZero": bool(low > 0 or high < 0), "paired": True})
            differences[k] = rows
        doc["comparison"] = {
            "sameImages": True,
            "best": benchmark_best(doc["models"], models),
            "table": [{"trainingJob": m, **doc["models"][m]["headline"]} for m in models],
            "differences": differences,
            "sharedClasses": CLASSES[:2] if class_sets_differ else CLASSES,
            "classSetsDiffer": class_sets_differ,
            "disagreements": [{"fileName": f, "values": {m: _r(rng.uniform(0, 1)) for m in models}}
                              for f in files[:3]],
        }
        if class_sets_differ:
            shared = {m: {k: _r(v * 0.9) for k, v in doc["models"][m]["headline"].items() if k != "threshold"}
                      for m in models}
            doc["comparison"]["sharedMetrics"] = shared
            doc["comparison"]["best"] = benchmark_best(
                {m: {"task": task, "headline": shared[m]} for m in models}, models)
    return doc
