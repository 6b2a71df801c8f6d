"""Exports beyond ONNX, each converted from the ONNX export and checked against torch.

OpenVINO IR (CPU, `openvino.convert_model` on the ONNX file) always works where the package is
installed; a TensorRT engine needs TensorRT and a GPU, and is otherwise skipped with the reason
recorded, so a run says what it did not produce instead of failing on a laptop.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubeforge.models.meta import ModelMeta
from kubeforge.store import layout
from kubeforge_trainers.export import check_parity

FORMATS = ("onnx", "openvino", "tensorrt")


@dataclass
class ExportRecord:
    """One requested export: where it went and its parity with torch, or why it was skipped."""

    format: str
    files: dict[str, Path]
    parity: dict[str, Any] | None = None  # Parity.to_json()
    skipped: str | None = None

    def to_status(self, url: Callable[[str], str]) -> dict[str, Any]:
        main = next(iter(self.files), None)
        out: dict[str, Any] = {"format": self.format}
        if main is not None:
            out["uri"] = url(main)
        if self.parity is not None:
            out["parityMaxAbsDiff"] = self.parity["maxAbsDiff"]
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def export_openvino(model: nn.Module, meta: ModelMeta, onnx_path: Path, out_dir: Path,
                    images: list[torch.Tensor]) -> ExportRecord:
    """IR from the ONNX graph; parity: OpenVINO on CPU vs torch, checked as the ONNX export is (`check_parity`)."""
    import openvino as ov

    xml = out_dir / layout.OPENVINO_EXPORT
    xml.parent.mkdir(parents=True, exist_ok=True)
    try:
        converted = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure and friends: the run keeps its ONNX export
        # Mask R-CNN's ONNX graph pastes masks in a Loop that OpenVINO 2026.4 cannot convert.
        first = str(exc).strip().splitlines()
        reason = next((line.strip() for line in first if "Conversion failed for" in line), first[0] if first else "")
        return ExportRecord("openvino", {}, skipped=f"OpenVINO could not convert the ONNX export: {reason}"[:500])
    ov.save_model(converted, str(xml), compress_to_fp16=False)
    parity = check_parity(model, meta, xml, images, runner=openvino_runner)
    return ExportRecord("openvino", {layout.OPENVINO_EXPORT: xml, layout.OPENVINO_WEIGHTS: xml.with_suffix(".bin")},
                        parity.to_json())


def openvino_runner(path: Path, meta: ModelMeta) -> Callable[[torch.Tensor], list[Any]]:
    """OpenVINO on the CPU for the parity check; `path` is the IR or an ONNX file (the check may re-export)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    names = [o.name for o in meta.outputs]

    def run(batch: torch.Tensor) -> list[Any]:
        result = compiled(batch.numpy())
        return [result[compiled.output(name)] for name in names]

    return run


def tensorrt_unavailable() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def export_tensorrt(onnx_path: Path, out_dir: Path, meta: ModelMeta) -> ExportRecord:
    """A serialized TensorRT engine from the ONNX export (FP32), or a record saying why not.

    Not exercised by the test suite (no GPU in CI); the skip path is.
    """
    reason = tensorrt_unavailable()
    if reason is not None:
        return ExportRecord("tensorrt", {}, skipped=reason)
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        return ExportRecord("tensorrt", {}, skipped=f"TensorRT could not parse the ONNX export: {errors}")
    config = builder.create_builder_config()
    if meta.input.dynamic_batch:
        profile = builder.create_optimization_profile()
        _, c, h, w = meta.input.shape
        profile.set_shape(meta.input.name, (1, c, h, w), (8, c, h, w), (32, c, h, w))
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        return ExportRecord("tensorrt", {}, skipped="TensorRT failed to build an engine (see the step log)")
    path = out_dir / layout.TENSORRT_EXPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(engine))
    return ExportRecord("tensorrt", {layout.TENSORRT_EXPORT: path})


def extra_exports(formats: list[str], model: nn.Module, meta: ModelMeta, onnx_path: Path, out_dir: Path,
                  images: list[torch.Tensor]) -> list[ExportRecord]:
    """The requested formats after ONNX, in the order asked."""
    records = []
    for fmt in formats:
        if fmt == "openvino":
            records.append(export_openvino(model, meta, onnx_path, out_dir, images))
        elif fmt == "tensorrt":
            records.append(export_tensorrt(onnx_path, out_dir, meta))
    return records
