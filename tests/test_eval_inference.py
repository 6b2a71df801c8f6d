"""ONNX Runtime inference against the model_meta.json contract, and ground-truth selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from kubeforge.datasets.manifest import Category, Manifest, ManifestImage
from kubeforge.evaluation.groundtruth import ClassMap, select_images
from kubeforge.evaluation.inference import OnnxModel
from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec


def _mean_colour_model(path: Path, output: str = "logits", batch: int | str = "batch") -> Path:
    """logits[b, c] = mean of channel c: a real graph whose answer is known (argmax = dominant colour)."""
    node = helper.make_node("ReduceMean", ["images"], [output], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        [node], "mean_colour",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _meta(dynamic: bool) -> ModelMeta:
    return ModelMeta(
        task="classification", framework="onnx", architecture="mean", classes=["red", "green", "blue"],
        input=InputSpec(name="images", dtype="float32", shape=[-1 if dynamic else 1, 3, 8, 8], height=8, width=8,
                        dynamic_batch=dynamic),
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 3])],
    )


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 200, 0), (10, 0, 250)]


@pytest.mark.parametrize(("dynamic", "calls"), [(True, 2), (False, 5)])
def test_classify_batches_when_the_batch_is_dynamic(tmp_path: Path, dynamic: bool, calls: int) -> None:
    model = OnnxModel.load(_mean_colour_model(tmp_path / "m.onnx", batch="batch" if dynamic else 1), _meta(dynamic))
    images = [Image.new("RGB", (20, 12), c) for c in COLOURS]
    logits = model.classify(images, batch_size=3)
    assert logits.argmax(axis=1).tolist() == [0, 1, 2, 1, 2]
    assert logits[0].tolist() == pytest.approx([1.0, 0.0, 0.0])  # RGB scaled to [0, 1]
    assert model.timings.calls == calls and model.timings.images == 5


def test_missing_output_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"needs outputs \['logits'\]; missing \['logits'\]"):
        OnnxModel.load(_mean_colour_model(tmp_path / "m.onnx", output="probs"), _meta(True))


def test_unreadable_export_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"model.onnx: ONNX Runtime cannot load the model"):
        OnnxModel.load(bad, _meta(True))


def _manifest() -> Manifest:
    images = [ManifestImage(file_name=f"{n}.png", blob="a" * 64, width=4, height=4, bytes=1, category_id=1)
              for n in ("a", "b", "c")]
    return Manifest(dataset="d", task="classification", images=images,
                    categories=[Category(id=1, name="cat"), Category(id=2, name="dog")])


def test_select_images_by_split_file_names() -> None:
    manifest = _manifest()
    doc = {"train": ["a.png"], "val": ["c.png", "b.png", "gone.png", "b.png"]}
    assert select_images(manifest, "val", doc, "x") == ([1, 2], ["gone.png"])
    assert select_images(manifest, "all", None, "x") == ([0, 1, 2], [])
    with pytest.raises(ValueError, match=r"split.json: needed for split 'train' but not found"):
        select_images(manifest, "train", None, "split.json")
    with pytest.raises(ValueError, match=r"split.json: expected key 'val' with a list"):
        select_images(manifest, "val", {"train": []}, "split.json")
    with pytest.raises(ValueError, match=r"none of the 1 'val' images is in dataset 'd'"):
        select_images(manifest, "val", {"val": ["zzz.png"]}, "split.json")


def test_classes_meet_by_name() -> None:
    classes = ClassMap.build(_manifest(), ["dog", "bird"], "meta")
    assert classes.category_to_model == {2: 0}
    assert (classes.not_in_dataset, classes.not_in_model) == (["bird"], ["cat"])
    with pytest.raises(ValueError, match=r"meta: none of the model's classes \['fish'\]"):
        ClassMap.build(_manifest(), ["fish"], "meta")
    assert np.array_equal(classes.evaluated(), [0])
