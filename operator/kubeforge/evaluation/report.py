"""report.html: one self-contained page (no network) from a benchmark's metrics document.

Everything the page needs is inside it: plotly's JS once in <head>, figures as inline JSON,
sample images as base64 PNG. It opens from a bucket, an email attachment or an air-gapped
cluster the same way. Every string from users or data (names, file names, classes) goes
through `html.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kubeforge.evaluation.report_images import Sample

# No plotly logo: it links to plotly.com, and nothing in the report should lead off-line.
PLOT_CONFIG = {"displaylogo": False}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]

DETECTION_HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
                      "precision", "recall", "f1", "threshold")
# Instance segmentation: the mask AP first, then the same box metrics as detection.
INSTANCE_HEADLINE = ("maskAP", "maskAP50", "maskAP75", *DETECTION_HEADLINE)
# Tasks whose metrics are the detection suite (curves, per-class AP, box samples).
OBJECT_TASKS = ("object-detection", "instance-segmentation")
CLASSIFICATION_HEADLINE = ("accuracy", "macroPrecision", "macroRecall", "macroF1",
                           "weightedPrecision", "weightedRecall", "weightedF1")
SEMANTIC_HEADLINE = ("mIoU", "meanDice", "pixelAccuracy", "backgroundIoU")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem} th,td{border:1px solid #ddd;padding:.3rem .6rem;
text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left} td.best{font-weight:bold;background:#eef8ee}
.muted{color:#666;font-size:.9rem} .figs{display:flex;flex-wrap:wrap;gap:1rem} .fig{flex:0 0 auto}
table.kv td{text-align:left} table.kv td:first-child{color:#555;background:#fafafa}
.samples{display:flex;flex-wrap:wrap;gap:1rem} figure{margin:0;max-width:340px} figcaption{font-size:.8rem;color:#444}
.warn{background:#fff6e0;border:1px solid #f0c36d;padding:.4rem .8rem}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


class _Figures:
    """Numbers the figure divs so ids are stable from run to run (diffable reports)."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, width: int = 560, height: int = 380) -> str:
        self.count += 1
        # Fixed size: a responsive plot inside a flex row measures its box before layout settles
        # and ends up wider than it, cropping the right side of the axes.
        fig.update_layout(margin={"l": 55, "r": 20, "t": 50, "b": 45}, width=width, height=height,
                          template="plotly_white")
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                          div_id=f"kf-fig-{self.count}")
        return f'<div class="fig">{div}</div>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], best: Sequence[int | None] = ()) -> str:
    """A table; the first column is left-aligned text, `best[j]` bolds row best[j] in column j."""
    head = "".join(f'<th class="{"l" if j == 0 else ""}">{escape(h)}</th>' for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            cls = "l" if j == 0 else ("best" if j < len(best) and best[j] == i else "")
            cells.append(f'<td class="{cls}">{_fmt(value)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(rows: Sequence[Sequence[Any]]) -> str:
    body = "".join(f"<tr><td>{escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


def _headline_names(task: str) -> tuple[str, ...]:
    if task == "instance-segmentation":
        return INSTANCE_HEADLINE
    if task == "semantic-segmentation":
        return SEMANTIC_HEADLINE
    return DETECTION_HEADLINE if task == "object-detection" else CLASSIFICATION_HEADLINE


def _pr_figure(curves: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    fig = go.Figure()
    for n, (name, model) in enumerate(curves.items()):
        curve, color = model["curve"], COLORS[n % len(COLORS)]
        fig.add_scatter(x=curve["recall"], y=curve["precision"], mode="lines", name=name,
                        line={"color": color}, customdata=curve["confidence"],
                        hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>conf %{customdata:.3f}")
        if model.get("threshold") is not None:
            fig.add_scatter(x=[model["recall"]], y=[model["precision"]], mode="markers", showlegend=False,
                            marker={"color": color, "size": 11, "symbol": "star"},
                            name=f"{name} best F1", hovertemplate="best F1<br>R %{x:.3f} P %{y:.3f}")
    fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig


def _f1_figure(curves: Mapping[str, Mapping[str, Any]], title: str, with_pr: bool) -> go.Figure:
    fig = go.Figure()
    for n, (name, model) in enumerate(curves.items()):
        curve, color = model["curve"], COLORS[n % len(COLORS)]
        label = "F1" if with_pr else name
        fig.add_scatter(x=curve["confidence"], y=curve["f1"], mode="lines", name=label, line={"color": color})
        if with_pr:
            fig.add_scatter(x=curve["confidence"], y=curve["precision"], mode="lines", name="precision",
                            line={"color": COLORS[1], "dash": "dot"})
            fig.add_scatter(x=curve["confidence"], y=curve["recall"], mode="lines", name="recall",
                            line={"color": COLORS[2], "dash": "dash"})
        if model.get("threshold") is not None:
            fig.add_vline(x=model["threshold"], line={"color": color, "width": 1, "dash": "dash"})
    fig.update_layout(title=title, xaxis_title="confidence threshold", yaxis_title="score",
                      xaxis_range=[0, 1.0], yaxis_range=[0, 1.02])
    return fig


def _confusion_figure(cm: Mapping[str, Any], title: str) -> go.Figure:
    labels, matrix = cm["labels"], cm["matrix"]
    totals = [sum(row) or 1 for row in matrix]
    # Colour by the row-normalised share so small classes are as readable as big ones.
    share = [[v / totals[i] for v in row] for i, row in enumerate(matrix)]
    fig = go.Figure(go.Heatmap(z=share, x=labels, y=labels, text=matrix, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "row share"},
                               hovertemplate="true %{y}<br>predicted %{x}<br>count %{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="ground truth",
                      yaxis_autorange="reversed")
    return fig


def _per_class_table(task: str, metrics: Mapping[str, Any]) -> str:
    rows = metrics.get("perClass", [])
    if task == "semantic-segmentation":
        headers = ["class", "IoU", "Dice", "truth pixels", "predicted pixels"]
        keys = ["iou", "dice", "truthPixels", "predictedPixels"]
    elif task in OBJECT_TASKS:
        headers = ["class", "AP", "AP50", "precision", "recall", "F1", "TP", "FP", "FN", "support"]
        keys = ["AP", "AP50", "precision", "recall", "f1", "tp", "fp", "fn", "support"]
    else:
        headers = ["class", "precision", "recall", "F1", "support"]
        keys = ["precision", "recall", "f1", "support"]
    return _table(headers, [[r["class"], *(r.get(k) for k in keys)] for r in rows])


def _samples_html(samples: Sequence[Sample], task: str) -> str:
    if not samples:
        return ""
    figs = "".join(
        f'<figure><img alt="{escape(s.file_name)}" src="data:image/png;base64,{s.png_base64}">'
        f"<figcaption>{escape(s.caption)}</figcaption></figure>"
        for s in samples
    )
    legend = '<p class="muted">green: ground truth; red: predictions at or above the F1-optimal threshold</p>'
    if task == "semantic-segmentation":
        legend = '<p class="muted">left: ground truth; right: predicted mask (one colour per class)</p>'
    elif task not in OBJECT_TASKS:
        legend = ""
    return f"<h3>Samples</h3>{legend}<div class='samples'>{figs}</div>"


def _preview_html(png_base64: str | None) -> str:
    """The grid of augmented training samples the model's run saved (what the model was shown)."""
    if not png_base64:
        return ""
    return ("<h3>Training augmentations</h3><p class='muted'>training samples as the model saw them, "
            "augmentations applied, with their labels</p>"
            f'<img alt="augmented training samples" style="max-width:100%" src="data:image/png;base64,{png_base64}">')


def _model_section(name: str, model: Mapping[str, Any], samples: Sequence[Sample], figs: _Figures,
                   preview: str | None = None) -> str:
    task, metrics = model["task"], model["metrics"]
    info = _kv_table([
        ["TrainingJob", name], ["architecture", f"{model.get('framework', '')}/{model.get('architecture', '')}"],
        ["images evaluated", model.get("imageCount")], ["split", model.get("split")],
        ["classes evaluated", ", ".join(model.get("evaluatedClasses", []))],
        ["inference", f"{model['timings'].get('msPerImage', 0):.1f} ms/image, "
                      f"{model['timings'].get('imagesPerSecond', 0):.1f} images/s (ONNX Runtime, CPU)"],
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
    names = _headline_names(task)
    shown = [k for k in names if k in metrics]
    headline = _table(["", *shown], [["value", *(metrics[k] for k in shown)]])
    if task in OBJECT_TASKS:
        iou = metrics.get("iouThreshold")
        plots = figs.html(_pr_figure({name: metrics}, f"Precision-recall at IoU {iou}")) + figs.html(
            _f1_figure({name: metrics}, "F1, precision and recall vs confidence", with_pr=True))
    else:
        size = len(metrics["confusionMatrix"]["labels"])
        plots = figs.html(_confusion_figure(metrics["confusionMatrix"], "Confusion matrix"),
                          width=min(1100, 360 + 50 * size), height=min(1000, 260 + 40 * size))
    return (
        f"<section><h2>{escape(name)}</h2>{info}{notes_html}<h3>Headline metrics</h3>{headline}"
        f"<div class='figs'>{plots}</div><h3>Per class</h3>{_per_class_table(task, metrics)}"
        f"{_samples_html(samples, task)}{_preview_html(preview)}</section>"
    )


def _comparison_section(doc: Mapping[str, Any], figs: _Figures) -> str:
    order = doc["modelOrder"]
    models = doc["models"]
    # The models' task: a segmentation model is benchmarked on an object-detection dataset.
    task = models[order[0]]["task"]
    names = [k for k in _headline_names(task) if k != "threshold"]
    rows = [[m, *(models[m]["metrics"].get(k) for k in names), models[m]["timings"].get("msPerImage")] for m in order]
    best: list[int | None] = [None]
    for j in range(1, len(names) + 1):
        values = [r[j] for r in rows]
        present = [v for v in values if v is not None]
        best.append(values.index(max(present)) if present else None)
    table = _table(["TrainingJob", *names, "ms/image"], rows, best)
    warn = ""
    if not doc.get("comparison", {}).get("sameImages", True):
        warn = '<p class="warn">The models were evaluated on different images (each on its own split).</p>'
    if task in OBJECT_TASKS:
        curves = {m: models[m]["metrics"] for m in order}
        plots = figs.html(_pr_figure(curves, "Precision-recall, all models")) + figs.html(
            _f1_figure(curves, "F1 vs confidence, all models", with_pr=False))
    else:
        fig = go.Figure()
        for n, m in enumerate(order):
            per = models[m]["metrics"]["perClass"]
            score = "iou" if task == "semantic-segmentation" else "f1"
            fig.add_bar(x=[r["class"] for r in per], y=[r[score] for r in per], name=m,
                        marker_color=COLORS[n % len(COLORS)])
        title = "IoU per class" if task == "semantic-segmentation" else "F1 per class"
        fig.update_layout(title=title, barmode="group", yaxis_range=[0, 1.02])
        plots = figs.html(fig)
    return f"<section><h2>Comparison</h2>{warn}{table}<div class='figs'>{plots}</div></section>"


def render_report(doc: Mapping[str, Any], samples: Mapping[str, Sequence[Sample]] | None = None,
                  previews: Mapping[str, str] | None = None) -> str:
    """The whole page for a metrics document (the content of metrics.json); `previews`: base64 PNG grids of
    augmented training samples, by model."""
    samples = samples or {}
    previews = previews or {}
    figs = _Figures()
    ds = doc["dataset"]
    bench = doc.get("benchmark", {})
    title = f"Benchmark {bench.get('namespace', '')}/{bench.get('name', '')}"
    run_info = _kv_table([
        ["dataset", ds["dataset"]], ["digest", ds["digest"]], ["task", ds["task"]], ["split", ds["split"]],
        ["models", ", ".join(doc["modelOrder"])], ["ONNX Runtime", doc.get("onnxruntimeVersion")],
        ["created", doc.get("createdAt")],
    ])
    sections = []
    if len(doc["modelOrder"]) > 1:
        sections.append(_comparison_section(doc, figs))
    for name in doc["modelOrder"]:
        sections.append(_model_section(name, doc["models"][name], samples.get(name, []), figs, previews.get(name)))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{escape(title)}</h1><p class='muted'>Kubeforge benchmark report</p>{run_info}"
        f"{''.join(sections)}</body></html>\n"
    )
