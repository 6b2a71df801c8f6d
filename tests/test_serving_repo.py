"""Triton model repositories: the generated config.pbtxt parsed back by protobuf, and the serve step."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubeforge.api.inference_service import InferenceServiceSpec, RuntimeSpec, ServedModelRef
from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec
from kubeforge.serving import pbtxt, triton_repo
from kubeforge.steps import serve
from kubeforge.steps.spec import ServeRun
from kubeforge.store import LocalStore


def classifier_meta(dynamic: bool = True) -> ModelMeta:
    batch = -1 if dynamic else 1
    return ModelMeta(
        task="classification", framework="torchvision", architecture="resnet18", classes=["cat", "dog", "fox"],
        input=InputSpec(name="images", dtype="float32", shape=[batch, 3, 64, 48], height=64, width=48,
                        dynamic_batch=dynamic),
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[batch, 3])],
    )


def detector_meta() -> ModelMeta:
    return ModelMeta(
        task="object-detection", framework="torchvision", architecture="ssdlite", classes=["circle", "square"],
        input=InputSpec(name="images", dtype="float32", shape=[1, 3, 160, 160], height=160, width=160,
                        dynamic_batch=False),
        outputs=[TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                 TensorSpec(name="scores", dtype="float32", shape=[-1]),
                 TensorSpec(name="labels", dtype="int64", shape=[-1])],
    )


def parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def tensors(items: Any) -> dict[str, tuple[str, list[int]]]:
    dtype = model_config_pb2.DataType.Name
    return {t.name: (dtype(t.data_type), list(t.dims)) for t in items}


@pytest.mark.parametrize("variant", triton_repo.VARIANTS)
def test_classification_config_batches_without_the_batch_dim(variant: triton_repo.Variant) -> None:
    runtime = RuntimeSpec(max_batch_size=16, dynamic_batching=True, max_queue_delay_microseconds=250, instances=2)
    config = parse(triton_repo.render_config(triton_repo.build_config(classifier_meta(), "pets", runtime, variant)))
    assert config.name == "pets"
    assert config.backend == variant
    assert config.max_batch_size == 16
    assert tensors(config.input) == {"images": ("TYPE_FP32", [3, 64, 48])}
    assert tensors(config.output) == {"logits": ("TYPE_FP32", [3])}
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [g.count for g in config.instance_group] == [2]
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind)
    assert kind == ("KIND_CPU" if variant == "python" else "KIND_AUTO")
    # The meta travels with the config, so a client needs only the URL and the model name.
    embedded = config.parameters[triton_repo.META_PARAMETER].string_value
    assert ModelMeta.model_validate_json(embedded) == classifier_meta()


def test_batching_off_keeps_full_shapes_and_no_dynamic_batching() -> None:
    for meta, runtime in [(classifier_meta(), RuntimeSpec(max_batch_size=0)),
                          (classifier_meta(dynamic=False), RuntimeSpec(max_batch_size=8))]:
        config = parse(triton_repo.render_config(triton_repo.build_config(meta, "m", runtime, "python")))
        assert config.max_batch_size == 0
        assert tensors(config.input)["images"][1] == meta.input.shape
        assert not config.HasField("dynamic_batching")


def test_dynamic_batching_can_be_turned_off_while_batching() -> None:
    runtime = RuntimeSpec(max_batch_size=4, dynamic_batching=False)
    config = parse(triton_repo.render_config(triton_repo.build_config(classifier_meta(), "m", runtime, "onnxruntime")))
    assert config.max_batch_size == 4
    assert not config.HasField("dynamic_batching")


@pytest.mark.parametrize("variant", triton_repo.VARIANTS)
def test_detection_config_is_one_image_per_call_with_variable_outputs(variant: triton_repo.Variant) -> None:
    config = parse(triton_repo.render_config(
        triton_repo.build_config(detector_meta(), "shapes", RuntimeSpec(max_batch_size=8), variant)))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert tensors(config.input) == {"images": ("TYPE_FP32", [1, 3, 160, 160])}
    assert tensors(config.output) == {
        "boxes": ("TYPE_FP32", [-1, 4]), "scores": ("TYPE_FP32", [-1]), "labels": ("TYPE_INT64", [-1]),
    }


def test_batching_an_output_without_a_batch_dim_names_the_tensor() -> None:
    meta = classifier_meta().model_copy(deep=True)
    meta.outputs[0] = TensorSpec(name="logits", dtype="float32", shape=[3])  # no batch dim
    with pytest.raises(ValueError, match=r"'logits' shape \[3\] has no variable batch dimension"):
        triton_repo.build_config(meta, "m", RuntimeSpec(), "python")


def test_pbtxt_escapes_strings_and_keeps_enums_bare() -> None:
    text = pbtxt.render({"name": 'a "quoted"\nname', "data_type": pbtxt.Enum("TYPE_INT64"), "dims": [-1, 4],
                         "skip": None, "reshape": {"shape": [4]}})
    assert "skip" not in text
    assert "data_type: TYPE_INT64\n" in text
    parsed = text_format.Parse(text, model_config_pb2.ModelInput())
    assert parsed.name == 'a "quoted"\nname'
    assert model_config_pb2.DataType.Name(parsed.data_type) == "TYPE_INT64"
    assert list(parsed.dims) == [-1, 4] and list(parsed.reshape.shape) == [4]
    assert pbtxt.render({"allow_ragged_batch": True}) == "allow_ragged_batch: true\n"


def test_repository_layout_has_both_variants_and_configs_last() -> None:
    files = triton_repo.repository_files(b"ONNX", classifier_meta(), "pets", RuntimeSpec())
    assert set(files) == {
        "model_meta.json",
        "python/pets/config.pbtxt", "python/pets/1/model.onnx", "python/pets/1/model.py",
        "onnxruntime/pets/config.pbtxt", "onnxruntime/pets/1/model.onnx",
    }
    order = list(files)
    for variant in triton_repo.VARIANTS:
        assert order.index(f"{variant}/pets/config.pbtxt") > order.index(f"{variant}/pets/1/model.onnx")
    assert b"class TritonPythonModel" in files["python/pets/1/model.py"]
    assert json.loads(files["model_meta.json"])["classes"] == ["cat", "dog", "fox"]


def serve_run(root: str, experiment: str = "experiments/default_pets/pets_torchvision") -> ServeRun:
    return ServeRun(
        store=root, namespace="default", name="pets", experiment_prefix=experiment,
        output_prefix="serving/default_pets", model_name="pets",
        spec=InferenceServiceSpec(model=ServedModelRef(training_job="pets-classifier")),
    )


def test_serve_step_writes_both_repositories(tmp_path: Any) -> None:
    store = LocalStore(tmp_path)
    experiment = "experiments/default_pets/pets_torchvision"
    store.put_bytes(f"{experiment}/export/model.onnx", b"onnx-bytes")
    store.put_bytes(f"{experiment}/model_meta.json", classifier_meta().model_dump_json().encode())
    result = serve.run(serve_run(str(tmp_path), experiment))
    assert result == {"repositoryUri": str(tmp_path / "serving/default_pets"), "modelName": "pets"}
    assert store.get_bytes("serving/default_pets/onnxruntime/pets/1/model.onnx") == b"onnx-bytes"
    config = parse(store.get_bytes("serving/default_pets/python/pets/config.pbtxt").decode())
    assert config.backend == "python" and config.max_batch_size == 8


def test_serve_step_names_the_training_job_when_the_export_is_missing(tmp_path: Any) -> None:
    with pytest.raises(serve.ServeStepError, match=r"TrainingJob 'pets-classifier' has no ONNX export .*"
                                                   r"experiments/default_pets/pets_torchvision"):
        serve.run(serve_run(str(tmp_path)))
