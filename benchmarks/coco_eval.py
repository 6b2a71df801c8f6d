"""COCO evaluation: pycocotools, faster-coco-eval and `kubeforge eval coco` on the same files.

    .venv/bin/python benchmarks/coco_eval.py                      # 500 and 5,000 images
    .venv/bin/python benchmarks/coco_eval.py --images 50,200      # what the test runs

Data (seeded): N images of 640x480, about 8 ground-truth boxes each (Poisson) over 5 classes,
sides log-uniform from 6 to 400 px so all three COCO area ranges are well filled, 3% crowd
regions; about 50 detections an image (Poisson), 60% of them a jittered copy of a ground-truth
box (one in ten with the wrong class), the rest random boxes, scores rounded to 4 decimals so
exact ties occur. Both files are written as JSON, once per size.

Each tool runs in a fresh Python process per size, and the time is from before reading the two
JSON files to after the 12 summary numbers exist (reading, evaluate, accumulate, summarize);
interpreter start-up and imports are not counted. `kubeforge_cli` is the command a user types,
`kubeforge eval coco --gt GT --dt DT --json`, timed whole (start-up, imports and printing included).
The 12 numbers of every tool are compared with pycocotools'. A table is printed, then, as the last
line, one JSON object: `pycocotools_s`, `faster_coco_eval_s`, `kubeforge_s`, `kubeforge_cli_s`
(the largest size), per-size times and `max_abs_diff` (kubeforge, in process and by the command,
against pycocotools, largest over all sizes and the 12 numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = 5

# Each runs as `python -c CODE GT DT`; prints one JSON line {"seconds": ..., "stats": [12 floats]}.
RUNNERS = {
    "pycocotools": """
import contextlib, io, json, sys, time
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])
    ev = COCOeval(gt, dt, "bbox"); ev.evaluate(); ev.accumulate(); ev.summarize()
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "stats": [float(v) for v in ev.stats]}))
""",
    "faster_coco_eval": """
import contextlib, io, json, sys, time
from faster_coco_eval import COCO, COCOeval_faster
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])
    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.evaluate(); ev.accumulate(); ev.summarize()
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "stats": [float(v) for v in ev.stats[:12]]}))
""",
    "kubeforge": """
import json, sys, time
from kubeforge.evaluation.cocoeval import CocoEvaluator
t0 = time.perf_counter()
ev = CocoEvaluator.from_files(sys.argv[1], sys.argv[2], "bbox")
stats = ev.stats_array()
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "stats": [float(v) for v in stats]}))
""",
}


def generate(n_images: int, seed: int) -> tuple[dict, list]:
    """A COCO ground truth and results list (see the module docstring)."""
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    images = [{"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": W, "height": H} for i in range(n_images)]
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(CLASSES)]
    n_gt = rng.poisson(8, n_images)
    G = int(n_gt.sum())
    g_img = np.repeat(np.arange(n_images) + 1, n_gt)
    side_w = np.exp(rng.uniform(np.log(6), np.log(400), G))
    side_h = side_w * np.exp(rng.normal(0, 0.3, G))
    gx = rng.uniform(0, W - side_w.clip(max=W - 1))
    gy = rng.uniform(0, H - side_h.clip(max=H - 1))
    g_cat = rng.integers(1, CLASSES + 1, G)
    g_crowd = rng.random(G) < 0.03
    boxes = np.round(np.stack([gx, gy, side_w, side_h], 1), 2)
    annotations = [
        {"id": i + 1, "image_id": int(g_img[i]), "category_id": int(g_cat[i]), "bbox": boxes[i].tolist(),
         "area": float(boxes[i, 2] * boxes[i, 3]), "iscrowd": int(g_crowd[i])}
        for i in range(G)
    ]
    n_dt = rng.poisson(50, n_images)
    results = []
    gt_start = np.concatenate([[0], np.cumsum(n_gt)])
    for i in range(n_images):
        k = int(n_dt[i])
        near = (rng.random(k) < 0.6) & (n_gt[i] > 0)
        src = gt_start[i] + rng.integers(0, max(int(n_gt[i]), 1), k)
        b = np.empty((k, 4))
        c = rng.integers(1, CLASSES + 1, k)
        if near.any():
            s = src[near]
            jit = rng.normal(0, 0.08, (int(near.sum()), 4))
            b[near, 0] = boxes[s, 0] + jit[:, 0] * boxes[s, 2]
            b[near, 1] = boxes[s, 1] + jit[:, 1] * boxes[s, 3]
            b[near, 2] = boxes[s, 2] * np.exp(jit[:, 2])
            b[near, 3] = boxes[s, 3] * np.exp(jit[:, 3])
            wrong = rng.random(int(near.sum())) < 0.1
            c[near] = np.where(wrong, c[near], g_cat[s])
        far = ~near
        nf = int(far.sum())
        fw = np.exp(rng.uniform(np.log(6), np.log(400), nf))
        fh = fw * np.exp(rng.normal(0, 0.3, nf))
        b[far] = np.stack([rng.uniform(0, W - 6, nf), rng.uniform(0, H - 6, nf), fw, fh], 1)
        b = np.round(b, 2)
        score = np.round(rng.random(k) * np.where(near, 1.0, 0.6), 4)
        for j in range(k):
            results.append({"image_id": i + 1, "category_id": int(c[j]), "bbox": b[j].tolist(),
                            "score": float(score[j])})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def run_cli(gt: Path, dt: Path, env: dict[str, str]) -> dict:
    """`kubeforge eval coco --json` as a user runs it: the whole command, interpreter start-up included."""
    cli = Path(sys.executable).parent / "kubeforge"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "kubeforge.cli.main"]
    t0 = time.perf_counter()
    proc = subprocess.run([*command, "eval", "coco", "--gt", str(gt), "--dt", str(dt), "--json"],
                          capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kubeforge eval coco failed:\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    return {"seconds": seconds, "stats": [-1.0 if stats[k] is None else float(stats[k]) for k in names]}


def run_tool(tool: str, gt: Path, dt: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "operator"), str(REPO / "trainers"), os.environ.get("PYTHONPATH", "")])}
    if tool == "kubeforge_cli":
        return run_cli(gt, dt, env)
    proc = subprocess.run([sys.executable, "-c", RUNNERS[tool], str(gt), str(dt)], capture_output=True,
                          text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="500,5000", help="comma-separated image counts (default 500,5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tools", default="pycocotools,faster_coco_eval,kubeforge,kubeforge_cli")
    parser.add_argument("--workdir", type=Path, default=None, help="where the JSON files go (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.images.split(",") if s.strip()]
    tools = [t for t in args.tools.split(",") if t]
    if "pycocotools" not in tools:
        raise SystemExit("--tools must include pycocotools (the reference)")
    out: dict = {"images": sizes, "seed": args.seed, "bySize": {}}
    max_diff = {t: 0.0 for t in tools}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            gt_dict, results = generate(n, args.seed + n)
            gt_path, dt_path = work / f"gt_{n}.json", work / f"dt_{n}.json"
            gt_path.write_text(json.dumps(gt_dict))
            dt_path.write_text(json.dumps(results))
            t0 = time.perf_counter()
            times, stats = {}, {}
            for tool in tools:
                r = run_tool(tool, gt_path, dt_path)
                times[tool], stats[tool] = r["seconds"], np.array(r["stats"])
            ref = stats["pycocotools"]
            for tool in tools:
                diff = float(np.abs(stats[tool] - ref).max())
                max_diff[tool] = max(max_diff[tool], diff)
                rows.append((n, len(results), tool, times[tool], times["pycocotools"] / times[tool], diff))
            out["bySize"][str(n)] = {"detections": len(results), "groundTruth": len(gt_dict["annotations"]),
                                     **{f"{t}_s": round(times[t], 4) for t in tools},
                                     "AP": float(ref[0]), "wall_s": round(time.perf_counter() - t0, 2)}
            last = times
    print(f"{'images':>7} {'dets':>8}  {'tool':<17} {'seconds':>8} {'vs pycocotools':>15} {'max |diff|':>11}")
    for n, d, tool, sec, speed, diff in rows:
        print(f"{n:>7} {d:>8}  {tool:<17} {sec:>8.3f} {speed:>14.1f}x {diff:>11.2e}")
    for tool in tools:
        out[f"{tool}_s"] = round(last[tool], 4)
    ours = [max_diff[t] for t in ("kubeforge", "kubeforge_cli") if t in max_diff]
    out["max_abs_diff"] = max(ours) if ours else None
    out["max_abs_diff_by_tool"] = max_diff
    if "kubeforge" in tools:
        out["speedup_vs_pycocotools"] = round(last["pycocotools"] / last["kubeforge"], 2)
        if "faster_coco_eval" in tools:
            out["speedup_vs_faster_coco_eval"] = round(last["faster_coco_eval"] / last["kubeforge"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
