"""The cluster (onnxruntime) variant of a Triton repository, checked against Triton's own definitions.

The local tritonserver has only the Python backend, so the tests serve the `python/` variant; the
`onnxruntime/` variant an NGC Triton loads in a cluster is checked here instead: its config.pbtxt
parsed strictly into Triton's ModelConfig protobuf, and compared with the real ONNX export the way
the onnxruntime backend compares them when it loads a model (kubeforge.testing.triton_config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import TensorSpec
from kubeforge.serving import triton_repo
from kubeforge.testing.triton_config import onnx_tensors, onnxruntime_load_problems, parse_model_config


def cluster_files(export: tuple[Path, Any], runtime: RuntimeSpec, meta: Any = None) -> tuple[Any, bytes, dict]:
    """(parsed onnxruntime config, the ONNX bytes, every repository file) for a tiny export."""
    path, export_meta = export
    onnx = Path(path).read_bytes()
    files = triton_repo.repository_files(onnx, meta or export_meta, "m", runtime)
    return parse_model_config(files["onnxruntime/m/config.pbtxt"].decode()), onnx, files


@pytest.mark.parametrize("runtime", [RuntimeSpec(max_batch_size=8, dynamic_batching=True),
                                     RuntimeSpec(max_batch_size=0)], ids=["batched", "unbatched"])
def test_classifier_variant_loads_in_onnxruntime(tiny_classifier: Any, runtime: RuntimeSpec) -> None:
    config, onnx, _ = cluster_files(tiny_classifier, runtime)
    assert onnxruntime_load_problems(config, onnx) == []
    assert config.max_batch_size == runtime.max_batch_size
    assert config.HasField("dynamic_batching") == (runtime.max_batch_size > 0)
    assert list(config.input[0].dims) == ([3, 32, 32] if runtime.max_batch_size else [-1, 3, 32, 32])


def test_detector_variant_loads_in_onnxruntime(tiny_detector: Any) -> None:
    """Variable-N outputs, one image per call: the export's full shapes, no batching, whatever was asked."""
    config, onnx, _ = cluster_files(tiny_detector, RuntimeSpec(max_batch_size=8, dynamic_batching=True))
    assert onnxruntime_load_problems(config, onnx) == []
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    inputs, outputs = onnx_tensors(onnx)
    assert {t.name: list(t.dims) for t in config.output} == {name: shape for name, (_, shape) in outputs.items()}
    assert {t.name: list(t.dims) for t in config.input} == {name: shape for name, (_, shape) in inputs.items()}


def test_cluster_variant_is_what_ngc_triton_reads(tiny_detector: Any) -> None:
    """backend onnxruntime, the export at 1/model.onnx (Triton's default file name), no Python model,
    KIND_AUTO (the Deployment's GPU request decides), and the meta for clients in the parameters."""
    config, onnx, files = cluster_files(tiny_detector, RuntimeSpec())
    assert config.backend == "onnxruntime" and config.platform == "" and config.default_model_filename == ""
    assert files["onnxruntime/m/1/model.onnx"] == onnx
    assert not [f for f in files if f.startswith("onnxruntime/") and f.endswith(".py")]
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_AUTO"]
    meta = triton_repo.meta_from_parameters({k: {"string_value": v.string_value}
                                             for k, v in config.parameters.items()})
    assert meta == tiny_detector[1]


@pytest.mark.parametrize("extra", ["max_batch: 4", "instance_group [{ kind: KIND_TPU }]",
                                   "input [{ name: \"x\" data_type: TYPE_FLOAT32 dims: [1] }]"])
def test_parsing_is_strict(tiny_classifier: Any, extra: str) -> None:
    """An unknown field or enum value fails, as it does when Triton reads the file."""
    _, meta = tiny_classifier
    text = triton_repo.render_config(triton_repo.build_config(meta, "m", RuntimeSpec(), "onnxruntime"))
    parse_model_config(text)
    with pytest.raises(text_format.ParseError):
        parse_model_config(text + extra + "\n")


def test_a_config_that_does_not_fit_the_model_is_caught(tiny_classifier: Any) -> None:
    """The checker fails where the onnxruntime backend would refuse to load."""
    _, meta = tiny_classifier
    wrong_size = meta.model_copy(update={"input": meta.input.model_copy(update={"shape": [-1, 3, 64, 64]})})
    config, onnx, _ = cluster_files(tiny_classifier, RuntimeSpec(), wrong_size)
    assert onnxruntime_load_problems(config, onnx) == [
        "input 'images': model shape [3, 32, 32] does not match configured dims [3, 64, 64]"]

    wrong_output = meta.model_copy(update={"outputs": [TensorSpec(name="probs", dtype="int64", shape=[-1, 3])]})
    config, onnx, _ = cluster_files(tiny_classifier, RuntimeSpec(), wrong_output)
    assert onnxruntime_load_problems(config, onnx) == [
        "configured output 'probs' is not in the model (['logits'])"]

    wrong_type = meta.model_copy(update={"outputs": [TensorSpec(name="logits", dtype="int64", shape=[-1, 3])]})
    config, onnx, _ = cluster_files(tiny_classifier, RuntimeSpec(), wrong_type)
    assert onnxruntime_load_problems(config, onnx) == [
        "output 'logits': model data type TYPE_FP32, configured TYPE_INT64"]


def test_batching_a_fixed_batch_model_is_caught(tiny_detector: Any) -> None:
    path, meta = tiny_detector
    config = parse_model_config(triton_repo.render_config(
        triton_repo.build_config(meta, "m", RuntimeSpec(), "onnxruntime")).replace("max_batch_size: 0",
                                                                                    "max_batch_size: 4"))
    problems = onnxruntime_load_problems(config, Path(path).read_bytes())
    assert problems and "batching is configured but the model's first dimension is not variable" in problems[0]
