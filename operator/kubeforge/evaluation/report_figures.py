"""The report's building blocks: escaped tables, figure embedding, and one function per kind of chart.

Every user string (model, class and file names) is escaped: in HTML with `html.escape`, in plotly
labels too (plotly reads a few tags in its strings and decodes entities back to text), and the figure
JSON inside <script> has `<`, `>` and `&` as \\u escapes so no string can close the script element.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import plotly.graph_objects as go
from plotly.utils import PlotlyJSONEncoder

# No plotly logo: it links to plotly.com, and nothing in the report should lead off-line.
PLOT_CONFIG = {"displaylogo": False}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
JS_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def t(value: Any) -> str:
    """A user string for a plotly label."""
    return escape(str(value))


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


def with_interval(value: Any, interval: Mapping[str, Any] | None) -> str:
    """'0.812 [0.774, 0.851]' (escaped HTML), or the value alone."""
    if value is None or not interval or interval.get("low") is None or interval.get("high") is None:
        return fmt(value)
    return f"{fmt(value)} <span class='ci'>[{fmt(interval['low'])}, {fmt(interval['high'])}]</span>"


class Raw(str):
    """Table cell content that is already HTML (escaped where it holds user strings)."""


def cell(value: Any) -> str:
    return str(value) if isinstance(value, Raw) else fmt(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], best: Sequence[int | None] = (),
          cls: str = "", marked: frozenset[tuple[int, int]] = frozenset()) -> str:
    """A table; the first column is left-aligned text, `best[j]` marks row best[j] in column j, `marked`
    the (row, column) cells listed."""
    head = "".join(f'<th class="{"l" if j == 0 else ""}">{escape(h)}</th>' for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            is_best = (j < len(best) and best[j] == i) or (i, j) in marked
            mark = "l" if j == 0 else ("best" if is_best else "")
            cells.append(f'<td class="{mark}">{cell(value)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(rows: Sequence[Sequence[Any]]) -> str:
    body = "".join(f"<tr><td>{escape(str(k))}</td><td>{cell(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


class Figures:
    """Numbers the figure divs so ids are stable from run to run (diffable reports)."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, width: int = 560, height: int = 380) -> str:
        self.count += 1
        # Fixed size: a responsive plot inside a flex row measures its box before layout settles
        # and ends up wider than it, cropping the right side of the axes.
        fig.update_layout(margin={"l": 55, "r": 20, "t": 50, "b": 45}, width=width, height=height,
                          template="plotly_white")
        spec = fig.to_plotly_json()
        payload = json.dumps([spec.get("data", []), spec.get("layout", {}), PLOT_CONFIG], cls=PlotlyJSONEncoder)
        for char, code in JS_ESCAPES.items():
            payload = payload.replace(char, code)
        div = f"kf-fig-{self.count}"
        return (f'<div class="fig"><div id="{div}" class="plotly-graph-div" style="width:{width}px;'
                f'height:{height}px"></div><script>(function(){{var a={payload};'
                f'Plotly.newPlot("{div}",a[0],a[1],a[2]);}})();</script></div>')


def pr_figure(curves: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """The operating curves (confidence sweep at the IoU threshold) of one or more models."""
    fig = go.Figure()
    for n, (name, model) in enumerate(curves.items()):
        curve, color = model.get("curve") or {}, COLORS[n % len(COLORS)]
        fig.add_scatter(x=curve.get("recall", []), y=curve.get("precision", []), mode="lines", name=t(name),
                        line={"color": color}, customdata=curve.get("confidence", []),
                        hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>conf %{customdata:.3f}")
        if model.get("threshold") is not None and model.get("recall") is not None:
            fig.add_scatter(x=[model["recall"]], y=[model.get("precision")], mode="markers", showlegend=False,
                            marker={"color": color, "size": 11, "symbol": "star"},
                            name=f"{t(name)} best F1", hovertemplate="best F1<br>R %{x:.3f} P %{y:.3f}")
    fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig


def f1_figure(curves: Mapping[str, Mapping[str, Any]], title: str, with_pr: bool) -> go.Figure:
    fig = go.Figure()
    for n, (name, model) in enumerate(curves.items()):
        curve, color = model.get("curve") or {}, COLORS[n % len(COLORS)]
        conf = curve.get("confidence", [])
        fig.add_scatter(x=conf, y=curve.get("f1", []), mode="lines", name="F1" if with_pr else t(name),
                        line={"color": color})
        if with_pr:
            fig.add_scatter(x=conf, y=curve.get("precision", []), mode="lines", name="precision",
                            line={"color": COLORS[1], "dash": "dot"})
            fig.add_scatter(x=conf, y=curve.get("recall", []), mode="lines", name="recall",
                            line={"color": COLORS[2], "dash": "dash"})
        if model.get("threshold") is not None:
            fig.add_vline(x=model["threshold"], line={"color": color, "width": 1, "dash": "dash"})
    fig.update_layout(title=title, xaxis_title="confidence threshold", yaxis_title="score",
                      xaxis_range=[0, 1.0], yaxis_range=[0, 1.02])
    return fig


def class_pr_figure(per_class: Sequence[Mapping[str, Any]], title: str) -> go.Figure:
    """COCO's 101-point precision-recall curve of each class (click a legend entry to hide or show it)."""
    fig = go.Figure()
    for n, row in enumerate(per_class):
        curve = row.get("curve") or {}
        if not curve.get("recall"):
            continue
        ap = row.get("AP50")
        label = f"{t(row['class'])} (AP50 {ap:.3f})" if isinstance(ap, float) else t(row["class"])
        fig.add_scatter(x=curve["recall"], y=curve["precision"], mode="lines", name=label,
                        line={"color": COLORS[n % len(COLORS)]})
    fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig


def overlaid_class_pr_figure(models: Mapping[str, Sequence[Mapping[str, Any]]], classes: Sequence[str],
                             title: str) -> go.Figure:
    """Per-class curves of every model: a colour per model, a dash per class; one legend entry each."""
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    fig = go.Figure()
    for n, (name, rows) in enumerate(models.items()):
        by_class = {r["class"]: r for r in rows}
        for k, cls in enumerate(classes):
            curve = (by_class.get(cls) or {}).get("curve") or {}
            if not curve.get("recall"):
                continue
            fig.add_scatter(x=curve["recall"], y=curve["precision"], mode="lines", name=f"{t(name)}: {t(cls)}",
                            line={"color": COLORS[n % len(COLORS)], "dash": dashes[k % len(dashes)]})
    fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig


def confusion_figure(cm: Mapping[str, Any], title: str, axis: str = "") -> go.Figure:
    labels, matrix = [t(x) for x in cm["labels"]], cm["matrix"]
    totals = [sum(row) or 1 for row in matrix]
    # Colour by the row-normalised share so small classes are as readable as big ones.
    share = [[v / totals[i] for v in row] for i, row in enumerate(matrix)]
    fig = go.Figure(go.Heatmap(z=share, x=labels, y=labels, text=matrix, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "row share"},
                               hovertemplate="true %{y}<br>predicted %{x}<br>count %{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=f"predicted{axis}", yaxis_title=f"ground truth{axis}",
                      yaxis_autorange="reversed")
    return fig


def reliability_figure(calibration: Mapping[str, Any], title: str) -> go.Figure:
    """Accuracy against mean confidence in each confidence bin; a calibrated model lies on the diagonal."""
    bins = [b for b in calibration.get("bins", []) if b.get("count")]
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                    line={"color": "#999", "dash": "dash"})
    fig.add_bar(x=[(b["low"] + b["high"]) / 2 for b in bins], y=[b.get("accuracy") for b in bins],
                width=[(b["high"] - b["low"]) * 0.9 for b in bins], name="accuracy", marker_color=COLORS[0],
                opacity=0.75, customdata=[[b["count"], b.get("confidence")] for b in bins],
                hovertemplate="bin %{x:.2f}<br>accuracy %{y:.3f}<br>mean confidence %{customdata[1]:.3f}"
                              "<br>%{customdata[0]} predictions<extra></extra>")
    fig.add_scatter(x=[b.get("confidence") for b in bins], y=[b.get("accuracy") for b in bins],
                    mode="markers", name="mean confidence", marker={"color": COLORS[1], "size": 8})
    ece, mce = calibration.get("ece"), calibration.get("mce")
    scores = f"ECE {fmt(ece)}, MCE {fmt(mce)}"
    fig.update_layout(title=f"{title} ({scores})", xaxis_title="confidence", yaxis_title="accuracy",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02], bargap=0)
    return fig


def speed_figure(models: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """Images per second by batch size: a line per runtime (and model, when several)."""
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot"]
    runtimes = sorted({r["runtime"] for s in models.values() for r in s.get("rows", [])})
    for n, (name, speed) in enumerate(models.items()):
        for k, runtime in enumerate(runtimes):
            rows = sorted((r for r in speed.get("rows", []) if r["runtime"] == runtime), key=lambda r: r["batchSize"])
            if not rows:
                continue
            label = runtime if len(models) == 1 else f"{t(name)}: {runtime}"
            color = COLORS[(k if len(models) == 1 else n) % len(COLORS)]
            fig.add_scatter(x=[r["batchSize"] for r in rows], y=[r["imagesPerSecond"] for r in rows],
                            mode="lines+markers", name=label,
                            line={"color": color, "dash": dashes[k % len(dashes)] if len(models) > 1 else "solid"},
                            customdata=[[r["medianMs"], r["p95Ms"]] for r in rows],
                            hovertemplate="batch %{x}<br>%{y:.1f} images/s<br>median %{customdata[0]:.2f} ms"
                                          "<br>p95 %{customdata[1]:.2f} ms")
    fig.update_layout(title=title, xaxis_title="batch size", yaxis_title="images / s", xaxis_type="log",
                      yaxis_rangemode="tozero")
    return fig


def per_class_bars(models: Mapping[str, Sequence[Mapping[str, Any]]], classes: Sequence[str], key: str,
                   title: str) -> go.Figure:
    fig = go.Figure()
    for n, (name, rows) in enumerate(models.items()):
        by_class = {r["class"]: r for r in rows}
        fig.add_bar(x=[t(c) for c in classes], y=[(by_class.get(c) or {}).get(key) for c in classes], name=t(name),
                    marker_color=COLORS[n % len(COLORS)])
    fig.update_layout(title=title, barmode="group", yaxis_range=[0, 1.02])
    return fig


def per_class_difference_bars(models: Mapping[str, Sequence[Mapping[str, Any]]], classes: Sequence[str], key: str,
                              title: str) -> go.Figure:
    """Each model's per-class score minus the first model's (the reference)."""
    names = list(models)
    ref = {r["class"]: r.get(key) for r in models[names[0]]}
    fig = go.Figure()
    for n, name in enumerate(names[1:], start=1):
        by_class = {r["class"]: r.get(key) for r in models[name]}
        diffs = [None if by_class.get(c) is None or ref.get(c) is None else by_class[c] - ref[c] for c in classes]
        fig.add_bar(x=[t(c) for c in classes], y=diffs, name=f"{t(name)} - {t(names[0])}",
                    marker_color=COLORS[n % len(COLORS)])
    fig.add_hline(y=0, line={"color": "#444", "width": 1})
    fig.update_layout(title=title, barmode="group", yaxis_title=f"{key} difference")
    return fig
