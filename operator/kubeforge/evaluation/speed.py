"""Latency and throughput of one model on each runtime that can run it (metrics.json `models[m]["speed"]`).

Each runtime is timed on random input at the model's input size: `spec.warmup` untimed calls, then
`spec.runs` timed calls per batch size. A batch of an export whose batch dimension is fixed at 1
(detection and instance segmentation take one image per call) is that many calls, and its rows say
`batched: false`. A runtime that cannot run here (not installed, no checkpoint, a service that is not
ready) is listed in `skipped` with the reason, never an error: speed is a report, not a gate.

- torch: the run's checkpoint rebuilt with the trainers package (eager, `torch.inference_mode`), the same
  module the ONNX export traced.
- onnxruntime: the ONNX export, with the session options the benchmark itself uses.
- openvino: the run's OpenVINO IR when the TrainingJob exported one, else the ONNX converted in memory.
- triton: the InferenceService named in `spec.speed.inferenceService`, when it serves this model and is ready.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kubeforge.api.benchmark import SpeedSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.steps.spec import BenchmarkModel, BenchmarkTriton
from kubeforge.store import Store, layout

RUNTIMES = ("torch", "onnxruntime", "openvino", "triton")
# One call of a runtime: a float32 [B, 3, H, W] batch in, whatever the model returns out (ignored).
Call = Callable[[np.ndarray], Any]


class Skip(Exception):
    """A runtime that cannot be timed here; the message is the recorded reason."""


def _threads() -> int:
    env = int(os.environ.get("KUBEFORGE_ORT_THREADS", "0") or 0)
    if env:
        return env
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def time_calls(call: Call, batch: np.ndarray, warmup: int, runs: int, batched: bool) -> tuple[float, float]:
    """(median, p95) milliseconds to process `batch`: one call, or one call per image when not `batched`."""
    parts = [batch] if batched else [batch[i: i + 1] for i in range(len(batch))]

    def once() -> None:
        for part in parts:
            call(part)

    for _ in range(warmup):
        once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        times.append((time.perf_counter() - start) * 1000.0)
    # p95 by the nearest-rank method: one of the measured times, as is the median of an odd count.
    ranked = sorted(times)
    p95 = ranked[min(len(ranked) - 1, max(0, int(np.ceil(0.95 * len(ranked))) - 1))]
    return statistics.median(times), p95


def _rows(runtime: str, call: Call, meta: ModelMeta, spec: SpeedSpec, batched: bool, skipped: list[dict[str, str]],
          deadline: float, max_batch: int | None = None) -> list[dict[str, Any]]:
    """Rows of one runtime, smallest batch first; a size whose timing (estimated from one untimed call of
    it, or from the size before) would pass `deadline` is skipped with the reason."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for size in sorted(spec.batch_sizes):
        batch = rng.random((size, 3, meta.input.height, meta.input.width), dtype=np.float32)
        whole = batched and (max_batch is None or size <= max_batch)
        if batched and not whole:  # a served model with a smaller max batch: chunks of its max
            assert max_batch is not None
            chunks = [batch[i: i + max_batch] for i in range(0, size, max_batch)]

            def run(b: np.ndarray, chunks: list[np.ndarray] = chunks) -> None:
                for c in chunks:
                    call(c)

            timed, as_batch = run, True
        else:
            timed, as_batch = call, whole
        if rows:
            last = rows[-1]
            per_call = last["medianMs"] / 1000.0 / last["batchSize"] * size
        else:  # the first size: one untimed call tells what it costs
            probe = time.perf_counter()
            time_calls(timed, batch, 0, 1, batched=as_batch)
            per_call = time.perf_counter() - probe
        estimate = per_call * (spec.warmup + spec.runs)
        if time.perf_counter() + estimate > deadline:
            skipped.append({"runtime": runtime, "reason": f"batch size {size}: about {estimate:.0f} s of timing "
                            f"would pass the time budget of {spec.max_seconds:g} s (spec.speed.maxSeconds)"})
            continue
        median, p95 = time_calls(timed, batch, spec.warmup, spec.runs, batched=as_batch)
        median, p95 = round(median, 4), round(p95, 4)
        rows.append({"runtime": runtime, "batchSize": size, "medianMs": median, "p95Ms": p95,
                     "imagesPerSecond": round(size / (median / 1000.0), 3) if median > 0 else 0.0,
                     "batched": batched})
    return rows


def _torch_call(store: Store, ref: BenchmarkModel, meta: ModelMeta, workdir: Path) -> tuple[Call, str]:
    """The checkpoint rebuilt as the export module (the exact graph ONNX traced) and the device it runs on."""
    if importlib.util.find_spec("torch") is None:
        raise Skip("torch is not installed")
    if importlib.util.find_spec("kubeforge_trainers") is None:
        raise Skip("the trainers package (kubeforge_trainers) is not installed: the checkpoint cannot be rebuilt")
    if meta.framework == "custom":
        raise Skip("framework custom: only its own trainer image can rebuild the model from the checkpoint")
    import torch

    from kubeforge_trainers.models import model_info
    from kubeforge_trainers.tasks import task_kind

    rel = layout.CHECKPOINT_BEST if ref.checkpoint == "best" else layout.CHECKPOINT_LAST
    key = f"{ref.experiment_prefix.rstrip('/')}/{rel}"
    if not store.exists(key):
        raise Skip(f"checkpoint {key} not found in store {store.uri}")
    path = workdir / "speed-checkpoint.pt"
    store.get_file(key, path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        args = ckpt.get("args") or {}
        encoder = ((args.get("spec") or {}).get("model") or {}).get("encoder")
        info = model_info(meta.architecture, meta.task, meta.framework, encoder)
        model = info.build(len(meta.classes), meta.input.height, False, encoder)
        model.load_state_dict(ckpt["model"])
    except Exception as exc:  # a checkpoint of another architecture, a state dict that does not fit
        raise Skip(f"cannot rebuild {meta.framework}/{meta.architecture} from {key}: {exc}"[:500]) from exc
    finally:
        path.unlink(missing_ok=True)
    module = task_kind(meta.task).export_module(model).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = module.to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"

    def call(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            out = module(torch.from_numpy(batch).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return call, name


def _onnxruntime_call(onnx_path: Path, meta: ModelMeta) -> tuple[Call, str]:
    """The session the benchmark evaluates with, and its first execution provider."""
    from kubeforge.evaluation.inference import OnnxModel

    session = OnnxModel.load(onnx_path, meta).session
    name = meta.input.name
    return (lambda batch: session.run(None, {name: batch})), session.get_providers()[0]


def _openvino_call(store: Store, ref: BenchmarkModel, onnx_path: Path, meta: ModelMeta, workdir: Path) -> Call:
    if importlib.util.find_spec("openvino") is None:
        raise Skip("openvino is not installed")
    import openvino as ov

    prefix = ref.experiment_prefix.rstrip("/")
    xml_key = f"{prefix}/{layout.OPENVINO_EXPORT}"
    bin_key = xml_key[: -len(".xml")] + ".bin"
    try:
        if store.exists(xml_key) and store.exists(bin_key):  # the IR the TrainingJob exported
            xml = workdir / "openvino" / "model.xml"
            store.get_file(xml_key, xml)
            store.get_file(bin_key, xml.with_suffix(".bin"))
            model = ov.Core().read_model(str(xml))
        else:
            model = ov.convert_model(str(onnx_path))
        compiled = ov.Core().compile_model(model, "CPU")
    except Exception as exc:  # conversion failures (Mask R-CNN's paste loop) and friends
        lines = str(exc).strip().splitlines()
        raise Skip(f"OpenVINO cannot compile the model: {lines[0] if lines else type(exc).__name__}"[:500]) from exc
    request = compiled.create_infer_request()
    return lambda batch: request.infer({0: batch})


def _triton_call(triton: BenchmarkTriton | None, service: str | None, ref: BenchmarkModel,
                 meta: ModelMeta) -> tuple[Call, bool, int | None]:
    """(call, batched, max batch) for the served model."""
    if service is None:
        raise Skip("no InferenceService named in spec.speed.inferenceService")
    if triton is None or not triton.ready or not triton.url or not triton.model_name:
        raise Skip(f"InferenceService {service} is not ready")
    if triton.experiment_prefix and triton.experiment_prefix.rstrip("/") != ref.experiment_prefix.rstrip("/"):
        raise Skip(f"InferenceService {service} serves another model ({triton.experiment_prefix})")
    if importlib.util.find_spec("tritonclient") is None:
        raise Skip("tritonclient is not installed")
    import tritonclient.http as httpclient

    url = triton.url.split("://", 1)[-1].rstrip("/")
    try:
        client = httpclient.InferenceServerClient(url=url, connection_timeout=10, network_timeout=60)
        if not client.is_model_ready(triton.model_name):
            raise Skip(f"InferenceService {service} is not ready (model {triton.model_name} not ready at {url})")
        config = client.get_model_config(triton.model_name)
    except Skip:
        raise
    except Exception as exc:  # connection refused, timeouts
        raise Skip(f"InferenceService {service}: Triton at {url} does not answer: {exc}"[:500]) from exc
    max_batch = int(config.get("max_batch_size", 0) or 0)
    outputs = [httpclient.InferRequestedOutput(o.name, binary_data=True) for o in meta.outputs]

    def call(batch: np.ndarray) -> Any:
        inp = httpclient.InferInput(meta.input.name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=True)
        return client.infer(triton.model_name, [inp], outputs=outputs)

    return call, max_batch > 0, max_batch or None


def measure_speed(spec: SpeedSpec, store: Store, ref: BenchmarkModel, meta: ModelMeta, onnx_path: Path,
                  workdir: Path, triton: BenchmarkTriton | None = None) -> dict[str, Any]:
    """The model's `speed` entry of metrics.json (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    batched = meta.input.dynamic_batch
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    device = f"cpu ({_threads()} threads)"
    # One budget for the model, all runtimes together: a large model on a CPU must not hold the benchmark.
    deadline = time.perf_counter() + spec.max_seconds
    for runtime in RUNTIMES:
        if runtime not in spec.runtimes:
            continue
        try:
            if runtime == "torch":
                call, where = _torch_call(store, ref, meta, workdir)
                if not where.startswith("cpu"):
                    device = f"{device}; torch on {where}"
                rows += _rows(runtime, call, meta, spec, batched, skipped, deadline)
            elif runtime == "onnxruntime":
                call, provider = _onnxruntime_call(onnx_path, meta)
                if provider != "CPUExecutionProvider":
                    device = f"{device}; onnxruntime on {provider}"
                rows += _rows(runtime, call, meta, spec, batched, skipped, deadline)
            elif runtime == "openvino":
                rows += _rows(runtime, _openvino_call(store, ref, onnx_path, meta, workdir), meta, spec, batched,
                              skipped, deadline)
            else:
                call, served_batched, max_batch = _triton_call(triton, spec.inference_service, ref, meta)
                rows += _rows(runtime, call, meta, spec, served_batched, skipped, deadline, max_batch)
        except Skip as exc:
            skipped.append({"runtime": runtime, "reason": str(exc)})
        except Exception as exc:  # a runtime that fails mid-timing: recorded, the benchmark goes on
            skipped.append({"runtime": runtime, "reason": f"failed: {type(exc).__name__}: {exc}"[:500]})
    return {"device": device, "inputSize": [meta.input.height, meta.input.width], "warmup": spec.warmup,
            "runs": spec.runs, "rows": rows, "skipped": skipped}
