"""`kubeforge datasets ...`"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kubeforge.cli.version_ref import VERSION_HELP, NamespaceOption, StateOption, StoreOption
from kubeforge.datasets.formats.registry import EXPORT_FORMATS, SOURCE_FORMATS

app = typer.Typer(no_args_is_help=True)
synth_app = typer.Typer(no_args_is_help=True, help="Generate seeded synthetic datasets.")
app.add_typer(synth_app, name="synth")



def _store_uri(option: str | None) -> str:
    """The same store `kubeforge run` uses, so imported versions are found by the runner."""
    from kubeforge.local.state import local_store_uri

    return local_store_uri(option)


class SynthTask(StrEnum):
    DETECTION = "detection"
    CLASSIFICATION = "classification"


@synth_app.command("shapes")
def synth_shapes(
    out: Annotated[Path, typer.Option("--out", help="Output directory (created).")],
    images: Annotated[
        int, typer.Option("--images", min=1, help="detection: images in all; classification: images per class.")
    ] = 500,
    size: Annotated[int | None, typer.Option(
        "--size", min=16, help="Image side in pixels (default: 160 for detection, 64 for classification).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    task: Annotated[SynthTask, typer.Option("--task", help="detection (COCO) or classification (ImageFolder).")] = (
        SynthTask.DETECTION
    ),
    max_objects: Annotated[int, typer.Option("--max-objects", min=1, help="detection: shapes per image, 1..N.")] = 4,
    splits: Annotated[str | None, typer.Option(
        "--splits", help="detection: write the standard COCO layout with these splits, e.g. train,val: "
        "annotations/instances_<split>.json and the images in <split>/ (every 5th image to val, the one "
        "before it to test, the rest to train).")] = None,
) -> None:
    """Filled circles, squares and triangles on varied backgrounds."""
    from kubeforge.api.dataset_operations import SPLIT_TAGS
    from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder

    start = time.perf_counter()
    if splits is not None:
        wanted = [s.strip() for s in splits.split(",") if s.strip()]
        if task is not SynthTask.DETECTION or not wanted or "train" not in wanted \
                or not set(wanted) <= set(SPLIT_TAGS):
            typer.echo(f"error: --splits {splits!r}: expected train and any of val, test (detection only)", err=True)
            raise typer.Exit(2)
        counts = _coco_splits(out, wanted, images, size or 160, seed, max_objects)
        typer.echo(f"wrote {images} images ({size or 160}px) in the COCO split layout in "
                   f"{time.perf_counter() - start:.1f}s: " + ", ".join(
                       f"{out / 'annotations' / f'instances_{s}.json'} ({n} images in {out / s})"
                       for s, n in counts.items()))
        return
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


@synth_app.command("video")
def synth_video(
    out: Annotated[Path, typer.Option("--out", help="The MP4 to write; its true tracks go beside it as "
                                      "<stem>.gt.txt (MOTChallenge).", dir_okay=False)],
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames in the video.")] = 120,
    objects: Annotated[int, typer.Option("--objects", min=1, help="Shapes that cross the video.")] = 7,
    size: Annotated[int, typer.Option("--size", min=32, help="Frame side in pixels.")] = 128,
    fps: Annotated[int, typer.Option("--fps", min=1, help="Frames per second.")] = 25,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same video.")] = 0,
) -> None:
    """Shapes moving across a video (entering, crossing, leaving), drawn like `synth shapes`, with true tracks."""
    from kubeforge.datasets.synth_video import render

    start = time.perf_counter()
    video = render(n_frames=frames, size=size, n_objects=objects, seed=seed, fps=fps)
    out.parent.mkdir(parents=True, exist_ok=True)
    video.write(out)
    truth = video.write_truth(out.with_name(f"{out.stem}.gt.txt"))
    typer.echo(f"wrote {frames} frames ({size}px, {fps} fps) with {len(video.track_ids)} true tracks in "
               f"{time.perf_counter() - start:.1f}s: {out}, tracks in {truth}")


def _coco_splits(out: Path, splits: list[str], n_images: int, size: int, seed: int, max_objects: int
                 ) -> dict[str, int]:
    """The shapes of `synth shapes` (same seed, same images) in the standard COCO layout: images in
    `<split>/`, `annotations/instances_<split>.json` naming them by file name; image i goes to val when
    i % 5 == 4, to test when i % 5 == 3, else to train (splits not asked for fall to train)."""
    import json
    import shutil
    import tempfile

    from kubeforge.datasets.synth import generate_shapes_coco

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".synth-", dir=out) as tmp:
        coco = json.loads(generate_shapes_coco(Path(tmp), n_images=n_images, size=size, seed=seed,
                                               max_objects=max_objects).read_text())
        by_split: dict[str, list[dict]] = {s: [] for s in splits}
        for i, image in enumerate(coco["images"]):
            split = {4: "val", 3: "test"}.get(i % 5, "train")
            by_split[split if split in by_split else "train"].append(image)
        (out / "annotations").mkdir(exist_ok=True)
        for split, images in by_split.items():
            (out / split).mkdir(exist_ok=True)
            for image in images:
                shutil.move(Path(tmp) / "images" / image["file_name"], out / split / image["file_name"])
            ids = {image["id"] for image in images}
            doc = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
            (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc, separators=(",", ":")))
    return {split: len(images) for split, images in by_split.items()}


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="A local directory or s3://bucket/prefix/.")],
    dataset: Annotated[str, typer.Option("--dataset", help="The dataset this is a version of.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(SOURCE_FORMATS)}.")] = "coco",
    store: StoreOption = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Leave corrupt images out (and list them) instead of failing.")
    ] = False,
    check: Annotated[str, typer.Option(
        "--check", help="full: decode every new image; header: read only its header for the size (faster).")] = "full",
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Read every file, even those unchanged since the last import of this source.")] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Threads reading, hashing and storing (default: the cores, up to 4, for a local "
        "source and store; 16 with S3).")] = None,
) -> None:
    """Import a source as a dataset version (what the dataset-version step does), without a cluster."""
    from pydantic import ValidationError

    from kubeforge.api.dataset_version import DatasetVersionSpec
    from kubeforge.datasets.draft import DatasetImportError
    from kubeforge.datasets.importer import import_dataset
    from kubeforge.datasets.integrity import IntegrityError, guarded_write
    from kubeforge.datasets.sources import SourceError
    from kubeforge.store import StoreError, open_store

    try:
        spec = DatasetVersionSpec.model_validate({
            "dataset": dataset, "source": {"uri": source, "format": fmt},
            "onInvalidImage": "Skip" if skip_invalid else "Fail",
        })
        st = open_store(_store_uri(store))
        with guarded_write(st, f"datasets import {dataset}") as guarded:  # safe against a concurrent gc
            if check not in ("full", "header"):
                raise DatasetImportError(f"--check {check!r}: expected full or header")
            result = import_dataset(spec, guarded, check=check, use_cache=not no_cache, workers=workers)
    except (ValidationError, DatasetImportError, SourceError, StoreError, IntegrityError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for s in result.skipped:
        typer.echo(f"skipped {s.file}: {s.reason}", err=True)
    state = "imported" if result.created else "already in the store"
    typer.echo(
        f"{state}: {dataset}@{result.digest} ({result.stats.images} images, {result.stats.annotations} "
        f"annotations, classes {', '.join(result.class_names())}; {result.reused} unchanged files "
        f"not read again)\n{st.url(result.manifest_key)}"
    )


@app.command("export")
def export(
    version: Annotated[str, typer.Argument(help=VERSION_HELP)],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(EXPORT_FORMATS)}.")],
    out: Annotated[str, typer.Option("--out", help="A new (or empty) directory, or s3://bucket/prefix/.")],
    store: StoreOption = None,
    state_dir: StateOption = None,
    namespace: NamespaceOption = "default",
) -> None:
    """Write a stored version in a dataset format, images fetched from the store's blobs."""
    from kubeforge.cli.version_ref import resolve_version
    from kubeforge.datasets.export import ExportError, export_version
    from kubeforge.datasets.versions import CorruptManifestError
    from kubeforge.store import StoreError

    try:
        found = resolve_version(version, store=store, state_dir=state_dir, namespace=namespace)
        result = export_version(found.store, found.dataset, found.digest, fmt, out)
    except (ExportError, CorruptManifestError, StoreError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for what, count in sorted(result.losses.items()):
        typer.echo(f"not representable in {fmt}: {what} ({count})", err=True)
    typer.echo(f"exported {found.dataset}@{found.digest[:12]} as {fmt}: {result.images} images, {result.files} files\n"
               f"{result.location}")


@app.command("checkout")
def checkout(
    version: Annotated[str, typer.Argument(help=VERSION_HELP)],
    folder: Annotated[Path, typer.Argument(help="The working folder: made exactly the version's files.")],
    store: StoreOption = None,
    state_dir: StateOption = None,
    namespace: NamespaceOption = "default",
    force: Annotated[bool, typer.Option("--force", help="Also into a non-empty unknown folder.")] = False,
) -> None:
    """Restore a version's files into a folder in place, writing only those that differ (like `dvc checkout`)."""
    from kubeforge.cli.version_ref import resolve_version
    from kubeforge.datasets.checkout import CheckoutError, checkout_version
    from kubeforge.datasets.export import ExportError
    from kubeforge.datasets.versions import CorruptManifestError
    from kubeforge.store import StoreError

    try:
        found = resolve_version(version, store=store, state_dir=state_dir, namespace=namespace)
        result = checkout_version(found.store, found.dataset, found.digest, folder, force=force)
    except KeyError:
        typer.echo(f"error: {version}: not in the store", err=True)
        raise typer.Exit(1) from None
    except (CheckoutError, ExportError, CorruptManifestError, StoreError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"checked out {found.dataset}@{found.digest[:12]}: {result.files} files, {result.written} written, "
               f"{result.removed} removed\n{result.folder}")


@app.command("inspect")
def inspect(
    version: Annotated[str, typer.Argument(
        help=f"{VERSION_HELP} A dataset name alone lists its versions.", metavar="VERSION")],
    digest: Annotated[str | None, typer.Argument(
        help="Deprecated: `DATASET DIGEST` is read as DATASET@DIGEST.", show_default=False)] = None,
    store: StoreOption = None,
    state_dir: StateOption = None,
    namespace: NamespaceOption = "default",
) -> None:
    """Show a version's classes, counts and splits; or list a dataset's versions."""
    from rich.console import Console
    from rich.table import Table

    from kubeforge.cli.version_ref import VersionRefError, resolve_version
    from kubeforge.datasets.stats import compute_stats
    from kubeforge.datasets.versions import CorruptManifestError, list_versions, load_manifest
    from kubeforge.local.state import local_store_uri
    from kubeforge.store import StoreError, open_store

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(1)

    if digest is not None:
        typer.echo(f"note: `datasets inspect {version} {digest}` is deprecated; write "
                   f"`datasets inspect {version}@{digest}`", err=True)
        version = f"{version}@{digest}"
    try:
        if "@" not in version:
            # A DatasetVersion name of the local state, else a dataset name: list its versions.
            st = open_store(local_store_uri(store, state_dir))
            versions = list_versions(st, version)
            try:
                found = resolve_version(version, store=store, state_dir=state_dir, namespace=namespace)
            except VersionRefError as exc:
                if not versions:
                    raise fail(f"{exc}; and no dataset {version!r} in {st.uri} to list") from None
                typer.echo("\n".join(versions))
                return
        else:
            found = resolve_version(version, store=store, state_dir=state_dir, namespace=namespace)
        manifest = load_manifest(found.store, found.dataset, found.digest)
    except KeyError:
        raise fail(f"no version {version.partition('@')[2] or version} of dataset "
                   f"{version.partition('@')[0]!r} in {local_store_uri(store, state_dir)}") from None
    except (ValueError, CorruptManifestError, StoreError) as exc:
        raise fail(str(exc)) from None
    stats = compute_stats(manifest)
    typer.echo(f"{found.dataset}@{found.digest}: {manifest.task}, {stats.images} images, {stats.total_bytes} bytes")
    from kubeforge.api.dataset_operations import SPLIT_TAGS

    splits = {name: 0 for name in (*SPLIT_TAGS, "untagged")}
    for img in manifest.images:
        tagged = [t for t in SPLIT_TAGS if t in img.tags]
        for t in tagged or ["untagged"]:
            splits[t] += 1
    typer.echo("splits: " + ", ".join(f"{n} {name}" for name, n in splits.items())
               + ("" if splits["train"] or splits["val"] else " (none recorded: training splits at random)"))
    table = Table()
    for col in ("id", "class", "objects", "images"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for cat in manifest.categories:
        table.add_row(str(cat.id), cat.name, str(stats.objects_per_class.get(cat.name, 0)),
                      str(stats.images_per_class.get(cat.name, 0)))
    Console().print(table)


@app.command("truth")
def truth(
    annotations: Annotated[Path, typer.Argument(help="A COCO instances JSON.", exists=True, dir_okay=False)],
    images: Annotated[list[str], typer.Argument(help="Image file names as written in the JSON.")],
) -> None:
    """Print the ground-truth boxes of images in a COCO file (to hold beside `kubeforge predict`)."""
    import json

    from rich.console import Console
    from rich.table import Table

    try:
        coco = json.loads(annotations.read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        by_name = {img["file_name"]: img["id"] for img in coco["images"]}
    except (ValueError, KeyError, TypeError) as exc:
        typer.echo(f"error: {annotations}: not a COCO instances file ({exc})", err=True)
        raise typer.Exit(1) from None
    table = Table(title="ground truth")
    for col in ("image", "class", "box (x1, y1, x2, y2)"):
        table.add_column(col)
    for image in images:
        if image not in by_name:
            typer.echo(f"error: {annotations}: no image {image!r}", err=True)
            raise typer.Exit(1)
        anns = [a for a in coco.get("annotations", []) if a["image_id"] == by_name[image]]
        for i, ann in enumerate(anns):
            x, y, w, h = ann["bbox"]
            table.add_row(image if i == 0 else "", names.get(ann["category_id"], str(ann["category_id"])),
                          f"{x:.1f}, {y:.1f}, {x + w:.1f}, {y + h:.1f}")
    Console().print(table)


# diff, verify, gc, lineage: in their own module (data versioning), registered here.
from kubeforge.cli.dataset_versions import register as _register_versions  # noqa: E402

_register_versions(app)
