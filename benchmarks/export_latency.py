"""CPU latency of the same exported model in ONNX Runtime and in OpenVINO, one model per task.

    .venv/bin/python benchmarks/export_latency.py [--runs 50] [--threads 2] [--models resnet18,...]

Each model is built (from scratch: latency does not depend on the weights), exported to ONNX with
the trainer's exporter and converted to OpenVINO IR the way a TrainingJob with
`export: [onnx, openvino]` does. Both runtimes get the same input, the same thread count, a
warm-up, then `--runs` sequential calls at batch 1 (and 8 where the export batches). Prints a
table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
import torch
from rich.console import Console
from rich.table import Table

from kubeforge.models import catalog
from kubeforge_trainers.export import export_onnx, model_meta
from kubeforge_trainers.models import model_info
from kubeforge_trainers.tasks import TASKS

# One model per task, at the size the tests train it.
DEFAULT_MODELS = {"resnet18": 64, "ssdlite320_mobilenet_v3_large": 160, "fasterrcnn_mobilenet_v3_large_fpn": 160,
                  "maskrcnn_resnet50_fpn_v2": 160, "unet": 128, "albunet": 128}


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def measure(name: str, size: int, runs: int, threads: int, workdir: Path) -> list[dict[str, object]]:
    entry = next(e for e in catalog.ENTRIES if e.name == name)
    if entry.task not in TASKS:
        return []
    info = model_info(name, entry.task, entry.framework, entry.encoder)
    torch.manual_seed(0)
    model = info.build(3, size, False, entry.encoder).eval()
    meta = model_meta(info, ["a", "b", "c"] if entry.task != "semantic-segmentation" else ["__bg__", "a", "b"], size)
    onnx_path = workdir / f"{name}.onnx"
    export_onnx(model, meta, onnx_path)
    xml = workdir / f"{name}.xml"
    try:
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    except Exception as exc:  # e.g. Mask R-CNN's mask-pasting Loop; the table says so
        print(f"{name}: OpenVINO cannot convert the ONNX export ({type(exc).__name__})", file=sys.stderr)
        return [{"model": name, "task": entry.task, "size": size, "batch": 1, "ort_ms": None, "ort_p95_ms": None,
                 "openvino_ms": None, "openvino_p95_ms": None, "openvino_speedup": None}]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads})
    rows = []
    for batch in ([1, 8] if meta.input.dynamic_batch else [1]):
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        ort_med, ort_p95 = median_ms(lambda x=x: session.run(None, {meta.input.name: x}), runs)
        ov_med, ov_p95 = median_ms(lambda x=x: compiled(x), runs)
        rows.append({"model": name, "task": entry.task, "size": size, "batch": batch, "ort_ms": round(ort_med, 2),
                     "ort_p95_ms": round(ort_p95, 2), "openvino_ms": round(ov_med, 2),
                     "openvino_p95_ms": round(ov_p95, 2), "openvino_speedup": round(ort_med / ov_med, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += measure(name, DEFAULT_MODELS.get(name, 64), args.runs, args.threads, Path(tmp))
    table = Table(title=f"CPU latency, {args.threads} threads, median (p95) of {args.runs} calls")
    for col in ("model", "task", "size", "batch", "ONNX Runtime ms", "OpenVINO ms", "OpenVINO speed-up"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["model"]), str(r["task"]), str(r["size"]), str(r["batch"]),
                      f"{r['ort_ms']} ({r['ort_p95_ms']})", f"{r['openvino_ms']} ({r['openvino_p95_ms']})",
                      f"{r['openvino_speedup']}x")
    Console(stderr=True, width=140).print(table)
    print(json.dumps({"threads": args.threads, "runs": args.runs, "results": rows}))


if __name__ == "__main__":
    main()
