"""The model registry: every entry builds with the parameters it lists, manifests naming what it lacks
are refused when read (before anything runs), and `kubeforge models list` prints it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from kubeforge.api.registry import parse_resource
from kubeforge.models import catalog
from kubeforge_trainers.models import MODELS, PretrainedWeightsError, build_model

KUBEFORGE = Path(sys.executable).with_name("kubeforge")


@pytest.mark.parametrize("key", sorted(MODELS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_entry_builds_with_the_parameters_it_lists(key: tuple[str, str]) -> None:
    info = MODELS[key]
    # The meta device allocates nothing: building every architecture costs no memory or time.
    with torch.device("meta"):
        model = info.build(catalog.REFERENCE_CLASSES, info.default_image_size, False, info.entry.encoder)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(info.entry.params_m, abs=0.006), f"catalog says {info.entry.params_m}M"


@pytest.mark.parametrize(("name", "task", "shape"), [
    ("unet", "semantic-segmentation", (2, 3, 64, 64)),
    ("deeplabv3plus", "semantic-segmentation", (2, 3, 64, 64)),
    ("efficientnet_b0", "classification", (2, 3)),
])
def test_models_take_zero_to_one_input_and_give_the_task_outputs(name: str, task: str, shape: tuple[int, ...]) -> None:
    framework = catalog.default_framework(name, task)
    model = build_model(name, task, 3, 64, False, framework).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert tuple(out.shape) == (2, 3, *shape[2:])


def _job(model: dict[str, object], task: str = "object-detection") -> dict[str, object]:
    return {"apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t"},
            "spec": {"datasetVersion": "v1", "task": task, "model": model}}


def test_a_model_the_registry_lacks_is_refused_when_the_manifest_is_read() -> None:
    with pytest.raises(ValidationError) as err:
        parse_resource(_job({"name": "yolov8n"}))
    text = str(err.value)
    assert "spec.model.name: no torchvision model 'yolov8n' for object-detection" in text
    for name in ("ssdlite320_mobilenet_v3_large", "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2",
                 "fcos_resnet50_fpn"):
        assert name in text
    assert "resnet18" not in text  # only what exists for the task


@pytest.mark.parametrize(("model", "task", "expected"), [
    ({"name": "resnet18"}, "semantic-segmentation", "'resnet18' is a classification model, but spec.task is "
                                                    "semantic-segmentation"),
    ({"name": "unet11", "framework": "torchvision"}, "semantic-segmentation", "set spec.model.framework: smp"),
    ({"name": "unet11", "encoder": "resnet50"}, "semantic-segmentation", "spec.model.encoder: 'unet11' has a fixed"),
    ({"name": "fpn", "encoder": "resnet9"}, "semantic-segmentation", "spec.model.encoder: expected one of"),
    ({"name": "not_a_timm_model_xyz", "framework": "timm"}, "classification", "timm has no model"),
    ({"name": "resnet18", "framework": "timm"}, "object-detection", "is a classification model"),
    ({"name": "convnext_atto", "framework": "timm"}, "object-detection", "timm models are classifiers"),
    ({"name": "x", "framework": "keras"}, "classification", "spec.model.framework"),
])
def test_refusals_name_the_field(model: dict[str, object], task: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_resource(_job(model, task))


def test_a_bare_name_means_the_registry_framework() -> None:
    job = parse_resource(_job({"name": "unet11"}, "semantic-segmentation"))
    assert job.spec.model.framework == "smp"
    job = parse_resource(_job({"name": "resnet18"}, "classification"))
    assert job.spec.model.framework == "torchvision"
    # Any timm name timm knows, listed here or not.
    job = parse_resource(_job({"name": "convnext_atto", "framework": "timm"}, "classification"))
    assert job.spec.model.framework == "timm"


def test_exports_other_than_onnx_are_converted_from_it() -> None:
    with pytest.raises(ValidationError, match="add onnx to the list"):
        parse_resource({**_job({"name": "resnet18"}, "classification"),
                        "spec": {**_job({"name": "resnet18"}, "classification")["spec"],  # type: ignore[dict-item]
                                 "export": ["openvino"]}})


def test_pretrained_weights_that_cannot_be_had_say_both_ways_out() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"pretrained: false"):
        build_model("unet", "semantic-segmentation", 2, 64, True, "smp")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBEFORGE), "models", "list", *args], capture_output=True, text=True, timeout=60)


def test_models_list_prints_the_registry() -> None:
    proc = _cli("--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {(r["framework"], r["name"]) for r in rows} == set(MODELS)
    assert all({"name", "task", "framework", "parametersM", "defaultImageSize", "pretrainedWeights"} <= set(r)
               for r in rows)
    seg = json.loads(_cli("--task", "semantic-segmentation", "--json").stdout.strip().splitlines()[-1])
    assert {r["name"] for r in seg} == {"unet", "unet11", "unet16", "albunet", "linknet34", "deeplabv3plus", "fpn"}
    table = _cli("--task", "instance-segmentation").stdout
    assert "maskrcnn_resnet50_fpn_v2" in table and "45.9M" in table and "resnet18" not in table
    bad = _cli("--task", "painting")
    assert bad.returncode == 2 and "--task: expected one of" in bad.stderr
