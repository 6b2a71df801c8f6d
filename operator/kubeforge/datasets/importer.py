"""Import a source into the store as a dataset version.

1. parse the annotations (COCO JSON, or the ImageFolder tree): every entry is validated;
2. read every image, decode it with PIL (verify, then a full load) to learn its size and to
   catch corrupt files, and store it once by content (`Store.put_blob` deduplicates);
3. build the manifest from the images that passed; with `onInvalidImage: Skip` the others
   are recorded (file and reason) and their annotations dropped;
4. write the manifest, then stats.json (`versions.write_version`): only after every blob.

Re-imports read only what changed: `filecache` records each file's stamp (local: size and
mtime_ns; S3: size and ETag) with its blob and size, and a file whose stamp is unchanged is
neither read, hashed, decoded nor uploaded. Images are read, hashed and stored by threads
(hashlib, zlib and the S3 client release the GIL).

`check`: "full" (default) decodes every new image (verify, then load: catches truncated
data); "header" only parses the header for width and height (PIL `Image.open` without
`load()`), so a file with a valid header and damaged pixel data is accepted: the blob is
still exactly the file's bytes (its sha256), and `kubeforge datasets verify` re-hashes blobs,
but pixel-level damage surfaces only when the image is decoded for training.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

from kubeforge.api.dataset_version import DatasetStats, DatasetVersionSpec, SkippedFile
from kubeforge.datasets.coco import parse_coco
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.filecache import Entry, load_cache, save_cache
from kubeforge.datasets.formats.supervisely import parse_supervisely
from kubeforge.datasets.formats.voc import parse_voc
from kubeforge.datasets.formats.yolo import denormalize, parse_yolo
from kubeforge.datasets.imagefolder import parse_imagefolder
from kubeforge.datasets.manifest import Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.sources import Source, SourceError, open_source
from kubeforge.datasets.stats import compute_stats
from kubeforge.datasets.versions import manifest_key, write_version
from kubeforge.store.base import Store

SUPPORTED_FORMATS = ("coco", "imagefolder", "voc", "yolo", "supervisely")
# How far a box or polygon may reach past the image edge: float noise from rounding, not a real overshoot.
OUTSIDE_TOLERANCE_PX = 0.01
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


@dataclass
class ImportResult:
    manifest: Manifest
    digest: str
    manifest_key: str
    stats: DatasetStats
    skipped: list[SkippedFile]
    created: bool  # False: this version was already in the store
    reused: int = 0  # images unchanged since the last import of this source: not read again


@dataclass
class _Read:
    image: DraftImage
    blob: str = ""
    size: int = 0
    width: int = 0
    height: int = 0
    error: str = ""  # why the image is invalid; empty when it is fine
    stamp: str | None = None  # filecache stamp, when the source has one
    reused: bool = False  # unchanged since the last import: not read


def decode_size(data: bytes, check: str = "full") -> tuple[int, int]:
    """(width, height) of an encoded image; raises ValueError saying why it is unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings are not failures
            if check == "header":
                with Image.open(io.BytesIO(data)) as img:
                    return img.size
            # verify() checks the container and checksums without decoding pixels; load()
            # then decodes them, which is what catches truncated data.
            with Image.open(io.BytesIO(data)) as img:
                img.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.size
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        # PIL names the in-memory buffer by its address; drop it so reasons are stable across runs.
        reason = _OBJECT_REPR.sub("", str(exc)).strip() or type(exc).__name__
        raise ValueError(f"not a readable image: {reason}") from None


def parse_source(source: Source, spec: DatasetVersionSpec) -> Draft:
    fmt = spec.source.format
    if fmt not in SUPPORTED_FORMATS:
        raise DatasetImportError(
            f"spec.source.format {fmt!r}: not supported yet; expected one of {', '.join(SUPPORTED_FORMATS)}"
        )
    files = source.list()
    if not files:
        raise DatasetImportError(f"source {source.uri}: no files found")
    if fmt == "coco":
        return parse_coco(source, spec.source, files)
    if fmt == "voc":
        return parse_voc(source, files)
    if fmt == "yolo":
        return parse_yolo(source, files)
    if fmt == "supervisely":
        return parse_supervisely(source, files)
    return parse_imagefolder(source, files)


@dataclass
class _Cache:
    entries: dict[str, Entry]
    started_ns: int


def _read_one(source: Source, store: Store, image: DraftImage, cache: _Cache | None = None,
              check: str = "full") -> _Read:
    out = _Read(image=image)
    if image.error:
        out.error = image.error
        return out
    try:
        if cache is not None:
            out.stamp = source.stamp(image.path, cache.started_ns)
            hit = cache.entries.get(image.path)
            if out.stamp is not None and hit is not None and hit.stamp == out.stamp:
                out.blob, out.size, out.width, out.height, out.reused = hit.blob, hit.bytes, hit.width, hit.height, True
                out.error = _size_mismatch(image, out)
                return out
        data = source.read(image.path)
    except FileNotFoundError:
        out.error = "file not found"
        return out
    except SourceError as exc:  # a symlink out of the source, or a symlink loop
        out.error = str(exc).split(": ", 1)[-1]
        return out
    try:
        out.width, out.height = decode_size(data, check)
    except ValueError as exc:
        out.error = str(exc)
        return out
    out.error = _size_mismatch(image, out)
    if out.error:
        return out
    out.blob = store.put_blob(data)
    out.size = len(data)
    return out


def _size_mismatch(image: DraftImage, r: _Read) -> str:
    if (image.width is not None and image.width != r.width) or (image.height is not None and image.height != r.height):
        return f"the annotations say {image.width}x{image.height}, the image is {r.width}x{r.height} (width x height)"
    return ""


@contextmanager
def _progress(total: int, enabled: bool | None) -> Iterator[Callable[[], None]]:
    """Yields an `advance()`; rich progress on stderr only when stderr is a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    show = console.is_terminal if enabled is None else enabled
    with Progress(
        TextColumn("importing images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not show, transient=True,
    ) as bar:
        task = bar.add_task("import", total=total)
        yield lambda: bar.advance(task)


def read_images(
    source: Source, store: Store, draft: Draft, *, workers: int = 8, progress: bool | None = None,
    cache: _Cache | None = None, check: str = "full",
) -> list[_Read]:
    """Read, check and store every image, in draft order. Threads: reading is I/O bound (S3)."""
    results: list[_Read] = []
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        with _progress(len(draft.images), progress) as advance:
            for res in pool.map(lambda im: _read_one(source, store, im, cache, check), draft.images):
                results.append(res)
                advance()
    except BaseException:
        # A store failure (or Ctrl-C) stops the import now, not after every queued image.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def build_manifest(
    dataset: str, draft: Draft, reads: list[_Read], source: Source, on_invalid: str
) -> tuple[Manifest, list[SkippedFile]]:
    skipped: list[SkippedFile] = []
    images: list[ManifestImage] = []
    index: dict[object, int] = {}
    _to_pixels(draft, reads)
    _check_inside(draft, reads, source, on_invalid)
    for r in reads:
        if r.error:
            where = source.where(r.image.path)
            if on_invalid == "Fail":
                raise DatasetImportError(
                    f"{where}: {r.error} (spec.onInvalidImage is Fail; set it to Skip to leave such images out)"
                )
            skipped.append(SkippedFile(file=where, reason=r.error))
            continue
        index[r.image.ref] = len(images)
        images.append(ManifestImage(
            file_name=r.image.path, blob=r.blob, width=r.width, height=r.height, bytes=r.size,
            category_id=r.image.category_id, tags=r.image.tags,
        ))
    if not images:
        raise DatasetImportError(f"source {source.uri}: no valid images ({len(skipped)} skipped)")
    annotations: list[ManifestAnnotation] = []
    for a in draft.annotations:
        i = index.get(a.image_ref)
        if i is None:
            continue  # its image was skipped
        if isinstance(a.segmentation, dict) and a.segmentation["size"] != [images[i].height, images[i].width]:
            raise DatasetImportError(
                f"{a.where or draft.origin}: annotation id {a.ref!r}: segmentation RLE size "
                f"{a.segmentation['size']} does not match {images[i].file_name} "
                f"({images[i].height}x{images[i].width}, height x width)"
            )
        annotations.append(ManifestAnnotation(
            image=i, category_id=a.category_id, bbox=a.bbox, area=a.area or 0.0, iscrowd=a.iscrowd,
            segmentation=a.segmentation, tags=a.tags,
        ))
    manifest = Manifest(
        dataset=dataset, task=draft.task, categories=draft.categories, images=images, annotations=annotations,
    ).canonical()
    return manifest, sorted(skipped, key=lambda s: s.file)


def _outside(a: DraftAnnotation, width: int, height: int) -> str:
    """Why the annotation reaches outside a width x height image; empty when it does not."""
    tol = OUTSIDE_TOLERANCE_PX
    x, y, w, h = a.bbox
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return f"box [x={x:g}, y={y:g}, w={w:g}, h={h:g}] reaches outside the {width}x{height} image"
    if isinstance(a.segmentation, list):
        for poly in a.segmentation:
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < -tol or min(ys) < -tol or max(xs) > width + tol or max(ys) > height + tol:
                return f"polygon reaches outside the {width}x{height} image"
    return ""


def _to_pixels(draft: Draft, reads: list[_Read]) -> None:
    sizes = {r.image.ref: (r.width, r.height) for r in reads if not r.error}
    draft.annotations = [
        denormalize(a, *sizes[a.image_ref]) if a.normalized and a.image_ref in sizes else a for a in draft.annotations
    ]


def _check_inside(draft: Draft, reads: list[_Read], source: Source, on_invalid: str) -> None:
    """Every object lies inside its image: Fail raises naming the file; Skip marks the image invalid."""
    by_ref = {r.image.ref: r for r in reads if not r.error}
    for a in draft.annotations:
        r = by_ref.get(a.image_ref)
        if r is None or r.error:
            continue
        why = _outside(a, r.width, r.height)
        if not why:
            continue
        reason = f"annotation {a.ref!r}: {why}"
        if on_invalid == "Fail":
            raise DatasetImportError(
                f"{a.where or draft.origin}: {reason} ({source.where(r.image.path)}; spec.onInvalidImage is Fail; "
                "set it to Skip to leave such images out)"
            )
        r.error = reason


def import_dataset(
    spec: DatasetVersionSpec, store: Store, *, workers: int = 8, progress: bool | None = None,
    use_cache: bool = True, check: str = "full",
) -> ImportResult:
    """Import `spec.source` into `store` as a version of `spec.dataset`."""
    started_ns = time.time_ns()
    source = open_source(spec.source.uri)
    draft = parse_source(source, spec)
    cache = _Cache(load_cache(store, source.uri), started_ns) if use_cache else None
    reads = read_images(source, store, draft, workers=workers, progress=progress, cache=cache, check=check)
    manifest, skipped = build_manifest(spec.dataset, draft, reads, source, spec.on_invalid_image)
    digest, created = write_version(store, manifest)
    if use_cache:
        entries = {r.image.path: Entry(r.stamp, r.blob, r.width, r.height, r.size)
                   for r in reads if r.stamp is not None and r.blob and not r.error}
        save_cache(store, source.uri, spec.dataset, digest, entries)
    return ImportResult(
        manifest=manifest, digest=digest, manifest_key=manifest_key(store, spec.dataset, digest),
        stats=compute_stats(manifest), skipped=skipped, created=created, reused=sum(r.reused for r in reads),
    )
