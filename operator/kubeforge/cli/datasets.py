"""`kubeforge datasets ...`"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)
synth_app = typer.Typer(no_args_is_help=True, help="Generate seeded synthetic datasets.")
app.add_typer(synth_app, name="synth")


class SynthTask(StrEnum):
    DETECTION = "detection"
    CLASSIFICATION = "classification"


@synth_app.command("shapes")
def synth_shapes(
    out: Annotated[Path, typer.Option("--out", help="Output directory (created).")],
    images: Annotated[
        int, typer.Option("--images", min=1, help="detection: images in all; classification: images per class.")
    ] = 500,
    size: Annotated[int | None, typer.Option("--size", min=16, help="Image side in pixels [160 / 64].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    task: Annotated[SynthTask, typer.Option("--task", help="detection (COCO) or classification (ImageFolder).")] = (
        SynthTask.DETECTION
    ),
    max_objects: Annotated[int, typer.Option("--max-objects", min=1, help="detection: shapes per image, 1..N.")] = 4,
) -> None:
    """Filled circles, squares and triangles on varied backgrounds."""
    from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder

    start = time.perf_counter()
    if task is SynthTask.DETECTION:
        ann = generate_shapes_coco(out, n_images=images, size=size or 160, seed=seed, max_objects=max_objects)
        import json

        coco = json.loads(ann.read_text())
        typer.echo(
            f"wrote {len(coco['images'])} images ({size or 160}px) and {len(coco['annotations'])} annotations "
            f"in {time.perf_counter() - start:.1f}s: {ann} (COCO, images in {out / 'images'})"
        )
    else:
        root = generate_shapes_imagefolder(out, n_per_class=images, size=size or 64, seed=seed)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        typer.echo(
            f"wrote {images} images per class ({size or 64}px) for {', '.join(classes)} "
            f"in {time.perf_counter() - start:.1f}s: {root} (ImageFolder)"
        )
