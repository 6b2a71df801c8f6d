"""Frames per second of video prediction: ONNX Runtime in-process and a real tritonserver, end to end.

    .venv/bin/python benchmarks/predict_video.py                    # trains a 1-epoch detector (speed only)
    .venv/bin/python benchmarks/predict_video.py --model DIR        # DIR/model.onnx + DIR/model_meta.json
    .venv/bin/python benchmarks/predict_video.py --no-triton        # ONNX Runtime only

The video is a generated moving-shapes MP4 (H.264, `--size` px square, `--frames` frames). Each row is
`predict_video` end to end from the file: decoding (in its thread),
resizing, the model, decoding its outputs, and, per row, tracking (ByteTrack) and writing the annotated
MP4; each row is the median of `--repeats` runs. `decode only` is `frame_items` alone, the ceiling the
model cannot beat. The model's weights do not change its speed, so by default a detector trained for one
epoch is enough. Prints a table, then one JSON object as the last line with `onnxruntime_fps`,
`triton_fps` (null with --no-triton or when that run failed, with its error) and every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kubeforge.models.meta import ModelMeta
from kubeforge.predict.engine import Backend, OnnxBackend, TritonBackend
from kubeforge.predict.tracking import Tracker
from kubeforge.predict.video import VideoStats, frame_items, predict_video
from kubeforge.testing.moving_shapes import render, train_detector


def run(backend: Backend, clip: Path, fps: int, work: Path, track: bool, annotate: bool,
        concurrency: int) -> float:
    stats = VideoStats()
    tracker = Tracker("bytetrack", fps=fps) if track else None
    annotated = work / "annotated.mp4" if annotate else None
    for _ in predict_video(backend, clip, threshold=0.3, tracker=tracker, annotated=annotated, stats=stats,
                           concurrency=concurrency):
        pass
    return stats.fps


def rows_for(name: str, backend: Backend, clip: Path, fps: int, work: Path, concurrency: int,
             repeats: int) -> list[dict[str, Any]]:
    run(backend, clip, fps, work, False, False, concurrency)  # warm-up: sessions, threads, the codec
    out = []
    for label, track, annotate in (("predict", False, False), ("predict + track", True, False),
                                   ("predict + track + annotated MP4", True, True)):
        # The median of a few runs: a shared machine's neighbours move single runs a lot.
        runs = [run(backend, clip, fps, work, track, annotate, concurrency) for _ in range(repeats)]
        out.append({"runtime": name, "pipeline": label, "fps": round(statistics.median(runs), 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=320, help="video frame size (px, square)")
    parser.add_argument("--model", help="a folder with model.onnx and model_meta.json (skips training)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (the median is shown)")
    parser.add_argument("--no-triton", action="store_true", help="skip the tritonserver rows")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    console = Console(stderr=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="kubeforge-video-"))
    work.mkdir(parents=True, exist_ok=True)

    video = render(n_frames=args.frames, size=args.size, n_objects=8, seed=1)
    clip = video.write(work / "clip.mp4")
    if args.model:
        onnx = Path(args.model) / "model.onnx"
        meta = ModelMeta.model_validate_json((Path(args.model) / "model_meta.json").read_text())
    else:
        console.print("training a 1-epoch detector (its speed is what counts here) ...")
        onnx, meta = train_detector(work / "detector", size=128, n_images=16, epochs=1)

    t0 = time.perf_counter()
    n = sum(1 for _ in frame_items(clip))
    rows: list[dict[str, Any]] = [{"runtime": "-", "pipeline": "decode only", "fps": round(n / (time.perf_counter()
                                                                                              - t0), 1)}]
    rows += rows_for("onnxruntime", OnnxBackend(onnx, meta), clip, video.fps, work, args.concurrency, args.repeats)
    if not args.no_triton:
        from kubeforge.api.inference_service import RuntimeSpec
        from kubeforge.serving.triton_server import prepare_backend_dir
        from kubeforge.testing.triton_serving import served

        runtime = RuntimeSpec.model_validate({"maxBatchSize": 8, "dynamicBatching": True})
        with served(work / "triton", onnx, meta, "shapes", runtime, prepare_backend_dir()) as proc:
            backend = TritonBackend(proc.http_url, "shapes", meta, concurrency=args.concurrency)
            try:
                rows += rows_for("triton", backend, clip, video.fps, work, args.concurrency, args.repeats)
            except RuntimeError as exc:  # a failed run is a result too: shown, not hidden by a traceback
                console.print(f"[red]triton: {exc}")
                rows.append({"runtime": "triton", "pipeline": "predict", "fps": None, "error": str(exc)[:300]})
            finally:
                backend.close()

    table = Table(title=f"video prediction: {args.frames} frames of {args.size}x{args.size}, model input "
                        f"{meta.input.width}x{meta.input.height}, concurrency {args.concurrency}")
    for col in ("runtime", "pipeline", "frames/s"):
        table.add_column(col, justify="right" if col == "frames/s" else "left")
    for row in rows:
        table.add_row(row["runtime"], row["pipeline"], "failed" if row["fps"] is None else f"{row['fps']:.1f}")
    Console(width=140).print(table)

    def first(runtime: str) -> float | None:
        return next((r["fps"] for r in rows if r["runtime"] == runtime and r["pipeline"] == "predict"), None)

    print(json.dumps({"onnxruntime_fps": first("onnxruntime"), "triton_fps": first("triton"), "frames": args.frames,
                      "size": args.size, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
