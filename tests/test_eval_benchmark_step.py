"""The benchmark step end to end: `kubeforge step benchmark` as a subprocess on a store built here.

The ONNX models are real exports from torch whose answers are known in advance: a colour
classifier (1x1 conv + global average pool: logits = mean R, G, B) and detectors that
return fixed boxes, so AP, the operating point and the confusion matrix are exact.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.evaluation import metrics_schema
from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec
from kubeforge.steps.spec import BenchmarkModel, BenchmarkRun, DatasetRef
from kubeforge.store import LocalStore, layout

NS = "team-a"
KUBEFORGE = Path(sys.executable).parent / "kubeforge"
# The TorchScript exporter (dynamo=False, as RECIPES.md recommends) warns that it is legacy.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

# Detection scene, image pixels (images are 128x96; the model input is 64x64: sx=2, sy=1.5).
CIRCLE, SQUARE, EXTRA_SQUARE, TRIANGLE = (16, 12, 48, 36), (72, 54, 112, 84), (50, 8, 70, 28), (10, 60, 30, 90)


def _png(draw_fn, size=(128, 96), background=(0, 0, 0)) -> bytes:  # type: ignore[no-untyped-def]
    img = Image.new("RGB", size, background)
    draw_fn(ImageDraw.Draw(img))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image(store: LocalStore, name: str, data: bytes, category_id: int | None = None) -> ManifestImage:
    img = Image.open(io.BytesIO(data))
    return ManifestImage(file_name=name, blob=store.put_blob(data), width=img.width, height=img.height,
                         bytes=len(data), category_id=category_id)


def _put_manifest(store: LocalStore, manifest: Manifest) -> DatasetRef:
    digest = manifest.digest()
    store.put_bytes(layout.dataset_manifest_key(manifest.dataset, digest), manifest.to_bytes())
    return DatasetRef(dataset=manifest.dataset, digest=digest)


def _export(module, example, path: Path, outputs: list[str], dynamic: dict | None = None) -> None:  # type: ignore[no-untyped-def]
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module.eval(), (example,), str(path), input_names=["images"], output_names=outputs,
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)


def _put_experiment(store: LocalStore, prefix: str, onnx: Path, meta: ModelMeta, split: dict) -> None:
    store.put_file(f"{prefix}/{layout.ONNX_EXPORT}", onnx)
    store.put_bytes(f"{prefix}/{layout.MODEL_META}", meta.model_dump_json(indent=2).encode())
    store.put_json(f"{prefix}/{layout.TRAIN_VAL_SPLIT}", split)


@dataclass
class World:
    store: LocalStore
    colors: DatasetRef
    shapes: DatasetRef
    prefixes: dict[str, str]


def _classification(store: LocalStore, tmp: Path, prefixes: dict[str, str]) -> DatasetRef:
    import torch
    from torch import nn

    def disc(color):  # type: ignore[no-untyped-def]
        return _png(lambda d: d.ellipse((4, 4, 36, 26), fill=color), size=(40, 30))

    red, green, blue, purple = (220, 30, 30), (30, 200, 30), (30, 30, 220), (150, 0, 150)
    cats = [Category(id=1, name="blue"), Category(id=2, name="green"), Category(id=3, name="red"),
            Category(id=4, name="purple"), Category(id=5, name="a<b>&c")]
    images = [
        _image(store, "r0.png", disc(red), 3), _image(store, "r1.png", _png(lambda d: d.rectangle((2, 2, 30, 20),
               fill=red), size=(40, 30)), 3),
        _image(store, "g0.png", disc(green), 2), _image(store, "g1.png", _png(lambda d: d.rectangle(
               (5, 5, 35, 25), fill=green), size=(40, 30)), 2),
        _image(store, "b0.png", disc(blue), 1),
        _image(store, "x0.png", _png(lambda d: d.rectangle((0, 0, 39, 29), fill=red), size=(40, 30)), 2),  # mislabeled
        _image(store, "p0.png", disc(purple), 4),  # a class the model does not know: skipped
        _image(store, "t0.png", disc(blue), 3),  # train split only: would be an error if evaluated
    ]
    ref = _put_manifest(store, Manifest(dataset="colors", task="classification", categories=cats, images=images))

    class ColorNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Conv2d(3, 3, 1, bias=False)
            with torch.no_grad():
                self.mix.weight.copy_(torch.eye(3)[[0, 1, 2]].reshape(3, 3, 1, 1))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.mix(x).mean(dim=(2, 3))

    onnx = tmp / "color.onnx"
    _export(ColorNet(), torch.rand(2, 3, 32, 32), onnx, ["logits"], {"images": {0: "batch"}, "logits": {0: "batch"}})
    meta = ModelMeta(
        task="classification", framework="torch", architecture="colornet", classes=["red", "green", "blue"],
        input=InputSpec(name="images", dtype="float32", shape=[-1, 3, 32, 32], height=32, width=32,
                        dynamic_batch=True),
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 3])],
    )
    prefix = layout.experiment_prefix(NS, "colors", "color-clf", "torch")
    val = ["b0.png", "g0.png", "g1.png", "p0.png", "r0.png", "r1.png", "x0.png", "gone.png"]
    _put_experiment(store, prefix, onnx, meta, {"train": ["t0.png"], "val": val, "seed": 1, "trainPercent": 20})
    prefixes["color-clf"] = prefix
    return ref


def _detection(store: LocalStore, tmp: Path, prefixes: dict[str, str]) -> DatasetRef:
    import torch
    from torch import nn

    def scene(extra_square: bool, triangle: bool):  # type: ignore[no-untyped-def]
        def draw(d: ImageDraw.ImageDraw) -> None:
            d.ellipse(CIRCLE, fill=(240, 200, 0))
            d.rectangle(SQUARE, fill=(0, 160, 240))
            if extra_square:
                d.rectangle(EXTRA_SQUARE, fill=(0, 160, 240))
            if triangle:
                d.polygon([(10, 90), (30, 90), (20, 60)], fill=(200, 0, 200))
        return _png(draw, background=(40, 40, 40))

    cats = [Category(id=3, name="circle"), Category(id=5, name="triangle"), Category(id=7, name="square")]
    images, anns = [], []

    def box(i: int, cat: int, xyxy: tuple[int, ...]) -> None:
        x1, y1, x2, y2 = xyxy
        anns.append(ManifestAnnotation(image=i, category_id=cat, bbox=[x1, y1, x2 - x1, y2 - y1],
                                       area=(x2 - x1) * (y2 - y1)))

    for i in range(4):
        images.append(_image(store, f"v{i}.png", scene(i == 2, i == 3)))
        box(i, 3, CIRCLE)
        box(i, 7, SQUARE)
    box(2, 7, EXTRA_SQUARE)  # the one object no model finds
    box(3, 5, TRIANGLE)  # a class the models do not know: ignored
    images.append(_image(store, "t0.png", _png(lambda d: None)))  # train only: no objects at all
    ref = _put_manifest(store, Manifest(dataset="shapes", task="object-detection", categories=cats,
                                        images=images, annotations=anns))

    class Fixed(nn.Module):
        def __init__(self, rows: list[tuple[tuple[float, ...], float, int]]) -> None:
            super().__init__()
            self.register_buffer("boxes", torch.tensor([r[0] for r in rows], dtype=torch.float32))
            self.register_buffer("scores", torch.tensor([r[1] for r in rows], dtype=torch.float32))
            self.register_buffer("labels", torch.tensor([r[2] for r in rows], dtype=torch.int64))

        def forward(self, x):  # type: ignore[no-untyped-def]
            zero = x.mean() * 0  # ties the outputs to the input so the graph has a real input
            return self.boxes + zero, self.scores + zero, self.labels + zero.long()

    # Input pixels (64x64). Classes: circle=0, hexagon=1 (not in the dataset), square=2.
    good = [((8, 8, 24, 24), 0.9, 0), ((36, 36, 56, 56), 0.8, 2), ((40, 4, 60, 20), 0.3, 0), ((4, 40, 20, 60), 0.95, 1)]
    weak = [((8, 8, 24, 24), 0.9, 0), ((40, 4, 60, 20), 0.6, 0)]
    for name, rows in (("det-good", good), ("det-weak", weak)):
        onnx = tmp / f"{name}.onnx"
        _export(Fixed(rows), torch.rand(1, 3, 64, 64), onnx, ["boxes", "scores", "labels"])
        meta = ModelMeta(
            task="object-detection", framework="torch", architecture=f"fixed-{name}",
            classes=["circle", "hexagon", "square"],
            input=InputSpec(name="images", dtype="float32", shape=[1, 3, 64, 64], height=64, width=64,
                            dynamic_batch=False),
            outputs=[TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                     TensorSpec(name="scores", dtype="float32", shape=[-1]),
                     TensorSpec(name="labels", dtype="int64", shape=[-1])],
        )
        prefix = layout.experiment_prefix(NS, "shapes", name, "torch")
        _put_experiment(store, prefix, onnx, meta, {"train": ["t0.png"], "val": [f"v{i}.png" for i in range(4)]})
        prefixes[name] = prefix
    return ref


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("bench")
    store = LocalStore(tmp / "store")
    prefixes: dict[str, str] = {}
    colors = _classification(store, tmp, prefixes)
    shapes = _detection(store, tmp, prefixes)
    return World(store=store, colors=colors, shapes=shapes, prefixes=prefixes)


def _run_spec(world: World, name: str, dataset: DatasetRef, jobs: list[str], split: str = "val",
              gate: list[dict] | None = None) -> BenchmarkRun:
    return BenchmarkRun.model_validate({
        "store": world.store.uri, "namespace": NS, "name": name,
        "spec": {"split": split, "models": [{"trainingJob": j} for j in jobs], "iouThreshold": 0.5,
                 "gate": gate or []},
        "dataset": dataset.model_dump(),
        "models": [BenchmarkModel(training_job=j, experiment_prefix=world.prefixes[j]).model_dump() for j in jobs],
        "output_prefix": layout.benchmark_prefix(NS, name),
    })


def _step(tmp_path: Path, run: BenchmarkRun) -> dict:
    spec, result = tmp_path / "run.json", tmp_path / "result.json"
    spec.write_text(run.model_dump_json())
    proc = subprocess.run([str(KUBEFORGE), "step", "benchmark", "--spec", str(spec), "--result", str(result)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def detection_run(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str]:
    """Two detectors compared on the val split: (status result, metrics.json, report.html)."""
    gate = [{"metric": "AP50", "min": 0.5}, {"metric": "f1", "betterThan": "det-weak", "significant": True}]
    result = _step(tmp_path_factory.mktemp("det"), _run_spec(world, "shapes-compare", world.shapes,
                                                                ["det-good", "det-weak"], gate=gate))
    prefix = layout.benchmark_prefix(NS, "shapes-compare")
    metrics = world.store.get_json(f"{prefix}/metrics.json")
    report = world.store.get_bytes(f"{prefix}/report.html").decode()
    return result, metrics, report


def test_detection_metrics_are_the_known_answer(detection_run: tuple[dict, dict, str]) -> None:
    result, doc, _ = detection_run
    good = doc["models"]["det-good"]
    m = good["metrics"]
    # circle: 4/4 found, all above the false positives -> AP 1; square: 4 of 5 found -> 81/101
    # of COCO's recall points have precision 1. Boxes are exact after scaling, so AP = AP50 = AP75.
    expected_ap = (1 + 81 / 101) / 2
    assert m["AP50"] == pytest.approx(expected_ap) and m["AP"] == pytest.approx(expected_ap)
    assert m["AP75"] == pytest.approx(expected_ap)
    assert [(r["class"], r["AP"]) for r in m["perClass"]] == [("circle", pytest.approx(1.0)),
                                                               ("square", pytest.approx(81 / 101))]
    # Best F1 at 0.8 (the 0.3 false positives excluded): 8 TP, 0 FP, 9 ground truths.
    assert m["threshold"] == pytest.approx(0.8)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1.0, 8 / 9, 16 / 17))
    assert m["numGroundTruth"] == 9  # the triangle is ignored, the train image is not evaluated
    assert m["detectionsOfClassesNotInDataset"] == 4  # one hexagon per image, dropped
    assert good["evaluatedClasses"] == ["circle", "square"]
    assert good["modelClassesNotInDataset"] == ["hexagon"] and good["datasetClassesNotInModel"] == ["triangle"]
    assert good["imageCount"] == 4 and good["timings"]["calls"] == 4  # detection: one image per call
    weak = doc["models"]["det-weak"]["metrics"]
    assert weak["AP50"] == pytest.approx(0.5)  # never finds a square
    assert (weak["threshold"], weak["f1"]) == pytest.approx((0.9, 8 / 13))
    assert doc["comparison"]["best"]["AP50"] == "det-good" and doc["comparison"]["sameImages"] is True
    assert doc["dataset"] == {"dataset": "shapes", "digest": doc["dataset"]["digest"],
                              "task": "object-detection", "split": "val"}
    assert doc["onnxruntimeVersion"]
    assert result["headline"] == "AP=0.901"  # the first headline metric: COCO AP
    assert result["metrics"]["det-weak"]["AP50"] == pytest.approx(0.5)
    assert result["metricsUri"].endswith("benchmarks/team-a_shapes-compare/metrics.json")


def test_detection_v2_keys(detection_run: tuple[dict, dict, str]) -> None:
    result, doc, _ = detection_run
    assert doc["formatVersion"] == 2 and doc["schema"].endswith("/v2.json")
    assert doc["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95}
    good = doc["models"]["det-good"]
    m = good["metrics"]
    # 8 TP; the extra square is missed: (square, background); nothing invented above the threshold 0.8.
    assert m["counts"] == {"tp": 8, "fp": 0, "fn": 1}
    assert m["confusion"] == {"labels": ["circle", "square", "background"], "matrix": [[4, 0, 0], [0, 4, 1], [0, 0, 0]]}
    assert m["confusedPairs"] == [] and m["matchedIoU"] == pytest.approx(1.0)
    assert m["bySize"]["small"]["numGroundTruth"] + m["bySize"]["medium"]["numGroundTruth"] == 9
    assert m["bySize"]["large"] == {"AP": None, "AR": None, "numGroundTruth": 0, "recall": None}
    cal = m["calibration"]
    assert len(cal["bins"]) == 10 and sum(b["count"] for b in cal["bins"]) == 12  # 3 per image, all kept
    # float32 scores: 0.3 lies just above 0.3 (bin 3, all wrong), 0.9 just below (bin 8, all right).
    assert cal["bins"][3]["accuracy"] == 0.0 and cal["bins"][8]["accuracy"] == 1.0
    curve = m["perClass"][0]["curve"]
    assert len(curve["recall"]) == 101 and curve["precision"][0] == pytest.approx(1.0)
    assert good["perImage"] == {"metric": "f1", "fileNames": ["v0.png", "v1.png", "v2.png", "v3.png"],
                                "values": [1.0, 1.0, pytest.approx(0.8), 1.0]}
    for name in ("det-good", "det-weak"):
        iv = doc["models"][name]["intervals"]
        assert {"precision", "recall", "f1"} <= set(iv)
        for k, bounds in iv.items():
            assert bounds["low"] <= doc["models"][name]["metrics"][k] <= bounds["high"]
            assert result["intervals"][name][k] == [pytest.approx(bounds["low"]), pytest.approx(bounds["high"])]
    comp = doc["comparison"]
    assert comp["sharedClasses"] == ["circle", "square"] and comp["classSetsDiffer"] is False
    (f1,) = comp["differences"]["f1"]
    assert (f1["a"], f1["b"], f1["paired"]) == ("det-good", "det-weak", True)
    assert f1["difference"] == pytest.approx(16 / 17 - 8 / 13) and f1["excludesZero"] is True
    assert f1["low"] <= f1["difference"] <= f1["high"]
    assert {"AP", "AP50", "precision", "recall"} <= set(comp["differences"])
    assert comp["disagreements"][-1] == {"fileName": "v2.png",
                                         "values": {"det-good": pytest.approx(0.8), "det-weak": pytest.approx(0.5)}}
    assert len(comp["disagreements"]) == 4


def test_the_real_document_follows_the_shipped_schema_and_carries_the_gate(
        detection_run: tuple[dict, dict, str]) -> None:
    result, doc, report = detection_run
    metrics_schema.validate(doc)  # the schema users validate against accepts what the step writes
    # det-good's F1 beats det-weak's with an interval of the difference above zero (asserted above).
    assert doc["gate"] == result["gate"] and doc["gate"]["passed"] is True
    assert doc["gate"]["winner"] == "det-good" and result["promoted"]["trainingJob"] == "det-good"
    assert {(c["model"], c["metric"], c["passed"]) for c in doc["gate"]["checks"]} == {
        ("det-good", "AP50", True), ("det-good", "f1", True)}
    assert "Promotion gate" in report and "Gate passed; winner: det-good" in report


def test_galleries_and_disagreement_samples(world: World) -> None:
    from kubeforge.steps import benchmark

    run = _run_spec(world, "shapes-galleries", world.shapes, ["det-good", "det-weak"])
    run.spec.bootstrap.resamples = 0
    captured: dict = {}

    def render(doc, samples, previews):  # type: ignore[no-untyped-def]
        captured.update(doc=doc, samples=samples)
        return ""

    original = benchmark.render_report
    benchmark.render_report = render
    try:
        result = benchmark.run(run)
    finally:
        benchmark.render_report = original
    doc, samples = captured["doc"], captured["samples"]
    assert "intervals" not in doc["models"]["det-good"] and result["intervals"] == {}
    assert doc["comparison"]["differences"]["f1"][0]["low"] is None
    groups = [s.group for s in samples["det-good"]]
    assert groups.count("sample") == 4 and groups.count("best") == 3 and groups.count("worst") == 1
    worst = [s for s in samples["det-good"] if s.group == "worst"]
    assert worst[0].file_name == "v2.png"  # the image with the missed square
    disagree = samples["__comparison__"]
    assert [s.group for s in disagree] == ["disagree"] * 8  # 4 images, once per model
    assert [s.file_name for s in disagree[-2:]] == ["v2.png", "v2.png"]
    assert disagree[-2].caption.startswith("det-good: ") and disagree[-1].caption.startswith("det-weak: ")


def test_detection_report_is_self_contained(detection_run: tuple[dict, dict, str]) -> None:
    from plotly.offline import get_plotlyjs

    _, _, report = detection_run
    assert 'src="http' not in report and "src='http" not in report and "<link" not in report
    assert report.count(get_plotlyjs()[:2000]) == 1  # the plotly bundle, inlined exactly once
    # comparison PR + F1 and two figures per model at least (the speed and v2 sections add more; every chart
    # is checked drawn in test_eval_report_browser)
    assert report.count('id="kf-fig-') >= 6
    # Four spread samples per model, plus the best/worst galleries and the disagreement images.
    assert report.count('<figure><img alt="v') >= 8
    assert "Comparison" in report and "0.901" in report and "0.941" in report  # AP50 and F1 of det-good


def test_classification_step(world: World, tmp_path: Path) -> None:
    result = _step(tmp_path, _run_spec(world, "colors-val", world.colors, ["color-clf"]))
    prefix = layout.benchmark_prefix(NS, "colors-val")
    doc = world.store.get_json(f"{prefix}/metrics.json")
    metrics_schema.validate(doc)  # what the step writes follows the shipped schema
    model = doc["models"]["color-clf"]
    m = model["metrics"]
    # 6 evaluated: purple is not a model class, gone.png is not in the dataset, t0 is train.
    assert (model["imageCount"], model["skippedImages"], model["splitFilesMissing"]) == (6, 1, 1)
    assert m["accuracy"] == pytest.approx(5 / 6)  # x0 is red but labelled green
    assert m["confusionMatrix"] == {"labels": ["red", "green", "blue"], "matrix": [[2, 0, 0], [1, 2, 0], [0, 0, 1]]}
    assert [r["support"] for r in m["perClass"]] == [2, 3, 1]
    assert m["perClass"][0]["precision"] == pytest.approx(2 / 3)
    assert model["timings"]["calls"] == 1  # six images in one batch: the batch axis is dynamic
    assert model["datasetClassesNotInModel"] == ["a<b>&c", "purple"]
    assert result["headline"] == "accuracy=0.833"
    assert result["metrics"]["color-clf"]["accuracy"] == pytest.approx(5 / 6)
    assert "comparison" not in doc
    assert m["topK"] == {"top1": pytest.approx(5 / 6)}  # three classes: no top-3
    assert m["rocAuc"] is not None and all(r["rocAuc"] is not None for r in m["perClass"])
    assert sum(b["count"] for b in m["calibration"]["bins"]) == 6
    per = model["perImage"]
    assert per["metric"] == "trueClassProbability" and len(per["values"]) == 6
    assert per["fileNames"][per["values"].index(min(per["values"]))] == "x0.png"  # red, labelled green
    assert set(model["intervals"]) == {"accuracy", "macroPrecision", "macroRecall", "macroF1", "weightedF1"}
    assert model["intervals"]["accuracy"]["low"] <= 5 / 6 <= model["intervals"]["accuracy"]["high"]
    report = world.store.get_bytes(f"{prefix}/report.html").decode()
    assert "a&lt;b&gt;&amp;c" in report and "a<b>&c" not in report  # class names are escaped
    assert report.count('id="kf-fig-') >= 1 and "0.833" in report


def test_errors_name_the_training_job_and_the_file(world: World) -> None:
    from kubeforge.steps import benchmark

    run = _run_spec(world, "broken", world.shapes, ["det-good"])
    run.models[0].experiment_prefix = layout.experiment_prefix(NS, "shapes", "ghost", "torch")
    run.models[0].training_job = "ghost"
    with pytest.raises(ValueError, match=r"TrainingJob team-a/ghost: .*ghost_torch/export/model.onnx not found"):
        benchmark.run(run)

    bad = "0" * 64  # manifest bytes filed under a digest that is not theirs
    world.store.put_bytes(layout.dataset_manifest_key("shapes", bad), b"{}")
    run = _run_spec(world, "broken", DatasetRef(dataset="shapes", digest=bad), ["det-good"])
    with pytest.raises(ValueError, match=f"sha256 is [0-9a-f]{{64}}, expected {bad}"):
        benchmark.run(run)

    run = _run_spec(world, "broken", world.shapes, ["color-clf"])
    with pytest.raises(ValueError, match="task is 'classification' but dataset 'shapes' is 'object-detection'"):
        benchmark.run(run)


def test_comparison_pairs_shared_classes_and_unpaired_images() -> None:
    import numpy as np

    from kubeforge.evaluation import bootstrap
    from kubeforge.evaluation.classification import weighted_headline
    from kubeforge.steps.benchmark import _comparison, _Evaluated

    rng = np.random.default_rng(0)

    def model(classes: list[str], n: int, skill: float, used: list[int]):  # type: ignore[no-untyped-def]
        k = len(classes)
        y = rng.integers(0, k, n)
        p = np.where(rng.random(n) < skill, y, rng.integers(0, k, n))

        def stats_for(w, subset):  # type: ignore[no-untyped-def]
            return weighted_headline(y, p, k, np.ones(n) if w is None else w, subset)

        ev = _Evaluated(metrics=stats_for(None, None), used=used, samples=[], per_image=list((y == p) * 1.0),
                        draw=lambda j: None, stats_for=stats_for,  # type: ignore[arg-type,return-value]
                        class_index={c: i for i, c in enumerate(classes)})
        ev.replicates = bootstrap.replicate(lambda w: stats_for(w, None), bootstrap.resample_weights(n, 200, 0))
        doc = {"task": "classification", "headline": {k2: round(v, 6) for k2, v in ev.metrics.items()},
               "evaluatedClasses": classes,
               "perImage": {"metric": "x", "fileNames": [f"{i}.png" for i in used], "values": ev.per_image}}
        return doc, ev

    plan = bootstrap.Plan(resamples=200, seed=0, confidence=0.9)
    a, ea = model(["x", "y", "z"], 60, 0.9, list(range(60)))
    b, eb = model(["z", "x"], 60, 0.5, list(range(60)))
    c, ec = model(["x", "y", "z"], 40, 0.5, list(range(40)))
    comp = _comparison({"a": a, "b": b}, {"a": ea.used, "b": eb.used}, ["a", "b"], {"a": ea, "b": eb}, plan)
    assert comp["classSetsDiffer"] is True and comp["sharedClasses"] == ["x", "z"]
    (row,) = comp["differences"]["accuracy"]
    want = ea.stats_for(None, [0, 2])["accuracy"] - eb.stats_for(None, [1, 0])["accuracy"]
    assert row["difference"] == pytest.approx(want) and row["paired"] is True
    assert row["low"] <= row["difference"] <= row["high"]
    # The comparison judges on the shared classes too: its points and best are those of the difference.
    assert comp["sharedMetrics"]["a"]["accuracy"] == pytest.approx(ea.stats_for(None, [0, 2])["accuracy"], abs=1e-6)
    assert comp["sharedMetrics"]["b"]["accuracy"] == pytest.approx(eb.stats_for(None, [1, 0])["accuracy"], abs=1e-6)
    assert comp["best"]["accuracy"] == ("a" if want > 0 else "b")
    comp = _comparison({"a": a, "c": c}, {"a": ea.used, "c": ec.used}, ["a", "c"], {"a": ea, "c": ec}, plan)
    assert comp["classSetsDiffer"] is False and comp["sameImages"] is False
    (row,) = comp["differences"]["macroF1"]
    assert row["paired"] is False and row["difference"] == pytest.approx(ea.metrics["macroF1"] - ec.metrics["macroF1"])
    # Disagreements: only images both evaluated (0..39), largest spread first, at most 8.
    assert len(comp["disagreements"]) == 8
    assert all(int(d["fileName"].split(".")[0]) < 40 for d in comp["disagreements"])
    assert all(abs(d["values"]["a"] - d["values"]["c"]) == 1.0 for d in comp["disagreements"])
    # A model compared with itself: a difference of exactly 0, [0, 0], not excluding zero.
    comp = _comparison({"a": a, "a2": a}, {"a": ea.used, "a2": ea.used}, ["a", "a2"], {"a": ea, "a2": ea}, plan)
    for rows in comp["differences"].values():
        assert rows[0]["difference"] == 0 and (rows[0]["low"], rows[0]["high"]) == (0, 0)
        assert rows[0]["excludesZero"] is False
    assert comp["disagreements"] == []
