"""report.html: one self-contained page (no network) from a benchmark's metrics document.

Everything the page needs is inside it: plotly's JS once in <head>, figures as inline JSON,
sample images as base64 PNG. It opens from a bucket, an email attachment or an air-gapped
cluster the same way. Every string from users or data (names, file names, classes) is escaped
(`report_figures`).

The page renders every key of metrics.json formatVersion 2 that the document has (docs/evaluation.md,
"metrics.json"); each section is left out when its keys are absent, so a formatVersion 1 document
renders too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from plotly.offline import get_plotlyjs

from kubeforge.evaluation.report_figures import (
    Figures,
    Raw,
    class_pr_figure,
    confusion_figure,
    f1_figure,
    fmt,
    kv_table,
    overlaid_class_pr_figure,
    per_class_bars,
    per_class_difference_bars,
    pr_figure,
    reliability_figure,
    speed_figure,
    table,
    with_interval,
)
from kubeforge.evaluation.report_images import Sample
from kubeforge.models.catalog import BENCHMARK_METRICS, BenchmarkMetrics

# Tasks whose metrics are the detection suite (curves, per-class AP, box samples).
OBJECT_TASKS = ("object-detection", "instance-segmentation")
# How a per-class column is titled, where not by its key.
COLUMN_TITLES = {"iou": "IoU", "boundaryIoU": "boundary IoU", "dice": "Dice", "truthPixels": "truth pixels",
                 "predictedPixels": "predicted pixels", "maskAP": "mask AP", "maskAP50": "mask AP50", "f1": "F1",
                 "tp": "TP", "fp": "FP", "fn": "FN", "rocAuc": "ROC AUC"}
GROUP_TITLES = {"best": "Best images", "worst": "Worst images", "sample": "Samples",
                "disagree": "Images where the models disagree"}
CONFUSED_PAIRS = 10
RUNTIME_ORDER = {"torch": 0, "onnxruntime": 1, "openvino": 2, "triton": 3}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem} th,td{border:1px solid #ddd;padding:.3rem .6rem;
text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left} td.best{font-weight:bold;background:#eef8ee}
.ci{color:#777;font-size:.85em;white-space:nowrap} .sig{font-weight:bold;color:#1a6b1a}
table.speed td{white-space:nowrap}
.muted{color:#666;font-size:.9rem} .figs{display:flex;flex-wrap:wrap;gap:1rem} .fig{flex:0 0 auto}
table.kv td{text-align:left} table.kv td:first-child{color:#555;background:#fafafa}
.samples{display:flex;flex-wrap:wrap;gap:1rem} figure{margin:0;max-width:340px} figcaption{font-size:.8rem;color:#444}
.warn{background:#fff6e0;border:1px solid #f0c36d;padding:.4rem .8rem}
.ok{background:#eef8ee;border:1px solid #8c8;padding:.4rem .8rem}
.note{background:#eef4ff;border:1px solid #9db8e8;padding:.4rem .8rem}
"""


def _task_metrics(task: str) -> BenchmarkMetrics:
    # A task this version does not know renders as classification: plain scalar metrics.
    return BENCHMARK_METRICS.get(task, BENCHMARK_METRICS["classification"])


def _cell_with_interval(model: Mapping[str, Any], key: str) -> Raw:
    return Raw(with_interval(model["metrics"].get(key), (model.get("intervals") or {}).get(key)))


def _headline_table(model: Mapping[str, Any]) -> str:
    metrics = model["metrics"]
    spec = _task_metrics(model["task"])
    rows = [[k, _cell_with_interval(model, k)] for k in spec.headline if k in metrics]
    extra = [[k, metrics[k]] for k in spec.report_extra if k in metrics]
    note = ""
    if model.get("intervals"):
        note = "<p class='muted'>value [bootstrap interval over the evaluated images]"
        note += "; the metrics below the line have no interval</p>" if extra else "</p>"
        extra = [[f"{k} (no interval)", v] for k, v in extra]
    return f"<h3>Headline metrics</h3>{note}" + table(["metric", "value"], rows + extra, cls="headline")


def _other_metrics(model: Mapping[str, Any]) -> str:
    """The scalar v2 additions that are not headline metrics: counts, matched IoU, top-k, ROC AUC, boundary IoU."""
    m = model["metrics"]
    rows: list[list[Any]] = []
    counts = m.get("counts")
    if isinstance(counts, Mapping):
        rows.append(["true / false positives, missed (at the operating point)",
                     f"{counts.get('tp')} TP, {counts.get('fp')} FP, {counts.get('fn')} FN"])
    if "matchedIoU" in m:
        rows.append(["mean IoU of matched detections", m["matchedIoU"]])
    for k, v in (m.get("topK") or {}).items():
        rows.append([f"{k} accuracy", v])
    if "rocAuc" in m:
        rows.append(["ROC AUC (macro, one-vs-rest)", m["rocAuc"]])
    if "boundaryIoU" in m:
        rows.append(["boundary IoU (mean over object classes)", m["boundaryIoU"]])
    if "mask" in m and isinstance(m["mask"], Mapping):
        rows.append(["mask AP (COCO segm)", m["mask"].get("AP")])
    return kv_table(rows) if rows else ""


def _per_class_table(task: str, metrics: Mapping[str, Any]) -> str:
    rows = metrics.get("perClass") or []
    if not rows:
        return ""
    shown = [k for k in _task_metrics(task).per_class if any(k in r for r in rows)]
    return "<h3>Per class</h3>" + table(["class", *(COLUMN_TITLES.get(k, k) for k in shown)],
                                        [[r.get("class"), *(r.get(k) for k in shown)] for r in rows])


def _confusion(task: str, metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    cm = metrics.get("confusion") if task in OBJECT_TASKS else metrics.get("confusionMatrix")
    if not isinstance(cm, Mapping) or not cm.get("labels") or not cm.get("matrix"):
        return None
    return cm


def _confused_pairs(task: str, metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The document's pairs (objects), else the largest off-diagonal cells of the confusion matrix."""
    if isinstance(metrics.get("confusedPairs"), list):
        return metrics["confusedPairs"][:CONFUSED_PAIRS]
    cm = _confusion(task, metrics)
    if cm is None:
        return []
    labels, matrix = cm["labels"], cm["matrix"]
    pairs = [{"truth": labels[i], "predicted": labels[j], "count": v}
             for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v > 0]
    return sorted(pairs, key=lambda p: -p["count"])[:CONFUSED_PAIRS]


def _confusion_html(task: str, metrics: Mapping[str, Any], figs: Figures) -> str:
    cm = _confusion(task, metrics)
    if cm is None:
        return ""
    size = len(cm["labels"])
    if task in OBJECT_TASKS:
        title = "Confusion matrix (objects)"
    elif task == "semantic-segmentation":
        title = "Confusion matrix (pixels)"
    else:
        title = "Confusion matrix (images)"
    plot = figs.html(confusion_figure(cm, title), width=min(1100, 380 + 50 * size), height=min(1000, 280 + 40 * size))
    pairs = _confused_pairs(task, metrics)
    pairs_html = ""
    if pairs:
        unit = "pixels" if task == "semantic-segmentation" else ("objects" if task in OBJECT_TASKS else "images")
        pairs_html = "<h4>Most confused pairs</h4>" + table(
            ["ground truth", "predicted as", unit], [[p["truth"], p["predicted"], p["count"]]
                                                     for p in pairs])
    note = ""
    if task in OBJECT_TASKS:
        note = ("<p class='muted'>rows: ground truth, columns: prediction, at the operating point. The background "
                "row counts detections that match no object; the background column counts objects no detection "
                "found.</p>")
    return f"<h3>Confusion</h3>{note}<div class='figs'>{plot}<div>{pairs_html}</div></div>"


def _by_size_html(metrics: Mapping[str, Any]) -> str:
    by_size = metrics.get("bySize")
    if not isinstance(by_size, Mapping) or not by_size:
        return ""
    mask = (metrics.get("mask") or {}).get("bySize") or {}
    headers = ["object size", "AP", "AR", "recall", "objects"] + (["mask AP", "mask AR"] if mask else [])
    rows = []
    for size in ("small", "medium", "large"):
        row = by_size.get(size)
        if row is None:
            continue
        cells = [size, row.get("AP"), row.get("AR"), row.get("recall"), row.get("numGroundTruth")]
        if mask:
            cells += [(mask.get(size) or {}).get("AP"), (mask.get(size) or {}).get("AR")]
        rows.append(cells)
    return ("<h3>Results by object size</h3><p class='muted'>COCO areas in pixels of the original image: small ≤ 32², "
            "medium 32² to 96², large ≥ 96² (bounds inclusive, as pycocotools)</p>" + table(headers, rows))


def _calibration_html(model: Mapping[str, Any], figs: Figures) -> str:
    calibration = model["metrics"].get("calibration")
    if not isinstance(calibration, Mapping) or not calibration.get("bins"):
        return ""
    best = calibration.get("bestCalibratedConfidence")
    note = f"<p class='muted'>best-calibrated confidence threshold: {fmt(best)}</p>" if best is not None else ""
    return "<h3>Calibration</h3>" + note + figs.html(reliability_figure(calibration, "Reliability"))


def _speed_table(speeds: Mapping[str, Mapping[str, Any]]) -> str:
    """One model: a row per runtime and batch size. Several: side by side, the fastest marked."""
    keys = sorted({(r["runtime"], r["batchSize"], r.get("batched", True)) for s in speeds.values()
                   for r in s.get("rows", [])}, key=lambda k: (RUNTIME_ORDER.get(k[0], 9), k[1]))
    if not keys:
        return ""
    order = list(speeds)
    by = {(m, r["runtime"], r["batchSize"]): r for m in order for r in speeds[m].get("rows", [])}
    rows: list[list[Any]] = []
    marked: set[tuple[int, int]] = set()
    for i, (runtime, batch, batched) in enumerate(keys):
        label = f"{batch}" + ("" if batched else " (1 per call)")
        cells = [by.get((m, runtime, batch)) or {} for m in order]
        if len(order) == 1:
            rows.append([runtime, label, cells[0].get("medianMs"), cells[0].get("p95Ms"),
                         cells[0].get("imagesPerSecond")])
            continue
        marked |= {(i, 2 + 3 * j + 2) for (_, j) in _best_marks([c.get("imagesPerSecond") for c in cells], 0, 0)}
        rows.append([runtime, label, *(v for c in cells for v in (c.get("medianMs"), c.get("p95Ms"),
                                                                   c.get("imagesPerSecond")))])
    if len(order) == 1:
        headers = ["runtime", "batch size", "median ms", "p95 ms", "images/s"]
    else:
        headers = ["runtime", "batch size", *(f"{m}: {h}" for m in order for h in ("median ms", "p95 ms", "images/s"))]
    return table(headers, rows, cls="speed", marked=frozenset(marked))


def _speed_html(speeds: Mapping[str, Mapping[str, Any]], figs: Figures, title: str) -> str:
    speeds = {m: s for m, s in speeds.items() if isinstance(s, Mapping)}
    if not speeds:
        return ""
    first = next(iter(speeds.values()))
    size = first.get("inputSize") or []
    info = (f"<p class='muted'>{escape(str(first.get('device', '')))}, input "
            f"{'&times;'.join(str(x) for x in size)}, {first.get('warmup')} warm-up and {first.get('runs')} "
            "timed calls per batch size on random input; a batch of an export that takes one image per call is "
            "that many calls</p>")
    skipped = [(m, s) for m, speed in speeds.items() for s in speed.get("skipped", [])]
    skipped_html = ""
    if skipped:
        items = "".join(f"<li>{escape(s['runtime'])}{': ' + escape(m) if len(speeds) > 1 else ''}: "
                        f"{escape(s['reason'])}</li>" for m, s in skipped)
        skipped_html = f"<p class='muted'>not timed:</p><ul class='muted'>{items}</ul>"
    chart = ""
    if any(s.get("rows") for s in speeds.values()):
        chart = figs.html(speed_figure(speeds, "Throughput"), width=600)
    return (f"<h3>{escape(title)}</h3>{info}<div class='figs'><div>{_speed_table(speeds)}</div>{chart}</div>"
            f"{skipped_html}")


def _gallery(samples: Sequence[Sample], task: str, groups: Sequence[str]) -> str:
    if not samples:
        return ""
    legend = '<p class="muted">green: ground truth; red: predictions at or above the F1-optimal threshold</p>'
    if task == "semantic-segmentation":
        legend = '<p class="muted">left: ground truth; right: predicted mask (one colour per class)</p>'
    elif task not in OBJECT_TASKS:
        legend = ""
    parts = []
    for group in groups:
        chosen = [s for s in samples if getattr(s, "group", "sample") == group]
        if not chosen:
            continue
        figs = "".join(
            f'<figure><img alt="{escape(s.file_name)}" src="data:image/png;base64,{s.png_base64}">'
            f"<figcaption>{escape(s.caption)}</figcaption></figure>"
            for s in chosen
        )
        parts.append(f"<h3>{GROUP_TITLES.get(group, escape(group))}</h3>{legend}<div class='samples'>{figs}</div>")
    return "".join(parts)


def _preview_html(png_base64: str | None) -> str:
    """The grid of augmented training samples the model's run saved (what the model was shown)."""
    if not png_base64:
        return ""
    return ("<h3>Training augmentations</h3><p class='muted'>training samples as the model saw them, "
            "augmentations applied, with their labels</p>"
            f'<img alt="augmented training samples" style="max-width:100%" src="data:image/png;base64,{png_base64}">')


def _curves_html(name: str, model: Mapping[str, Any], figs: Figures) -> str:
    task, metrics = model["task"], model["metrics"]
    if task not in OBJECT_TASKS or "curve" not in metrics:
        return ""
    iou = metrics.get("iouThreshold")
    plots = figs.html(pr_figure({name: metrics}, f"Precision-recall at IoU {iou}")) + figs.html(
        f1_figure({name: metrics}, "F1, precision and recall vs confidence", with_pr=True))
    per_class = metrics.get("perClass") or []
    if any((r.get("curve") or {}).get("recall") for r in per_class):
        plots += figs.html(class_pr_figure(per_class, "Precision-recall per class (COCO, IoU 0.5)"), width=660)
    return f"<div class='figs'>{plots}</div>"


def _model_section(name: str, model: Mapping[str, Any], samples: Sequence[Sample], figs: Figures,
                   preview: str | None = None) -> str:
    task, metrics = model["task"], model["metrics"]
    timings = model.get("timings") or {}
    info = kv_table([
        ["TrainingJob", name], ["architecture", f"{model.get('framework', '')}/{model.get('architecture', '')}"],
        ["images evaluated", model.get("imageCount")], ["split", model.get("split")],
        ["classes evaluated", ", ".join(model.get("evaluatedClasses", []))],
        ["inference", f"{timings.get('msPerImage', 0):.1f} ms/image, "
                      f"{timings.get('imagesPerSecond', 0):.1f} images/s (ONNX Runtime, evaluation pass)"],
        ["export", model.get("exportUri", "")],
    ])
    notes = []
    if model.get("modelClassesNotInDataset"):
        notes.append("model classes not in the dataset (not evaluated): "
                     + ", ".join(model["modelClassesNotInDataset"]))
    if model.get("datasetClassesNotInModel"):
        notes.append("dataset classes the model does not know (ignored): "
                     + ", ".join(model["datasetClassesNotInModel"]))
    if model.get("splitFilesMissing"):
        notes.append(f"{model['splitFilesMissing']} image(s) of the model's split are not in this dataset version")
    notes_html = "".join(f'<p class="warn">{escape(n)}</p>' for n in notes)
    speed = model.get("speed")
    return (
        f"<section><h2>{escape(name)}</h2>{info}{notes_html}{_headline_table(model)}{_other_metrics(model)}"
        f"{_curves_html(name, model, figs)}{_per_class_table(task, metrics)}{_confusion_html(task, metrics, figs)}"
        f"{_by_size_html(metrics)}{_calibration_html(model, figs)}"
        f"{_speed_html({name: speed}, figs, 'Speed') if isinstance(speed, Mapping) else ''}"
        f"{_gallery(samples, task, ('best', 'worst', 'sample'))}{_preview_html(preview)}</section>"
    )


def _best_marks(values: Sequence[Any], row: int, first_column: int, higher: bool = True) -> set[tuple[int, int]]:
    present = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(present) < 2:
        return set()
    top = max(present) if higher else min(present)
    return {(row, first_column + j) for j, v in enumerate(values) if v == top}


def _comparison_table(doc: Mapping[str, Any], names: Sequence[str]) -> str:
    """A row per metric, a column per model (value [interval]); the best value of each row is marked."""
    order, models = doc["modelOrder"], doc["models"]
    rows: list[list[Any]] = []
    marked: set[tuple[int, int]] = set()
    best = (doc.get("comparison") or {}).get("best") or {}
    # Different class sets: every model's numbers on the shared classes (what best and the differences use).
    shared = (doc.get("comparison") or {}).get("sharedMetrics") or {}
    if shared:
        names = [k for k in names if any(k in shared.get(m, {}) for m in order)]
    for i, k in enumerate(names):
        # The document says which model is best (lower is better for some metrics); marked where 2+ have a value.
        values = [(shared.get(m) or {}).get(k) if shared else models[m]["metrics"].get(k) for m in order]
        if best.get(k) in order and sum(isinstance(v, int | float) for v in values) > 1:
            marked.add((i, 1 + order.index(best[k])))
        cells = values if shared else [_cell_with_interval(models[m], k) for m in order]
        rows.append([k, *cells])
    ms = [(models[m].get("timings") or {}).get("msPerImage") for m in order]
    marked |= _best_marks(ms, len(rows), 1, higher=False)
    rows.append(["ms/image (evaluation)", *ms])
    return table(["metric", *order], rows, cls="comparison", marked=frozenset(marked))


def _differences_html(comparison: Mapping[str, Any]) -> str:
    differences = comparison.get("differences")
    if not isinstance(differences, Mapping) or not differences:
        return ""
    rows = []
    for metric, pairs in differences.items():
        for p in pairs:
            low, high = p.get("low"), p.get("high")
            interval = "n/a" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"
            significant = p.get("excludesZero")
            verdict = "n/a" if significant is None else ("significant" if significant else "not significant")
            mark = f"<span class='{'sig' if significant else ''}'>{verdict}</span>"
            rows.append([metric, Raw(f"{escape(str(p['a']))} &minus; {escape(str(p['b']))}"), p.get("difference"),
                         Raw(interval), Raw(mark), "paired" if p.get("paired") else "unpaired"])
    html = table(["metric", "models", "difference", "interval", "excludes zero", "bootstrap"], rows, cls="differences")
    return ("<h3>Differences</h3><p class='muted'>a &minus; b with its bootstrap interval; <b>significant</b> when the "
            "interval excludes zero (paired: both models resampled on the same images)</p>" + html)


def _disagreements_html(comparison: Mapping[str, Any], order: Sequence[str], samples: Sequence[Sample],
                        task: str) -> str:
    rows = comparison.get("disagreements")
    if not isinstance(rows, list) or not rows:
        return _gallery(samples, task, ("disagree",))
    table_html = table(["image", *order], [[r["fileName"], *(r.get("values", {}).get(m) for m in order)]
                                           for r in rows])
    gallery = _gallery(samples, task, ("disagree",))
    return ("<h3>Where the models disagree most</h3><p class='muted'>images with the largest spread of per-image "
            "scores between the models</p>" + table_html + gallery)


def _comparison_section(doc: Mapping[str, Any], figs: Figures, samples: Sequence[Sample]) -> str:
    order = doc["modelOrder"]
    models = doc["models"]
    comparison = doc.get("comparison") or {}
    # The models' task: a segmentation model is benchmarked on an object-detection dataset.
    task = models[order[0]]["task"]
    spec = _task_metrics(task)
    names = [k for k in (*spec.headline, *spec.report_extra) if k != "threshold"
             and any(models[m]["metrics"].get(k) is not None for m in order)]
    warn = ""
    if not comparison.get("sameImages", True):
        warn = '<p class="warn">The models were evaluated on different images (each on its own split).</p>'
    shared = comparison.get("sharedClasses")
    if comparison.get("classSetsDiffer"):
        listed = ", ".join(shared or [])
        warn += (f"<p class='note'>The models were trained on different class sets: compared on the "
                 f"{len(shared or [])} classes they share: {escape(listed)}.</p>")
    classes = list(shared) if shared else [r["class"] for r in models[order[0]]["metrics"].get("perClass", [])]
    per_class = {m: models[m]["metrics"].get("perClass", []) for m in order}
    key = spec.per_class_compared
    label = COLUMN_TITLES.get(key, key)
    if task in OBJECT_TASKS:
        curves = {m: models[m]["metrics"] for m in order}
        plots = figs.html(pr_figure(curves, "Precision-recall, all models")) + figs.html(
            f1_figure(curves, "F1 vs confidence, all models", with_pr=False))
        if any((r.get("curve") or {}).get("recall") for rows in per_class.values() for r in rows):
            plots += figs.html(overlaid_class_pr_figure(per_class, classes, "Precision-recall per class, all models"),
                               width=700)
    else:
        plots = figs.html(per_class_bars(per_class, classes, key, f"{label} per class"))
    if any(key in r for r in per_class[order[0]]):
        plots += figs.html(per_class_difference_bars(per_class, classes, key, f"{label} per class, difference"))
    speeds = {m: models[m]["speed"] for m in order if isinstance(models[m].get("speed"), Mapping)}
    speed_html = _speed_html(speeds, figs, "Speed, side by side") if speeds else ""
    note = ("<p class='muted'>value [bootstrap interval]; the best model of each metric is marked</p>"
            if any(models[m].get("intervals") for m in order) else "")
    return (f"<section><h2>Comparison</h2>{warn}{note}{_comparison_table(doc, names)}"
            f"{_differences_html(comparison)}<div class='figs'>{plots}</div>{speed_html}"
            f"{_disagreements_html(comparison, order, samples, task)}</section>")


def _gate_section(gate: Mapping[str, Any]) -> str:
    """The promotion gate's verdict and every check with the numbers that decided it."""
    verdict = "passed" if gate.get("passed") else "failed"
    winner = f"; winner: {gate['winner']}" if gate.get("winner") else ""
    rows = [[c.get("model"), c.get("metric"), c.get("value"), "yes" if c.get("passed") else "no", c.get("message")]
            for c in gate.get("checks", [])]
    checks = table(["candidate", "metric", "value", "passed", "why"], rows) if rows else ""
    cls = "ok" if gate.get("passed") else "warn"
    message = escape(str(gate.get("message", "")))
    return (f"<section><h2>Promotion gate</h2><p class='{cls}'>Gate {verdict}{escape(winner)}. "
            f"{message}</p>{checks}</section>")


def render_report(doc: Mapping[str, Any], samples: Mapping[str, Sequence[Sample]] | None = None,
                  previews: Mapping[str, str] | None = None) -> str:
    """The whole page for a metrics document (the content of metrics.json); `samples` by model, the
    comparison's under "__comparison__"; `previews`: base64 PNG grids of augmented training samples, by model."""
    samples = samples or {}
    previews = previews or {}
    figs = Figures()
    ds = doc["dataset"]
    bench = doc.get("benchmark", {})
    title = f"Benchmark {bench.get('namespace', '')}/{bench.get('name', '')}"
    boot = doc.get("bootstrap")
    run_rows = [
        ["dataset", ds["dataset"]], ["digest", ds["digest"]], ["task", ds["task"]], ["split", ds["split"]],
        ["models", ", ".join(doc["modelOrder"])], ["ONNX Runtime", doc.get("onnxruntimeVersion")],
        ["created", doc.get("createdAt")],
    ]
    if isinstance(boot, Mapping):
        run_rows.append(["bootstrap", f"{boot.get('resamples')} resamples of the images, "
                                      f"{boot.get('confidence', 0) * 100:g}% intervals, seed {boot.get('seed')}"])
    sections = []
    if isinstance(doc.get("gate"), Mapping):
        sections.append(_gate_section(doc["gate"]))
    if len(doc["modelOrder"]) > 1:
        sections.append(_comparison_section(doc, figs, samples.get("__comparison__", [])))
    for name in doc["modelOrder"]:
        sections.append(_model_section(name, doc["models"][name], samples.get(name, []), figs, previews.get(name)))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{escape(title)}</h1><p class='muted'>Kubeforge benchmark report</p>{kv_table(run_rows)}"
        f"{''.join(sections)}</body></html>\n"
    )
