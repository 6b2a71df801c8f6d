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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
import torch
from rich.console import Console
from rich.table import Table
from serving_latency import timed  # benchmarks/ is on sys.path when a benchmark runs as a script

from kubeforge.models import catalog
from kubeforge.store import layout
from kubeforge_trainers.export import export_onnx, model_meta
from kubeforge_trainers.export_formats import export_openvino
from kubeforge_trainers.models import model_info
from kubeforge_trainers.tasks import TASKS, task_kind

# One model per task, at the size the tests train it.
DEFAULT_MODELS = {"resnet18": 64, "ssdlite320_mobilenet_v3_large": 160, "fasterrcnn_mobilenet_v3_large_fpn": 160,
                  "maskrcnn_resnet50_fpn_v2": 160, "unet": 128, "albunet": 128}


def median_p95(fn: Callable[[], object], runs: int, warmup: int = 5) -> tuple[float, float]:
    ordered = sorted(timed(fn, runs, warmup))
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def measure(name: str, size: int, runs: int, threads: int, workdir: Path) -> list[dict[str, object]]:
    entry = next(e for e in catalog.ENTRIES if e.name == name)
    if entry.task not in TASKS:
        return []
    info = model_info(name, entry.task, entry.framework, entry.encoder)
    torch.manual_seed(0)
    kind = task_kind(entry.task)
    classes = kind.output_classes(["a", "b", "c"])
    model = info.build(len(classes), size, False, entry.encoder).eval()
    meta = model_meta(info, classes, size)
    onnx_path = workdir / f"{name}.onnx"
    export_onnx(model, meta, onnx_path)
    # What a TrainingJob with `export: [onnx, openvino]` does, parity check included.
    record = export_openvino(model, meta, onnx_path, workdir / name, [torch.rand(3, size, size)])
    if record.skipped:
        print(f"{name}: {record.skipped}", file=sys.stderr)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    xml = record.files.get(layout.OPENVINO_EXPORT)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads}) if xml else None
    rows = []
    for batch in ([1, 8] if meta.input.dynamic_batch else [1]):
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        ort_med, ort_p95 = median_p95(lambda x=x: session.run(None, {meta.input.name: x}), runs)
        row: dict[str, object] = {"model": name, "task": entry.task, "size": size, "batch": batch,
                                  "ort_ms": round(ort_med, 2), "ort_p95_ms": round(ort_p95, 2), "openvino_ms": None,
                                  "openvino_p95_ms": None, "openvino_speedup": None,
                                  "openvino_parity": record.parity["maxAbsDiff"] if record.parity else None,
                                  "openvino_skipped": record.skipped}
        if compiled is not None:
            ov_med, ov_p95 = median_p95(lambda x=x: compiled(x), runs)
            row |= {"openvino_ms": round(ov_med, 2), "openvino_p95_ms": round(ov_p95, 2),
                    "openvino_speedup": round(ort_med / ov_med, 2)}
        rows.append(row)
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
                      f"{r['ort_ms']} ({r['ort_p95_ms']})",
                      f"{r['openvino_ms']} ({r['openvino_p95_ms']})" if r["openvino_ms"] else "cannot convert",
                      f"{r['openvino_speedup']}x" if r["openvino_speedup"] else "-")
    Console(stderr=True, width=140).print(table)
    print(json.dumps({"threads": args.threads, "runs": args.runs, "results": rows}))


if __name__ == "__main__":
    main()
