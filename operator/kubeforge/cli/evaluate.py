"""`kubeforge eval coco --gt GT.json --dt DT.json [--iou-type bbox|segm] [--json]`: the COCO suite of any
framework's results, with the numbers of pycocotools (see kubeforge/evaluation/cocoeval.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("coco")
def coco(
    gt: Annotated[Path, typer.Option("--gt", help="COCO ground truth (images, annotations, categories).")],
    dt: Annotated[Path, typer.Option("--dt", help="COCO results: a JSON list of detections.")],
    iou_type: Annotated[str, typer.Option("--iou-type", help="bbox or segm.")] = "bbox",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the last line).")] = False,
) -> None:
    """Evaluate a COCO results file against a COCO ground truth: AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l."""
    from kubeforge.evaluation.cocoeval import CocoEvaluator, CocoInputError, summary_lines

    if iou_type not in ("bbox", "segm"):
        print(f"--iou-type: expected bbox or segm, got {iou_type!r}", file=sys.stderr)
        raise typer.Exit(2)
    try:
        evaluator = CocoEvaluator.from_files(gt, dt, iou_type)  # type: ignore[arg-type]
        stats = evaluator.stats()
    except CocoInputError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(2) from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        # Input no check above foresaw: still one line, naming both files.
        print(f"{gt}, {dt}: cannot evaluate ({type(exc).__name__}: {exc})".splitlines()[0], file=sys.stderr)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(stats))
        return
    print(f"{len(evaluator.image_ids)} images, {len(evaluator.category_ids)} categories, iouType={iou_type}")
    for line in summary_lines(stats):
        print(line)
