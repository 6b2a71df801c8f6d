"""report.html in a real browser (headless Debian chromium, RECIPES.md): no JS errors, plots drawn.

The documents are built from the real metric functions on generated data, so every kind of
figure the step can emit (PR and F1 curves, overlays, confusion matrix) is exercised.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kubeforge.evaluation.classification import classification_metrics
from kubeforge.evaluation.detection import ImageDetections, ImageTruth, detection_metrics
from kubeforge.evaluation.report import render_report
from kubeforge.evaluation.report_images import classification_sample, detection_sample

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# `make test` installs chromium, so in CI (CI=true) a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian chromium is not installed (apt-get install -y chromium; `make test` does it)",
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000"]
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


def _load(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console messages) for a local page."""
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, CONSOLE.findall(proc.stderr)


def _model_entry(task: str, metrics: dict, name: str) -> dict:
    return {"trainingJob": name, "task": task, "framework": "torchvision", "architecture": "net",
            "metrics": metrics, "timings": {"msPerImage": 3.2, "imagesPerSecond": 310.0},
            "imageCount": 5, "split": "val", "evaluatedClasses": ["cat", "dog"], "headline": {}}


def _doc(task: str, models: dict[str, dict]) -> dict:
    return {"benchmark": {"namespace": "default", "name": "demo"}, "onnxruntimeVersion": "1.x",
            "dataset": {"dataset": "pets", "digest": "ab" * 32, "task": task, "split": "val"},
            "modelOrder": list(models), "models": models, "comparison": {"sameImages": True}}


def _detection_doc() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    from PIL import Image

    models, samples = {}, {}
    truths = [ImageTruth(width=100, height=80, boxes=[[10, 10, 40, 40], [50, 20, 90, 70]], labels=[0, 1])
              for _ in range(5)]
    for name, noise in (("sharp", 1.0), ("blurry", 6.0)):
        dets = [ImageDetections(t.boxes + rng.normal(0, noise, (2, 4)), rng.random(2), t.labels) for t in truths]
        metrics = detection_metrics(truths, dets, ["cat", "dog"], iou_threshold=0.5)
        models[name] = _model_entry("object-detection", metrics, name)
        img = Image.new("RGB", (100, 80), (90, 90, 90))
        samples[name] = [detection_sample("a.png", img, truths[0], dets[0], ["cat", "dog"], metrics["threshold"])]
    return _doc("object-detection", models), samples


def _classification_doc() -> tuple[dict, dict]:
    from PIL import Image

    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 50)
    y_pred = np.where(rng.random(50) < 0.8, y_true, rng.integers(0, 3, 50))
    metrics = classification_metrics(y_true, y_pred, ["cat", "dog", "<bird>"])
    sample = classification_sample("b.png", Image.new("RGB", (64, 64), (200, 10, 10)), "cat", "dog", 0.7)
    return _doc("classification", {"clf": _model_entry("classification", metrics, "clf")}), {"clf": [sample]}


@pytest.mark.parametrize(("build", "figures"), [(_detection_doc, 7), (_classification_doc, 1)])
def test_report_renders_without_js_errors(build, figures: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc, samples = build()
    page = tmp_path / "report.html"
    page.write_text(render_report(doc, samples))
    dom, console = _load(page, tmp_path)
    assert not [m for m in console if "rror" in m or "Uncaught" in m], console
    # plotly marks a div it has drawn with js-plotly-plot and gives it an SVG plot area.
    drawn = re.findall(r'<div id="kf-fig-\d+" class="[^"]*js-plotly-plot', dom)
    assert len(drawn) == figures
    assert dom.count('class="main-svg"') >= 2 * figures
    if doc["dataset"]["task"] == "object-detection":
        assert dom.count('class="js-line"') >= 6  # each curve trace drew a line path
    else:
        assert 'class="hm"' in dom  # the heatmap layer of the confusion matrix
        assert "&lt;bird&gt;" in dom


def test_the_console_check_catches_a_script_error(tmp_path: Path) -> None:
    # Guards the guard: a page that throws must show up in what the test above inspects.
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefinedAnywhere();</script></body></html>")
    _, console = _load(page, tmp_path)
    assert any("Uncaught ReferenceError" in m for m in console), console


def _v2_samples(doc: dict) -> dict:
    """A picture in every gallery: best, worst and sample images per model, disagreements in the comparison."""
    import base64
    import io

    from PIL import Image

    from kubeforge.evaluation.report_images import Sample

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (120, 40, 40)).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    samples = {m: [Sample(f"{g}<1>.png", png, f"{g} image <i>x</i>", group=g) for g in ("best", "worst", "sample")]
               for m in doc["modelOrder"]}
    samples["__comparison__"] = [Sample("d.png", png, "disagree <script>", group="disagree")]
    return samples


def _check_every_chart_drawn(html: str, dom: str, console: list[str]) -> None:
    assert not [m for m in console if "rror" in m or "Uncaught" in m], console
    ids = re.findall(r'<div id="(kf-fig-\d+)"', html)
    assert ids and len(ids) == len(set(ids))
    drawn = re.findall(r'<div id="(kf-fig-\d+)" class="[^"]*js-plotly-plot', dom)
    assert drawn == ids  # every chart div became a plotly plot
    # ... and each holds a drawn SVG (the text between its start and the next chart's).
    starts = [dom.index(f'<div id="{i}"') for i in ids] + [len(dom)]
    for n, fig_id in enumerate(ids):
        assert 'class="main-svg"' in dom[starts[n]: starts[n + 1]], fig_id


@pytest.mark.parametrize("task", ["object-detection", "instance-segmentation", "classification",
                                  "semantic-segmentation"])
def test_a_full_v2_report_with_a_comparison_draws_every_chart(task: str, tmp_path: Path) -> None:
    from kubeforge.testing.metrics_docs import v2_doc

    doc = v2_doc(task, ("model-a", "model <b>"), class_sets_differ=True)
    html = render_report(doc, _v2_samples(doc))
    page = tmp_path / "report.html"
    page.write_text(html)
    dom, console = _load(page, tmp_path)
    _check_every_chart_drawn(html, dom, console)
    # The sections of the v2 keys are there, user strings escaped.
    for text in ("Differences", "significant", "Speed, side by side", "compared on the 2 classes they share",
                 "Best images", "Worst images", "Images where the models disagree", "Calibration" if task in (
                     "object-detection", "instance-segmentation", "classification") else "boundary IoU",
                 "[0.", "model &lt;b&gt;", "disagree &lt;script&gt;", "is not ready"):
        assert text in html, text
    # The only scripts in the body are the charts' (no user string opened one).
    body = html.split("</head>", 1)[1]
    assert body.count("<script") == len(re.findall(r'<div id="kf-fig-\d+"', html))
    assert "model <b>" not in html and "<i>x</i>" not in html
    if task in ("object-detection", "instance-segmentation"):
        assert "Results by object size" in html and "Most confused pairs" in html and "background" in html


def test_a_single_model_v2_report_draws_every_chart(tmp_path: Path) -> None:
    from kubeforge.testing.metrics_docs import v2_doc

    doc = v2_doc("object-detection", ("solo",))
    html = render_report(doc, _v2_samples(doc))
    page = tmp_path / "report.html"
    page.write_text(html)
    dom, console = _load(page, tmp_path)
    _check_every_chart_drawn(html, dom, console)
    assert "Comparison" not in html and "Reliability" in html and "Throughput" in html
