"""Check a Triton `config.pbtxt` the way a cluster's NGC Triton would load it with ONNX Runtime.

No `onnxruntime` backend runs here (the PyPI tritonserver ships only the Python one), so what the
cluster variant of a repository must satisfy is checked against Triton's own definitions instead:

- the text is parsed strictly into Triton's `ModelConfig` protobuf (`tritonclient.grpc.model_config_pb2`,
  the message Triton parses config.pbtxt into): an unknown field or enum value is an error, as it
  is for Triton;
- the inputs and outputs are compared with the ONNX model as the onnxruntime backend compares them
  at load time (its `ValidateInputs`/`ValidateOutputs` and `CompareDimsSupported`): every model
  input configured, every configured tensor in the model, the same data type, the same rank once
  the batch dimension is taken off when `max_batch_size > 0` (then the model's first dimension must
  be variable), and equal dimensions wherever the model's is fixed.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format

# ONNX Runtime's type strings -> Triton's DataType names (the ones our exports use, and their kin).
ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64",
                 "tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32", "tensor(int8)": "TYPE_INT8",
                 "tensor(uint8)": "TYPE_UINT8", "tensor(bool)": "TYPE_BOOL", "tensor(string)": "TYPE_STRING"}


def parse_model_config(text: str) -> Any:
    """config.pbtxt -> `inference.ModelConfig`; raises `text_format.ParseError` on anything Triton would not parse."""
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig(), allow_unknown_field=False)


def onnx_tensors(onnx: bytes) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]]]:
    """(inputs, outputs) of an ONNX model: name -> (Triton data type, shape with -1 for a variable dim)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])

    def info(args: list[Any]) -> dict[str, tuple[str, list[int]]]:
        return {a.name: (ORT_TO_TRITON.get(a.type, a.type), [d if isinstance(d, int) and d >= 0 else -1
                                                             for d in a.shape]) for a in args}

    return info(session.get_inputs()), info(session.get_outputs())


def onnxruntime_load_problems(config: Any, onnx: bytes) -> list[str]:
    """What would stop Triton's onnxruntime backend loading `onnx` with `config`; empty when it loads."""
    from tritonclient.grpc import model_config_pb2

    problems: list[str] = []
    if config.backend != "onnxruntime" and config.platform != "onnxruntime_onnx":
        problems.append(f"backend {config.backend!r} / platform {config.platform!r} is not ONNX Runtime")
    if config.default_model_filename not in ("", "model.onnx"):
        problems.append(f"default_model_filename {config.default_model_filename!r}: the repository has model.onnx")
    if config.HasField("dynamic_batching") and config.max_batch_size <= 0:
        problems.append("dynamic_batching without max_batch_size > 0")
    inputs, outputs = onnx_tensors(onnx)
    configured = {t.name for t in config.input}
    problems += [f"model input {name!r} is not configured" for name in inputs if name not in configured]
    for where, tensors, model in (("input", config.input, inputs), ("output", config.output, outputs)):
        for tensor in tensors:
            if tensor.name not in model:
                problems.append(f"configured {where} {tensor.name!r} is not in the model ({sorted(model)})")
                continue
            dtype, shape = model[tensor.name]
            wanted = model_config_pb2.DataType.Name(tensor.data_type)
            if dtype != wanted:
                problems.append(f"{where} {tensor.name!r}: model data type {dtype}, configured {wanted}")
            dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
            problems += _dims_problems(f"{where} {tensor.name!r}", shape, dims, config.max_batch_size)
    return problems


def _dims_problems(what: str, model_shape: list[int], dims: list[int], max_batch_size: int) -> list[str]:
    """The onnxruntime backend's CompareDimsSupported, as text."""
    if max_batch_size > 0:
        if not model_shape or model_shape[0] != -1:
            return [f"{what}: batching is configured but the model's first dimension is not variable "
                    f"({model_shape})"]
        model_shape = model_shape[1:]
    if len(model_shape) != len(dims):
        return [f"{what}: model shape {model_shape} and configured dims {dims} differ in rank"]
    if any(m != -1 and m != d for m, d in zip(model_shape, dims, strict=True)):
        return [f"{what}: model shape {model_shape} does not match configured dims {dims}"]
    return []
