"""Each classifier family of the registry trains an epoch through the train step, exports to ONNX and
OpenVINO IR with parity figures, and records why TensorRT was skipped (no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from kubeforge.models.meta import ModelMeta
from kubeforge.steps import train
from kubeforge.steps.spec import DatasetRef, TrainRun
from kubeforge.store import LocalStore, layout
from kubeforge.testing.shapes import classification_version
from kubeforge.testing.train_runs import train_run_spec

torch.set_num_threads(2)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("step_cache")]
SIZE = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, DatasetRef]:
    root = tmp_path_factory.mktemp("families")
    store = LocalStore(root / "store")
    return store, classification_version(store, root / "src", n_per_class=6, size=SIZE, seed=3, dataset="fam")


@pytest.mark.parametrize(("framework", "name"), [
    ("torchvision", "efficientnet_b0"), ("torchvision", "convnext_tiny"), ("torchvision", "mobilenet_v2"),
    ("timm", "mobilenetv3_small_050"),
])
def test_family_trains_and_exports(setup: tuple[LocalStore, DatasetRef], framework: str, name: str) -> None:
    store, ref = setup
    job = f"{framework}-{name}".replace("_", "-")
    spec = train_run_spec(store, ref, job, {
        "datasetVersion": "v", "task": "classification",
        "model": {"framework": framework, "name": name, "imageSize": SIZE},
        "export": ["onnx", "openvino", "tensorrt"],
        "hyperparameters": {"epochs": 1, "batchSize": 8, "scheduler": {"type": "none"}}})
    result = train.run(spec)
    prefix = spec.experiment_prefix
    meta = ModelMeta.model_validate_json(store.get_bytes(f"{prefix}/{layout.MODEL_META}"))
    assert (meta.framework, meta.architecture, meta.task) == (framework, name, "classification")
    exports = {e["format"]: e for e in result["exports"]}
    assert set(exports) == {"onnx", "openvino", "tensorrt"}
    assert exports["onnx"]["parityMaxAbsDiff"] < 1e-3
    assert exports["openvino"]["parityMaxAbsDiff"] < 1e-3
    from kubeforge_trainers.export_formats import tensorrt_unavailable

    if tensorrt_unavailable() is None:  # TensorRT and a GPU here: an engine was built
        assert "skipped" not in exports["tensorrt"] and exports["tensorrt"]["uri"].endswith(layout.TENSORRT_EXPORT)
    else:
        assert "GPU" in exports["tensorrt"]["skipped"] or "not installed" in exports["tensorrt"]["skipped"]
    info = store.get_json(f"{prefix}/{layout.EXPERIMENT_INFO}")
    assert info["exportParity"]["openvino"]["images"] > 0
    # The IR in the store runs and agrees with the ONNX export on new input.
    xml = Path(store.url(f"{prefix}/{layout.OPENVINO_EXPORT}"))
    assert xml.with_suffix(".bin").is_file()
    x = np.random.default_rng(0).random((3, 3, SIZE, SIZE), dtype=np.float32)
    compiled = ov.Core().compile_model(str(xml), "CPU")
    got = compiled(x)[compiled.output("logits")]
    import onnxruntime as ort

    session = ort.InferenceSession(store.url(f"{prefix}/{layout.ONNX_EXPORT}"), providers=["CPUExecutionProvider"])
    (want,) = session.run(["logits"], {meta.input.name: x})
    assert got.shape == (3, len(meta.classes)) and float(np.abs(got - want).max()) < 1e-3
    assert json.loads(json.dumps(result)) == result


def test_starts_from_published_weights_in_the_store(setup: tuple[LocalStore, DatasetRef], tmp_path: Path) -> None:
    """Air-gapped clusters: a published .pth (a bare torchvision state dict, 1000 classes) uploaded to the
    store is what `spec.model.checkpoint` starts from; the head, whose shape differs, stays fresh."""
    import torchvision

    store, ref = setup
    published = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(published, path)
    store.put_file("weights/resnet18.pth", path)

    def spec(name: str, checkpoint: str) -> TrainRun:
        return train_run_spec(store, ref, name, {
            "datasetVersion": "v", "task": "classification",
            "model": {"name": "resnet18", "imageSize": SIZE, "checkpoint": checkpoint},
            # An lr this small leaves the convolutions where the weights put them.
            "hyperparameters": {"epochs": 1, "batchSize": 8, "scheduler": {"type": "none"},
                                "optimizer": {"type": "SGD", "lr": 1e-12, "momentum": 0.0, "weightDecay": 0.0}}})

    run = spec("from-pth", store.url("weights/resnet18.pth"))
    train.run(run)
    ckpt = torch.load(Path(store.url(f"{run.experiment_prefix}/{layout.CHECKPOINT_LAST}")), weights_only=True)
    assert torch.allclose(ckpt["model"]["net.conv1.weight"], published["conv1.weight"])
    assert ckpt["model"]["net.fc.weight"].shape[0] == 3  # the dataset's classes, not ImageNet's
    with pytest.raises(ValueError, match=r"spec\.model\.checkpoint: .*does not exist"):
        train.run(spec("missing", "weights/nope.pth"))
    with pytest.raises(ValueError, match=r"spec\.model\.checkpoint: 's3://other/w.pth' is not in the run's store"):
        train.run(spec("elsewhere", "s3://other/w.pth"))


def test_an_export_openvino_cannot_convert_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """Mask R-CNN's ONNX graph pastes masks in a Loop OpenVINO cannot convert: the run keeps its ONNX export."""
    from kubeforge_trainers.export import export_onnx, model_meta
    from kubeforge_trainers.export_formats import export_openvino
    from kubeforge_trainers.models import model_info

    info = model_info("maskrcnn_resnet50_fpn_v2", "instance-segmentation")
    meta = model_meta(info, ["a", "b"], 64)
    model = info.build(2, 64, False, None)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, meta, onnx_path)
    record = export_openvino(model, meta, onnx_path, tmp_path, [torch.rand(3, 64, 64)])
    assert record.files == {} and record.skipped is not None
    assert record.skipped.startswith("OpenVINO could not convert the ONNX export: ")
    assert "Loop" in record.skipped and onnx_path.is_file()
