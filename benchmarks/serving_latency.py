"""Triton's latency for one image against ONNX Runtime in-process, on a served model.

Run after `make demo` (or any `kubeforge run` that serves a model):

    .venv/bin/python benchmarks/serving_latency.py [--service shapes] [--state-dir DIR]

Both sides get the same preprocessed input; the ORT side runs the very export Triton
serves. Requests are sequential (one image, batch 1), after a warm-up. Prints a table,
then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from kubeforge.local.state import service_endpoint
from kubeforge.models.meta import ModelMeta
from kubeforge.serving.client import _client, encode_request
from kubeforge.store import layout, open_store


def timed(fn: Callable[[], object], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "img_per_s": 1000 / statistics.mean(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="shapes")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--state-dir", default=None,
                        help="The local runner's state (default: $KUBEFORGE_STATE_DIR or ./.kubeforge, where make demo "
                             "keeps it).")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (Triton's model uses 1).")
    args = parser.parse_args()

    ep = service_endpoint(args.service, args.namespace, args.state_dir)
    store = open_store(ep.store_uri)
    meta = ModelMeta.model_validate_json(store.get_bytes(ep.model_meta_key))
    onnx_bytes = store.get_bytes(f"{ep.experiment_prefix}/{layout.ONNX_EXPORT}")
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, meta.input.height, meta.input.width), dtype=np.float32)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    ort_ms = timed(lambda: session.run(None, {meta.input.name: x}), args.requests, args.warmup)

    client = _client(ep.url)
    inputs, outputs = encode_request(x, meta)
    triton_ms = timed(lambda: client.infer(ep.model_name, inputs, outputs=outputs), args.requests, args.warmup)
    client.close()

    rows = {"onnxruntime in-process": summary(ort_ms), "Triton over HTTP (kubeforge serve)": summary(triton_ms)}
    table = Table(title=f"{args.service}: {meta.architecture} {meta.input.width}x{meta.input.height}, batch 1, "
                        f"{args.requests} sequential requests")
    for col in ("runtime", "median ms", "p90 ms", "img/s"):
        table.add_column(col, justify="right" if col != "runtime" else "left")
    for name, s in rows.items():
        table.add_row(name, f"{s['median_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['img_per_s']:.1f}")
    Console().print(table)
    result = {
        "model": meta.architecture,
        "requests": args.requests,
        "ort_median_ms": round(rows["onnxruntime in-process"]["median_ms"], 3),
        "triton_median_ms": round(rows["Triton over HTTP (kubeforge serve)"]["median_ms"], 3),
        "triton_vs_ort_throughput": round(
            rows["Triton over HTTP (kubeforge serve)"]["img_per_s"] / rows["onnxruntime in-process"]["img_per_s"], 3
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
