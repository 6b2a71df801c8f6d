"""Folder prediction throughput: `kubeforge predict`'s engine against tritonclient alone, same model, same run.

    .venv/bin/python benchmarks/predict_folder.py                        # 1,000 images, builds and serves its model
    .venv/bin/python benchmarks/predict_folder.py --task detection       # one image per request (no batching)
    .venv/bin/python benchmarks/predict_folder.py --url 127.0.0.1:8001 --model NAME   # a model already served

Self-contained: unless --url/--model name a served model, it builds a small CNN (a classifier at 128x128 that
batches, or a grid detector at 128x128 that does not; --width scales its cost, by default about 9 ms of CPU an
image), exports it to ONNX and serves it with its own tritonserver, as an InferenceService would (Python backend,
ONNX Runtime on the CPU). Client and server share this machine's CPUs: with a model lighter than the client's
JPEG decoding (--width 1) the decoding takes CPU from the server, which a remote GPU server would not feel.
The folder: N JPEG photos-like images (256x192, random shapes), written once to a temporary folder.

- kubeforge: `kubeforge.predict.engine.predict_stream` over `sources.items([folder])` (what `kubeforge predict
  NAME FOLDER -f jsonl` runs, without the process start): from the files on disk (JPEG decode, resize) to
  decoded Predictions, over gRPC, with its default concurrency and batching.
- client-only: tritonclient's gRPC `async_infer` alone, on inputs already decoded and resized in memory (no
  disk, no decode, no postprocessing): the server's ceiling. Concurrency 1..32 (and, for a batching model,
  batches of 1 and of kubeforge's size) are tried; the best is reported.

Each figure is the best of --repeats timed passes after a warm-up. A table is printed, then, as the last line,
one JSON object with `kubeforge_img_s`, `client_only_img_s`, `ratio`, the client-only settings that won, and
`kubeforge_cli_img_s` (the command a user types, timed whole: start-up and imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

SIZE = 128
CLASSES = ["circle", "square", "triangle"]


def build_model(task: str, out: Path, width: int = 1):  # type: ignore[no-untyped-def]
    """A small CNN exported to ONNX (`width` multiplies its first layers' channels): (path, ModelMeta)."""
    import torch

    from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec

    torch.manual_seed(0)
    w = width
    trunk = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16 * w, 32 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32 * w, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
    )
    path = out / f"{task}.onnx"
    if task == "classification":
        class Classifier(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.trunk, self.head = trunk, torch.nn.Linear(64, len(CLASSES))

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                return self.head(self.trunk(images).mean(dim=(2, 3)))

        torch.onnx.export(Classifier().eval(), (torch.rand(2, 3, SIZE, SIZE),), str(path), input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "b"}, "logits": {0: "b"}},
                          opset_version=17, dynamo=False)
        return path, ModelMeta(
            task="classification", framework="torch", architecture="bench-cnn", classes=CLASSES,
            input=InputSpec(name="images", dtype="float32", shape=[-1, 3, SIZE, SIZE], height=SIZE, width=SIZE,
                            dynamic_batch=True),
            outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, len(CLASSES)])], onnx_opset=17)

    class Detector(torch.nn.Module):  # one box per 16x16 cell of the feature map, kept above a score
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.head = trunk, torch.nn.Conv2d(64, len(CLASSES) + 1, 1)

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits = self.head(self.trunk(images))[0]  # [C+1, 16, 16]
            probs = logits.softmax(dim=0)[1:]
            score, label = probs.max(dim=0)
            n = score.shape[0]
            step = SIZE / n
            ys = torch.arange(n, dtype=torch.float32).view(n, 1).expand(n, n) * step
            xs = torch.arange(n, dtype=torch.float32).view(1, n).expand(n, n) * step
            boxes = torch.stack([xs, ys, xs + step, ys + step], dim=-1).reshape(-1, 4)
            keep = score.reshape(-1) > 0.3
            return boxes[keep], score.reshape(-1)[keep], label.reshape(-1)[keep].to(torch.int64)

    torch.onnx.export(Detector().eval(), (torch.rand(1, 3, SIZE, SIZE),), str(path), input_names=["images"],
                      output_names=["boxes", "scores", "labels"],
                      dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}, "labels": {0: "n"}}, opset_version=17,
                      dynamo=False)
    return path, ModelMeta(
        task="object-detection", framework="torch", architecture="bench-grid", classes=CLASSES,
        input=InputSpec(name="images", dtype="float32", shape=[1, 3, SIZE, SIZE], height=SIZE, width=SIZE,
                        dynamic_batch=False),
        outputs=[TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                 TensorSpec(name="scores", dtype="float32", shape=[-1]),
                 TensorSpec(name="labels", dtype="int64", shape=[-1])], onnx_opset=17)


def write_folder(root: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        img = Image.new("RGB", (256, 192), tuple(int(v) for v in rng.integers(0, 255, 3)))
        pen = ImageDraw.Draw(img)
        for _ in range(3):
            x, y = rng.integers(0, 200), rng.integers(0, 140)
            pen.ellipse((x, y, x + rng.integers(10, 56), y + rng.integers(10, 52)),
                        fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        path = root / f"{i // 100:02d}" / f"img{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        paths.append(path)
    return paths


def time_kubeforge(url: str, model: str, folder: Path) -> tuple[float, int]:
    from kubeforge.predict import engine, sources

    backend = engine.TritonBackend(url, model, None)
    try:
        start = time.perf_counter()
        n = sum(1 for _ in engine.predict_stream(backend, sources.items([str(folder)]), threshold=0.5))
        return n / (time.perf_counter() - start), engine.batch_size_of(backend)
    finally:
        backend.close()


def time_client(url: str, model: str, inputs: np.ndarray, meta, concurrency: int, batch: int) -> float:  # type: ignore[no-untyped-def]
    """tritonclient alone: `concurrency` async requests of `batch` images in flight until all are answered."""
    import tritonclient.grpc as grpcclient

    from kubeforge.predict.engine import output_names

    client = grpcclient.InferenceServerClient(url)
    names = output_names(meta)
    chunks = [inputs[i:i + batch] for i in range(0, len(inputs), batch)]
    slots = threading.Semaphore(concurrency)
    done = threading.Event()
    left = [len(chunks)]
    lock = threading.Lock()
    errors: list[object] = []

    def callback(result: object, error: object) -> None:
        if error is not None:
            errors.append(error)
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()
        slots.release()

    start = time.perf_counter()
    for chunk in chunks:
        slots.acquire()
        inp = grpcclient.InferInput(meta.input.name, list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk)
        client.async_infer(model, [inp], callback, outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    done.wait()
    elapsed = time.perf_counter() - start
    client.close()
    if errors:
        raise RuntimeError(f"client-only: {errors[0]}")
    return len(inputs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--task", choices=["classification", "detection"], default="classification")
    parser.add_argument("--url", help="gRPC host:port of a served model (with --model); default: serve one here")
    parser.add_argument("--model")
    parser.add_argument("--width", type=int, default=4,
                        help="channel multiplier of the model's first layers (1: a model so light that the "
                             "client's JPEG decoding costs as much CPU as the server's work)")
    parser.add_argument("--instances", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 2)))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", default="2,4,8,16,32", help="client-only concurrencies tried")
    args = parser.parse_args()
    if bool(args.url) != bool(args.model):
        parser.error("--url and --model go together")

    from kubeforge.api.inference_service import RuntimeSpec
    from kubeforge.models.preprocess import load_rgb, to_input
    from kubeforge.predict.engine import TritonBackend

    with tempfile.TemporaryDirectory(prefix="kubeforge-predict-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        if args.url:
            url, model = args.url, args.model
        else:
            from kubeforge.serving.triton_server import prepare_backend_dir
            from kubeforge.testing.triton_serving import served

            onnx, meta = build_model(args.task, work, args.width)
            runtime = RuntimeSpec(max_batch_size=16, instances=args.instances)
            proc = stack.enter_context(served(work / "serve", onnx, meta, "bench", runtime, prepare_backend_dir()))
            url, model = proc.grpc_url, "bench"
        probe = TritonBackend(url, model, None)
        meta, max_batch = probe.meta, probe.max_batch_size
        probe.close()
        paths = write_folder(work / "images", args.images)
        inputs = np.stack([to_input(load_rgb(p), meta) for p in paths])

        # Warm-up: the server's instances and both clients' connections.
        time_client(url, model, inputs[:64], meta, 8, 1)
        time_kubeforge(url, model, paths[0].parent)

        rows = []
        kube, batch = max(time_kubeforge(url, model, work / "images") for _ in range(args.repeats))
        rows.append(("kubeforge (files on disk)", "default", batch, kube))
        batches = sorted({1, batch}) if max_batch > 0 else [1]
        best = (0.0, 0, 0)
        for b in batches:
            for c in (int(v) for v in args.concurrency.split(",")):
                rate = max(time_client(url, model, inputs, meta, c, b) for _ in range(args.repeats))
                rows.append(("client-only (tensors in memory)", c, b, rate))
                best = max(best, (rate, c, b))

        start = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "kubeforge.cli.main", "predict", model, str(work / "images"),
                              "--url", url, "-f", "jsonl", "-o", str(work / "out.jsonl")],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "operator")})
        cli_rate = args.images / (time.perf_counter() - start)
        if cli.returncode != 0:
            raise SystemExit(f"kubeforge predict failed:\n{cli.stderr}")

    print(f"{meta.task}, {args.images} images, {os.cpu_count()} CPUs (client and server share them), "
          f"server instances {args.instances}, "
          f"model max_batch_size {max_batch}")
    print(f"{'driver':34} {'concurrency':>11} {'batch':>5} {'images/s':>9}")
    for name, c, b, rate in rows:
        print(f"{name:34} {c!s:>11} {b:>5} {rate:9.1f}")
    print(f"{'kubeforge predict (whole command)':34} {'default':>11} {batch:>5} {cli_rate:9.1f}")
    print(json.dumps({
        "task": meta.task, "images": args.images, "cpus": os.cpu_count(), "width": args.width,
        "kubeforge_img_s": round(kube, 1), "client_only_img_s": round(best[0], 1),
        "ratio": round(kube / best[0], 3), "client_only_concurrency": best[1], "client_only_batch": best[2],
        "kubeforge_batch": batch, "kubeforge_cli_img_s": round(cli_rate, 1),
    }))


if __name__ == "__main__":
    main()
