"""An export served by the real tritonserver, the way an InferenceService serves it, for serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.serving import triton_repo
from kubeforge.serving.triton_server import TritonProcess, start_triton, stop_triton


def build_repo(root: Path, onnx: Path, meta: ModelMeta, name: str, runtime: RuntimeSpec) -> Path:
    """The model repository an InferenceService builds, written under `root`; returns the local variant."""
    triton_repo.write_repository(root, triton_repo.repository_files(onnx.read_bytes(), meta, name, runtime))
    return root / triton_repo.LOCAL_VARIANT


@contextmanager
def served(work: Path, onnx: Path, meta: ModelMeta, name: str, runtime: RuntimeSpec,
           backend_dir: Path) -> Iterator[TritonProcess]:
    """tritonserver serving `onnx` as model `name` (log in `work/triton.log`), stopped on exit."""
    repo = build_repo(work / "serving", onnx, meta, name, runtime)
    proc = start_triton(str(repo), name, work / "triton.log", backend_dir=backend_dir)
    try:
        yield proc
    finally:
        stop_triton(proc.pid)
