"""Custom models (`framework: custom`): the API fields, the function-style SDK and the train step.

The trainers here are real packages written into a temporary folder (their models.yaml and
hyperparameters.yaml beside the module) and the shipped example imported from
examples/custom-model; the train step runs in-process against a local store.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError

from kubeforge.api.training_job import TrainingJobSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import classification_version, shapes_version
from kubeforge_trainers.custom import load_custom_trainer, merge

pytestmark = pytest.mark.usefixtures("step_cache")
torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom-model"

# A trainer whose result is steered by its `mode` hyperparameter, to test what Kubeforge accepts.
PROBE = '''
import json
from pathlib import Path

import torch
from torch import nn


def train(data, hyperparameters, log, model, output_dir):
    mode = hyperparameters["mode"]
    (output_dir / "seen.json").write_text(json.dumps({
        "format": data.format, "classes": data.classes, "hyperparameters": hyperparameters,
        "train": sorted(str(p.relative_to(data.train)) for p in data.train.rglob("*") if p.is_file()),
        "val_images": [i.file_name for i in data.val_manifest.images],
        "categories": [[c.id, c.name] for c in data.train_manifest.categories],
        "labels": sorted({i.category_id for i in data.train_manifest.images}),
        "size": model.image_size, "name": model.name,
    }))
    log.metrics(1, {"val_accuracy": 0.5})
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, len(data.classes)))
    torch.save({"model": net.state_dict()}, output_dir / "best.pt")
    if mode == "pickled-checkpoint":
        torch.save({"model": net}, output_dir / "best.pt")
    size = model.image_size if mode != "wrong-size" else model.image_size + 8
    torch.onnx.export(net, (torch.rand(1, 3, size, size),), str(output_dir / "model.onnx"),
                      input_names=["images"], output_names=["scores" if mode == "wrong-output" else "logits"],
                      dynamic_axes={"images": {0: "b"}}, opset_version=17, dynamo=False)
    result = {"onnx": "model.onnx", "checkpoint": "best.pt", "metrics": {"val_accuracy": 0.5},
              "bestMetric": {"name": "val_accuracy", "value": 0.5, "epoch": 1}, "files": {"seen.json": "seen.json"}}
    if mode == "no-checkpoint":
        del result["checkpoint"]
    if mode == "missing-file":
        result["onnx"] = "nowhere.onnx"
    if mode == "overwrite":
        result["files"] = {"run_spec.json": "seen.json"}
    if mode == "bad-best":
        result["bestMetric"] = {"name": "val_accuracy"}
    return result
'''


# A detector that finds the same two boxes everywhere: enough to check formats and the detection contract.
DETECTOR = '''
import json

import torch
from torch import nn


class Fixed(nn.Module):
    def forward(self, images):
        zero = images.mean() * 0
        boxes = torch.tensor([[1.0, 2.0, 20.0, 30.0], [5.0, 5.0, 40.0, 40.0]]) + zero
        return boxes, torch.tensor([0.9, 0.4]) + zero, torch.tensor([1, 0], dtype=torch.int64)


def train(data, hyperparameters, log, model, output_dir):
    files = sorted(str(p.relative_to(data.train)) for p in data.train.rglob("*") if p.is_file())
    texts = {f: (data.train / f).read_text() for f in files if f.endswith((".json", ".yaml", ".txt", ".xml"))}
    (output_dir / "seen.json").write_text(json.dumps({"files": files, "texts": texts, "classes": data.classes}))
    torch.save({"model": {}}, output_dir / "best.pt")
    size = model.image_size
    torch.onnx.export(Fixed(), (torch.rand(1, 3, size, size),), str(output_dir / "model.onnx"),
                      input_names=["images"], output_names=["boxes", "scores", "labels"], opset_version=17,
                      dynamo=False)
    log.metrics(1, {"val_AP": 0.1})
    return {"onnx": "model.onnx", "checkpoint": "best.pt", "metrics": {"val_AP": 0.1},
            "bestMetric": {"name": "val_AP", "value": 0.1, "epoch": 1}, "files": {"seen.json": "seen.json"}}
'''


def write_probe(root: Path, package: str, data_format: str, defaults: dict[str, Any] | None = None,
                task: str = "classification", source: str = PROBE) -> None:
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "trainer.py").write_text(textwrap.dedent(source))
    (pkg / "models.yaml").write_text(yaml.safe_dump({
        "dataFormat": data_format,
        "models": [{"name": "probe", "task": task, "imageSize": 64}],
    }))
    defaults = defaults or {"mode": "ok", "optimizer": {"lr": 0.1, "betas": [1, 2]}}
    (pkg / "hyperparameters.yaml").write_text(yaml.safe_dump(defaults))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("custom") / "store")


@pytest.fixture(scope="module")
def dataset(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    # Category ids 11, 12, 13: the prepared data must renumber them to class indices.
    return classification_version(store, tmp_path_factory.mktemp("cls"), n_per_class=8, size=48, seed=5,
                                  first_category_id=11)


@pytest.fixture(scope="module")
def detection(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> DatasetRef:
    return shapes_version(store, tmp_path_factory.mktemp("det"), n_images=10, size=64, seed=2, dataset="shapes-det")


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probes")
    for fmt in ("coco", "imagefolder", "manifest"):
        write_probe(root, f"probe_{fmt}", fmt)
    for fmt in ("coco", "yolo", "voc"):
        write_probe(root, f"detector_{fmt}", fmt, task="object-detection", source=DETECTOR)
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))


def run_spec(store: LocalStore, ref: DatasetRef, name: str, model: dict[str, Any], **job: Any) -> TrainRun:
    spec = {"datasetVersion": "v1", "task": "classification", "split": {"trainPercent": 60, "seed": 3},
            "model": {"framework": "custom", "image": "registry.example/probe:1", **model}, **job}
    return TrainRun.model_validate({
        "store": store.uri, "namespace": "default", "name": name, "spec": spec, "dataset": ref.model_dump(),
        "experiment_prefix": layout.experiment_prefix("default", ref.dataset, name, "custom"),
    })


# --- the API ---------------------------------------------------------------------------------


def spec(model: dict[str, Any]) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"datasetVersion": "v1", "task": "classification", "model": model})


@pytest.mark.parametrize(("model", "expected"), [
    ({"framework": "custom", "name": "tinycnn", "entrypoint": "tinycnn"}, "spec.model.image: required"),
    ({"framework": "custom", "name": "tinycnn", "image": "img:1"}, "spec.model.entrypoint: required"),
    ({"framework": "torchvision", "name": "resnet18", "image": "img:1"}, "spec.model.image: only for framework custom"),
    ({"name": "resnet18", "parameters": {"lr": 1}}, "spec.model.parameters: only for framework custom"),
    ({"framework": "custom", "name": "t", "image": "i:1", "entrypoint": "a b"}, "entrypoint"),
])
def test_custom_fields_are_checked_and_named(model: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        spec(model)


def test_custom_model_keeps_free_form_parameters() -> None:
    s = spec({"framework": "custom", "name": "tinycnn", "image": "img:1", "entrypoint": "pkg.mod:train",
              "parameters": {"lr": 0.1, "schedule": {"steps": [1, 2]}, "snake_case": True}})
    # Users' keys are theirs: no camelCase conversion, nesting kept.
    assert s.model.dump()["parameters"] == {"lr": 0.1, "schedule": {"steps": [1, 2]}, "snake_case": True}


def test_merge_is_deep() -> None:
    assert merge({"a": 1, "opt": {"lr": 1, "b": 2}}, {"opt": {"lr": 3}, "c": 4}) == {"a": 1, "opt": {"lr": 3, "b": 2},
                                                                                   "c": 4}


# --- loading a trainer -----------------------------------------------------------------------


def test_entrypoint_errors_name_the_field(probes: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"spec\.model\.entrypoint: no trainer 'nope' in the 'kubeforge\.trainers'"):
        load_custom_trainer("nope")
    with pytest.raises(ValueError, match=r"spec.model.entrypoint: cannot import 'no_such_pkg.mod' \(No module named"):
        load_custom_trainer("no_such_pkg.mod:train")
    with pytest.raises(ValueError, match=r"module 'probe_coco\.trainer' has no 'fit'"):
        load_custom_trainer("probe_coco.trainer:fit")
    bare = tmp_path / "bare_trainer"
    bare.mkdir()
    (bare / "__init__.py").write_text("def train(**kw):\n    return {}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ValueError, match=r"has no models.yaml: expected .*bare_trainer/models.yaml"):
            load_custom_trainer("bare_trainer:train")
        (bare / "models.yaml").write_text("dataFormat: png\nmodels: []\n")
        with pytest.raises(ValueError, match=r"models.yaml: not a valid models.yaml: dataFormat: .*models: "):
            load_custom_trainer("bare_trainer:train")
    finally:
        sys.path.remove(str(tmp_path))


def test_entry_point_group_finds_an_installed_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What `pip install` writes for the example's [project.entry-points."kubeforge.trainers"].
    dist = tmp_path / "kubeforge_tinycnn-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kubeforge-tinycnn\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[kubeforge.trainers]\ntinycnn = kubeforge_tinycnn.trainer:train\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    trainer = load_custom_trainer("tinycnn")
    assert trainer.models == {"tinycnn": "classification", "tinycnn-wide": "classification"}
    with pytest.raises(ValueError, match=r"spec.model.name: tinycnn has no model 'resnet18' for classification; "
                                         r"it has \['tinycnn', 'tinycnn-wide'\]"):
        trainer.check_model("resnet18", "classification")
    with pytest.raises(ValueError, match=r"'tinycnn' is a classification model but spec\.task is object-detection"):
        trainer.check_model("tinycnn", "object-detection")


# --- the train step --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["imagefolder", "manifest"])
def test_data_arrive_in_the_asked_format_with_class_indices(store: LocalStore, dataset: DatasetRef, probes: Path,
                                                            fmt: str) -> None:
    spec_ = run_spec(store, dataset, f"probe-{fmt}", {"name": "probe", "entrypoint": f"probe_{fmt}.trainer:train",
                                                     "parameters": {"optimizer": {"lr": 0.5}}},
                     classes=["triangle", "circle"])
    status = train.run(spec_)
    prefix = spec_.experiment_prefix
    seen = store.get_json(f"{prefix}/seen.json")
    assert seen["format"] == fmt and seen["classes"] == ["triangle", "circle"]
    # Class i is category id i everywhere, in the order spec.classes gives.
    assert seen["categories"] == [[0, "triangle"], [1, "circle"]] and seen["labels"] == [0, 1]
    assert not any("square" in f for f in seen["train"])
    if fmt == "imagefolder":
        assert {f.split("/")[0] for f in seen["train"]} == {"triangle", "circle"}
    if fmt == "manifest":
        assert "manifest.json" in seen["train"]
    split = store.get_json(f"{prefix}/{layout.TRAIN_VAL_SPLIT}")
    assert set(seen["val_images"]) <= set(split["val"])
    # Defaults merged under spec.model.parameters, recorded where every run records them.
    want = {"mode": "ok", "optimizer": {"lr": 0.5, "betas": [1, 2]}}
    assert seen["hyperparameters"] == want
    assert yaml.safe_load(store.get_bytes(f"{prefix}/{layout.HYPERPARAMETERS}")) == want
    assert store.get_json(f"{prefix}/{layout.RUN_SPEC}")["hyperparameters"] == want
    assert seen["size"] == 64 and seen["name"] == "probe"
    assert status["bestMetric"] == {"name": "val_accuracy", "value": 0.5, "epoch": 1}
    assert status["progress"]["epoch"] == 1


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_a_detector_gets_objects_with_class_indices_and_meets_the_contract(store: LocalStore, detection: DatasetRef,
                                                                           probes: Path, fmt: str) -> None:
    spec_ = run_spec(store, detection, f"det-{fmt}", {"name": "probe", "entrypoint": f"detector_{fmt}.trainer:train"},
                     task="object-detection", classes=["triangle", "circle"])
    train.run(spec_)
    prefix = spec_.experiment_prefix
    seen = store.get_json(f"{prefix}/seen.json")
    assert seen["classes"] == ["triangle", "circle"]
    texts = seen["texts"]
    if fmt == "coco":
        (coco_text,) = [t for f, t in texts.items() if f.endswith(".json") and not f.startswith(".")]
        coco = json.loads(coco_text)
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [(0, "triangle"), (1, "circle")]
        assert coco["annotations"] and {a["category_id"] for a in coco["annotations"]} <= {0, 1}
    if fmt == "yolo":
        (data_yaml,) = [t for f, t in texts.items() if f.endswith(".yaml")]
        assert yaml.safe_load(data_yaml)["names"] == ["triangle", "circle"]
        rows = [line for f, t in texts.items() if f.endswith(".txt") and "labels/" in f for line in t.splitlines()]
        assert rows and {int(r.split()[0]) for r in rows} <= {0, 1}
    if fmt == "voc":
        xml = [t for f, t in texts.items() if f.endswith(".xml")]
        assert xml and not any("<name>square</name>" in t for t in xml)
        assert any("<name>triangle</name>" in t or "<name>circle</name>" in t for t in xml)
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    assert meta.task == "object-detection" and meta.input.shape == [1, 3, 64, 64] and not meta.input.dynamic_batch
    assert [o.name for o in meta.outputs] == ["boxes", "scores", "labels"]


def test_a_format_that_cannot_hold_the_task_is_named(store: LocalStore, dataset: DatasetRef, probes: Path) -> None:
    spec_ = run_spec(store, dataset, "probe-coco", {"name": "probe", "entrypoint": "probe_coco.trainer:train"})
    with pytest.raises(ValueError, match=r"probe_coco/models.yaml: dataFormat coco cannot hold this classification "
                                         r"dataset: format coco holds objects"):
        train.run(spec_)


def test_custom_run_lands_in_the_standard_layout(store: LocalStore, dataset: DatasetRef, probes: Path) -> None:
    spec_ = run_spec(store, dataset, "probe-layout", {"name": "probe", "entrypoint": "probe_imagefolder.trainer:train",
                                                      "imageSize": 72})
    status = train.run(spec_)
    prefix = spec_.experiment_prefix
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["status"] == "Succeeded" and info["result"] == status and info["epochsRun"] == 1
    for rel in (layout.CHECKPOINT_BEST, layout.ONNX_EXPORT, layout.MODEL_META, layout.HYPERPARAMETERS,
                layout.TRAIN_VAL_SPLIT, layout.RUN_SPEC, layout.PROGRESS, layout.METRICS_LOG, "seen.json"):
        assert rel in info["artifacts"] and store.exists(f"{prefix}/{rel}"), rel
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    assert (meta.framework, meta.architecture, meta.task) == ("custom", "probe", "classification")
    assert meta.classes == ["circle", "square", "triangle"]
    assert (meta.input.name, meta.input.height, meta.input.dynamic_batch) == ("images", 72, True)
    assert [o.name for o in meta.outputs] == ["logits"] and meta.onnx_opset == 17
    assert status["onnxUri"].endswith(layout.ONNX_EXPORT) and "onnxParityMaxAbsDiff" not in status
    assert json.loads(store.get_bytes(f"{prefix}/{layout.PROGRESS}"))["phase"] == "Succeeded"
    # The same run spec again is the recorded run.
    assert train.run(spec_) == status


@pytest.mark.parametrize(("mode", "expected"), [
    ("no-checkpoint", r"train\(\) returned an invalid result: checkpoint: Field required"),
    ("bad-best", r"train\(\) returned an invalid result: bestMetric.value: Field required; bestMetric.epoch"),
    ("missing-file", r"train\(\) returned onnx 'nowhere.onnx', but there is no such file"),
    ("pickled-checkpoint", r"checkpoint .*best.pt: torch.load\(..., weights_only=True\) cannot read it"),
    ("overwrite", r"returned files\['run_spec.json'\]: expected a path inside the experiment that is none of"),
    ("wrong-size", r"input 'images' has shape \[-1, 3, 72, 72\]; expected \[B, 3, 64, 64\]"),
    ("wrong-output", r"does not meet the classification contract .*needs outputs \['logits'\]; missing \['logits'\]"),
])
def test_a_bad_result_is_refused_naming_what_is_wrong(store: LocalStore, dataset: DatasetRef, probes: Path,
                                                      mode: str, expected: str) -> None:
    spec_ = run_spec(store, dataset, f"bad-{mode}", {"name": "probe", "entrypoint": "probe_imagefolder.trainer:train",
                                                     "parameters": {"mode": mode}})
    with pytest.raises(ValueError, match=expected):
        train.run(spec_)
    assert not store.exists(f"{spec_.experiment_prefix}/{layout.EXPERIMENT_INFO}")


def test_the_example_trains_and_fine_tunes(store: LocalStore, dataset: DatasetRef,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    model = {"name": "tinycnn", "entrypoint": "kubeforge_tinycnn.trainer:train", "parameters": {"epochs": 3}}
    first = run_spec(store, dataset, "tinycnn", model)
    status = train.run(first)
    assert status["progress"] == {"epoch": 3, "epochs": 3, "metrics": status["metrics"]}
    assert 0 <= status["bestMetric"]["value"] <= 1 and status["bestMetric"]["name"] == "val_accuracy"
    history = [json.loads(line) for line in
               store.get_bytes(f"{first.experiment_prefix}/{layout.METRICS_LOG}").decode().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3] and all("train_loss" in r["metrics"] for r in history)
    # Another run starts from this one's checkpoint: it loads with weights_only=True.
    tuned = run_spec(store, dataset, "tinycnn-tuned", {**model, "parameters": {"epochs": 1}})
    tuned = tuned.model_copy(update={"init_checkpoint": f"{first.experiment_prefix}/{layout.CHECKPOINT_BEST}"})
    assert train.run(tuned)["progress"]["epoch"] == 1


def test_an_entrypoint_may_name_an_sdk_trainer_class_but_not_a_module(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "class_trainer.py").write_text(textwrap.dedent('''
        import yaml

        from kubeforge_trainers.sdk import Trainer


        class Lab(Trainer):
            name = "lab"
            models = {"labnet": "object-detection"}

            def train(self, ctx):
                raise NotImplementedError
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = load_custom_trainer("class_trainer:Lab")
    assert type(trainer).__name__ == "Lab" and trainer.models == {"labnet": "object-detection"}
    with pytest.raises(ValueError, match=r"module 'class_trainer' has no 'Nope'"):
        load_custom_trainer("class_trainer:Nope")
    with pytest.raises(ValueError, match=r"spec\.model\.entrypoint: 'class_trainer:yaml' is a module; expected a "
                                         r"train function or a kubeforge_trainers\.sdk\.Trainer class"):
        load_custom_trainer("class_trainer:yaml")
