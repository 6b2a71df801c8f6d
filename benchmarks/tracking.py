"""Tracking scores (HOTA, MOTA, IDF1) of ByteTrack and BoT-SORT on a generated moving-shapes video.

    .venv/bin/python benchmarks/tracking.py                       # trains its detector first (minutes)
    .venv/bin/python benchmarks/tracking.py --model DIR           # DIR/model.onnx + DIR/model_meta.json

The video (kubeforge.testing.moving_shapes, seeded) has objects entering, crossing and leaving, with
their true tracks. Two sources of detections go through each tracker:
- `detector`: a real ssdlite320_mobilenet_v3_large trained from scratch on synth shapes through the
  train step, run by `predict_video` (ONNX Runtime) at `--threshold` (low, so ByteTrack's second stage
  sees low-score boxes);
- `truth+noise`: the true boxes jittered, 10% dropped and random false boxes added (the sanity line:
  what the tracker does with near-perfect detections).
Scores come from TrackEval (kubeforge.predict.track_eval). Prints a table, then one JSON object as the
last line: per source and tracker, hota, mota, idf1 and the rest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kubeforge.models.meta import ModelMeta
from kubeforge.predict.engine import OnnxBackend
from kubeforge.predict.track_eval import evaluate, tracks_from_predictions
from kubeforge.predict.tracking import METHODS, Tracker
from kubeforge.predict.video import VideoStats, predict_video
from kubeforge.testing.moving_shapes import noisy_detections, render, train_detector


def load_model(args: argparse.Namespace, work: Path, console: Console) -> tuple[Path, ModelMeta]:
    if args.model:
        model = Path(args.model)
        return model / "model.onnx", ModelMeta.model_validate_json((model / "model_meta.json").read_text())
    console.print(f"training the detector ({args.images} images, {args.epochs} epochs, {args.size} px) ...")
    t0 = time.perf_counter()
    onnx, meta = train_detector(work / "detector", size=args.size, n_images=args.images, epochs=args.epochs)
    console.print(f"trained in {time.perf_counter() - t0:.0f} s")
    if args.save_model:
        out = Path(args.save_model)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx, out / "model.onnx")
        (out / "model_meta.json").write_text(meta.model_dump_json(by_alias=True))
    return onnx, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=128, help="frame and model input size (px)")
    parser.add_argument("--objects", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.1, help="detection score threshold")
    parser.add_argument("--model", help="a folder with model.onnx and model_meta.json (skips training)")
    parser.add_argument("--save-model", help="keep the trained detector in this folder (for --model later)")
    parser.add_argument("--images", type=int, default=400, help="training images (when training)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (when training)")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    console = Console(stderr=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="kubeforge-tracking-"))
    work.mkdir(parents=True, exist_ok=True)

    video = render(n_frames=args.frames, size=args.size, n_objects=args.objects, seed=args.seed)
    clip = video.write(work / "moving-shapes.mp4")
    truth = [[(b.track_id, b.box) for b in frame] for frame in video.truth]
    onnx, meta = load_model(args, work, console)
    backend = OnnxBackend(onnx, meta)

    rows: dict[str, dict[str, dict[str, float | int]]] = {"detector": {}, "truth+noise": {}}
    for method in METHODS:
        stats = VideoStats()
        preds = list(predict_video(backend, clip, threshold=args.threshold, tracker=Tracker(method, fps=video.fps),
                                   stats=stats, annotated=work / f"tracked-{method}.mp4"))
        rows["detector"][method] = {**evaluate(truth, tracks_from_predictions(preds)).to_dict(),
                                    "frames_per_s": round(stats.fps, 1)}
        tracker = Tracker(method, fps=video.fps)
        noisy = [tracker.update(p) for p in noisy_detections(video, seed=args.seed)]
        rows["truth+noise"][method] = evaluate(truth, tracks_from_predictions(noisy)).to_dict()

    table = Table(title=f"tracking on moving shapes: {args.frames} frames, {len(video.track_ids)} true tracks, "
                        f"{sum(len(f) for f in video.truth)} true boxes")
    for col in ("detections", "tracker", "HOTA", "DetA", "AssA", "MOTA", "IDF1", "ID sw", "FP", "FN", "tracks"):
        table.add_column(col, justify="left" if col in ("detections", "tracker") else "right")
    for source, by_method in rows.items():
        for method, s in by_method.items():
            table.add_row(source, method, *(f"{s[k]:.3f}" for k in ("hota", "deta", "assa", "mota", "idf1")),
                          *(str(s[k]) for k in ("id_switches", "false_positives", "misses", "predicted_tracks")))
    Console(width=140).print(table)
    console.print(f"annotated videos in {work}")
    print(json.dumps({"frames": args.frames, "true_tracks": len(video.track_ids), "threshold": args.threshold,
                      "scores": rows}))


if __name__ == "__main__":
    sys.exit(main())
