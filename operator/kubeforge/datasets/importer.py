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
data; a plain PNG is checked without PIL, every chunk's CRC and its whole zlib stream, see
`_png_full_size`); "header" only parses the header for width and height (PIL `Image.open`
without `load()`), so a file with a valid header and damaged pixel data is accepted: the blob is
still exactly the file's bytes (its sha256), and `kubeforge datasets verify` re-hashes blobs,
but pixel-level damage surfaces only when the image is decoded for training.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from kubeforge.api.dataset_version import DatasetStats, DatasetVersionSpec, SkippedFile
from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage
from kubeforge.datasets.filecache import Entry, load_cache, save_cache
from kubeforge.datasets.manifest import Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.manifest_columns import ManifestColumns
from kubeforge.datasets.sources import Source, SourceError, open_source
from kubeforge.datasets.stats import compute_stats
from kubeforge.datasets.versions import manifest_key, write_version
from kubeforge.store.base import Store

# How far a box or polygon may reach past the image edge: float noise from rounding, not a real overshoot.
OUTSIDE_TOLERANCE_PX = 0.01
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


@dataclass
class ImportResult:
    version: Manifest | ManifestColumns  # columns unless a value needed pydantic (see manifest_columns)
    digest: str
    manifest_key: str
    stats: DatasetStats
    skipped: list[SkippedFile]
    created: bool  # False: this version was already in the store
    reused: int = 0  # images unchanged since the last import of this source: not read again

    @property
    def manifest(self) -> Manifest:
        """The pydantic form, made on first use (one object per image: callers that need only the
        class names use `class_names()`)."""
        if isinstance(self.version, ManifestColumns):
            self.version = self.version.to_manifest()
        return self.version

    def class_names(self) -> list[str]:
        return self.version.class_names()


@dataclass(slots=True)  # one per file: no per-instance dict
class _Read:
    image: DraftImage
    blob: str = ""
    size: int = 0
    width: int = 0
    height: int = 0
    error: str = ""  # why the image is invalid; empty when it is fine
    stamp: str | None = None  # filecache stamp, when the source has one
    reused: bool = False  # unchanged since the last import: not read


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) pairs PIL opens (PngImagePlugin._MODES), palette images aside.
_PNG_MODES = {(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 4), (16, 4), (8, 6), (16, 6)}
# Chunks before IDAT that PIL only records (no validation beyond the CRC) in `Image.open`.
_PNG_PLAIN_CHUNKS = {b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"tIME", b"sBIT", b"bKGD", b"tEXt"}
_PNG_MAX_PIXELS = 89_478_485  # PIL's MAX_IMAGE_PIXELS: above it PIL warns or refuses; let it decide


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG whose header PIL's `Image.open` would accept, or None: ask PIL.

    What `Image.open` checks, without its ~50 us of set-up per file: the signature, an IHDR
    first with a supported mode and filter method 0, and the CRC of every chunk before the
    first IDAT (PIL checks those too). Anything unusual (palettes, ICC profiles, compressed
    text, a truncated or damaged header) returns None so PIL decides, with its own message:
    this never accepts a file PIL would refuse.
    """
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE):
        return None
    pos, end = 8, len(data)
    width = height = 0
    while pos + 8 <= end:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if ctype == b"IDAT":
            return (width, height) if width else None
        body_end = pos + 8 + length
        if body_end + 4 > end:
            return None
        if zlib.crc32(memoryview(data)[pos + 4:body_end]) != struct.unpack_from(">I", data, body_end)[0]:
            return None
        if pos == 8:
            if ctype != b"IHDR" or length != 13:
                return None
            width, height, depth, colour, _compression, filter_method = struct.unpack_from(">IIBBBB", data, pos + 8)
            if ((depth, colour) not in _PNG_MODES or filter_method != 0 or not 0 < width < 2**31
                    or not 0 < height < 2**31 or width * height > _PNG_MAX_PIXELS):
                return None
        elif ctype not in _PNG_PLAIN_CHUNKS:
            return None
        pos = body_end + 4
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_full_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a plain PNG whose every byte checks out, or None: ask PIL.

    `--check full` without PIL's set-up and pixel unpacking, for the common case only: what
    `_png_header_size` accepts, not interlaced; every chunk's CRC (PIL's verify), only IDAT and
    the plain chunks up to a final IEND, the zlib stream complete (its Adler-32 checked) and
    exactly height x (1 + row bytes) long, every row's filter type 0-4 (what PIL's load()
    would find wrong). It only accepts: anything else, damage included, goes to PIL, which
    decides with its own message.
    """
    size = _png_header_size(data)
    if size is None or data[28] != 0:  # IHDR interlace method: Adam7 rows have other lengths
        return None
    width, height = size
    depth, colour = data[24], data[25]
    row = (width * depth * _PNG_CHANNELS[colour] + 7) // 8
    expected = height * (row + 1)
    inflate = zlib.decompressobj()
    got = 0
    filters_ok = True
    pos, end = 8, len(data)
    seen_idat = False
    while pos + 12 <= end:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        body_end = pos + 8 + length
        if body_end + 4 > end:
            return None
        if zlib.crc32(memoryview(data)[pos + 4:body_end]) != struct.unpack_from(">I", data, body_end)[0]:
            return None
        if ctype == b"IEND":
            if not seen_idat or body_end + 4 != end or not inflate.eof or inflate.unused_data or got != expected:
                return None
            return (width, height) if filters_ok else None
        if ctype == b"IDAT":
            seen_idat = True
            out = inflate.decompress(memoryview(data)[pos + 8:body_end], expected - got + 1)
            if inflate.unconsumed_tail or len(out) + got > expected:
                return None  # more pixel data than the header allows
            # Filter bytes sit at multiples of row + 1 in the whole stream.
            first = (-got) % (row + 1)
            if max(out[first::row + 1], default=0) > 4:
                filters_ok = False
            got += len(out)
        elif pos != 8 and ctype not in _PNG_PLAIN_CHUNKS:
            return None
        pos = body_end + 4
    return None


def decode_size(data: bytes, check: str = "full") -> tuple[int, int]:
    """(width, height) of an encoded image; raises ValueError saying why it is unreadable."""
    size = _png_header_size(data) if check == "header" else _png_full_size(data)
    if size is not None:
        return size
    from PIL import Image  # here, not at module level: most imports never need it (start-up)

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
    from kubeforge.datasets.formats.registry import SOURCE_FORMATS, parser

    fmt = spec.source.format
    if fmt not in SOURCE_FORMATS:
        raise DatasetImportError(
            f"spec.source.format {fmt!r}: not supported yet; expected one of {', '.join(SOURCE_FORMATS)}"
        )
    from kubeforge.datasets.names import screen_names

    files = source.list()
    if not files:
        raise DatasetImportError(f"source {source.uri}: no files found")
    files, unsafe = screen_names(source, files, spec.on_invalid_image)
    draft = parser(fmt)(source, spec.source, files)
    draft.skipped.extend(unsafe)
    return draft


@dataclass
class _Cache:
    entries: dict[str, Entry]
    started_ns: int


def _unreadable(exc: FileNotFoundError | SourceError) -> str:
    """An image's error when its source cannot give it: missing, or a symlink out of the source
    or in a loop (the source's message without its location)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return str(exc).split(": ", 1)[-1]


def _lookup(source: Source, image: DraftImage, cache: _Cache | None) -> _Read | None:
    """The read of `image` when it needs no reading (a parser's error, an unchanged file, a stamp
    that cannot be taken); None when it must be read. One stat, in the calling thread."""
    out = _Read(image=image)
    if image.error:
        out.error = image.error
        return out
    if cache is None:
        return None
    try:
        out.stamp = source.stamp(image.path, cache.started_ns)
    except (FileNotFoundError, SourceError) as exc:
        out.error = _unreadable(exc)
        return out
    hit = cache.entries.get(image.path)
    if out.stamp is not None and hit is not None and hit.stamp == out.stamp:
        out.blob, out.size, out.width, out.height, out.reused = hit.blob, hit.bytes, hit.width, hit.height, True
        out.error = _size_mismatch(image, out)
        return out
    return None


def _read_one(source: Source, store: Store, image: DraftImage, cache: _Cache | None = None,
              check: str = "full") -> _Read:
    out = _Read(image=image)
    if image.error:
        out.error = image.error
        return out
    try:
        if cache is not None:
            out.stamp = source.stamp(image.path, cache.started_ns)
        data = source.read(image.path)
    except (FileNotFoundError, SourceError) as exc:
        out.error = _unreadable(exc)
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
def _progress(total: int, enabled: bool | None) -> Iterator[Callable[[int], None]]:
    """Yields an `advance(n)`; rich progress on stderr only when stderr is a terminal."""
    import sys

    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        yield lambda n: None  # no bar: do not even import rich (start-up time)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    show = console.is_terminal if enabled is None else enabled
    with Progress(
        TextColumn("importing images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=not show, transient=True,
    ) as bar:
        task = bar.add_task("import", total=total)
        yield lambda n: bar.advance(task, n)


def default_workers(source: Source, store: Store) -> int:
    """Threads for reading, hashing and storing images.

    A remote source or store (S3) waits on the network: 16 threads overlap the requests. Local
    files are CPU bound (hashing; file creation in the kernel), so more threads than cores only
    contend for the GIL: measured on 2 cores, 8 threads were slower than 1.
    """
    from kubeforge.datasets.sources import LocalSource
    from kubeforge.store.local import LocalStore

    inner = getattr(store, "inner", store)  # a GuardedStore passes blobs through to its inner store
    if isinstance(source, LocalSource) and isinstance(inner, LocalStore):
        return max(1, min(4, os.cpu_count() or 1))
    return 16


@contextmanager
def _blob_index(store: Store, misses: int) -> Iterator[None]:
    """A remote store that can list its blobs (S3) does it once when many may be new (`misses`
    files to read), instead of a request per blob to ask whether it is there; for this import
    only (`S3Store.index_blobs`, `forget_blobs`)."""
    inner = getattr(store, "inner", store)
    index = getattr(inner, "index_blobs", None)
    if index is None or misses < 64:
        yield
        return
    index(limit=max(10_000, 200 * misses))
    try:
        yield
    finally:
        inner.forget_blobs()


_CHUNK = 64  # images per pool task: a future per image costs more than a cached image's check


def read_images(
    source: Source, store: Store, draft: Draft, *, workers: int | None = None, progress: bool | None = None,
    cache: _Cache | None = None, check: str = "full",
) -> list[_Read]:
    """Read, check and store every image, in draft order. Unchanged files (the import cache) are
    settled first, a stat each in this thread; the others are read by threads: reading is I/O
    bound (S3), and hashlib, zlib and file writes release the GIL. `workers` None: `default_workers`."""
    if workers is None:
        workers = default_workers(source, store)
    images = draft.images
    results: list[_Read | None] = [_lookup(source, im, cache) for im in images]
    todo = [i for i, r in enumerate(results) if r is None]
    # Up to _CHUNK images a task, but enough tasks to keep every thread busy (a small S3 import).
    size = max(1, min(_CHUNK, -(-len(todo) // (4 * workers))))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]

    def run(chunk: list[int]) -> list[_Read]:
        return [_read_one(source, store, images[i], cache, check) for i in chunk]

    with _progress(len(images), progress) as advance, _blob_index(store, len(todo)):
        advance(len(images) - len(todo))
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                for i, r in zip(chunk, run(chunk), strict=True):
                    results[i] = r
                advance(len(chunk))
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                for chunk, res in zip(chunks, pool.map(run, chunks), strict=True):
                    for i, r in zip(chunk, res, strict=True):
                        results[i] = r
                    advance(len(res))
            except BaseException:
                # A store failure (or Ctrl-C) stops the import now, not after every queued image.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
    return results  # type: ignore[return-value]  # every slot filled


def _valid_reads(draft: Draft, reads: list[_Read], source: Source, on_invalid: str
                 ) -> tuple[list[_Read], list[SkippedFile]]:
    """The reads that make the version (in draft order), and the skipped files: the same checks
    and messages for both ways of building the manifest."""
    skipped = [SkippedFile(file=where, reason=why) for where, why in draft.skipped]
    _to_pixels(draft, reads)
    _check_inside(draft, reads, source, on_invalid)
    valid = []
    for r in reads:
        if r.error:
            where = source.where(r.image.path)
            if on_invalid == "Fail":
                raise DatasetImportError(
                    f"{where}: {r.error} (spec.onInvalidImage is Fail; set it to Skip to leave such images out)"
                )
            skipped.append(SkippedFile(file=where, reason=r.error))
            continue
        valid.append(r)
    if not valid:
        raise DatasetImportError(f"source {source.uri}: no valid images ({len(skipped)} skipped)")
    return valid, skipped


def _check_rle(draft: Draft, a: DraftAnnotation, r: _Read) -> None:
    if isinstance(a.segmentation, dict) and a.segmentation["size"] != [r.height, r.width]:
        raise DatasetImportError(
            f"{a.where or draft.origin}: annotation id {a.ref!r}: segmentation RLE size "
            f"{a.segmentation['size']} does not match {r.image.path} "
            f"({r.height}x{r.width}, height x width)"
        )


def build_version(
    dataset: str, draft: Draft, reads: list[_Read], source: Source, on_invalid: str
) -> tuple[Manifest | ManifestColumns, list[SkippedFile]]:
    """The version as canonical columns (no object per image); the pydantic `Manifest` (validated)
    when a value is not plain (see manifest_columns). Both give the same digest for the same content."""
    valid, skipped = _valid_reads(draft, reads, source, on_invalid)
    index = {r.image.ref: i for i, r in enumerate(valid)}
    anns = []
    for a in draft.annotations:
        i = index.get(a.image_ref)
        if i is None:
            continue  # its image was skipped
        _check_rle(draft, a, valid[i])
        anns.append((i, a.category_id, a.bbox, a.area, a.iscrowd, a.segmentation, a.tags))
    columns = ManifestColumns.from_values(
        dataset, draft.task, draft.categories, [r.image.path for r in valid], [r.blob for r in valid],
        [r.width for r in valid], [r.height for r in valid], [r.size for r in valid],
        [r.image.category_id for r in valid], [r.image.tags for r in valid], anns,
    )
    if columns is None:
        return _pydantic_manifest(dataset, draft, valid), sorted(skipped, key=lambda s: s.file)
    return columns, sorted(skipped, key=lambda s: s.file)


def build_manifest(
    dataset: str, draft: Draft, reads: list[_Read], source: Source, on_invalid: str
) -> tuple[Manifest, list[SkippedFile]]:
    """The pydantic way (one validated object per image and annotation): the reference the columns
    are compared with (tests), and the fallback for values that are not plain."""
    valid, skipped = _valid_reads(draft, reads, source, on_invalid)
    return _pydantic_manifest(dataset, draft, valid), sorted(skipped, key=lambda s: s.file)


def _pydantic_manifest(dataset: str, draft: Draft, valid: list[_Read]) -> Manifest:
    images: list[ManifestImage] = []
    index: dict[object, int] = {}
    for r in valid:
        index[r.image.ref] = len(images)
        images.append(ManifestImage(
            file_name=r.image.path, blob=r.blob, width=r.width, height=r.height, bytes=r.size,
            category_id=r.image.category_id, tags=r.image.tags,
        ))
    annotations: list[ManifestAnnotation] = []
    for a in draft.annotations:
        i = index.get(a.image_ref)
        if i is None:
            continue  # its image was skipped
        _check_rle(draft, a, valid[i])
        annotations.append(ManifestAnnotation(
            image=i, category_id=a.category_id, bbox=a.bbox, area=a.area or 0.0, iscrowd=a.iscrowd,
            segmentation=a.segmentation, tags=a.tags,
        ))
    return Manifest(
        dataset=dataset, task=draft.task, categories=draft.categories, images=images, annotations=annotations,
    ).canonical()


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
    if not any(a.normalized for a in draft.annotations):
        return
    from kubeforge.datasets.formats.yolo import denormalize

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
    spec: DatasetVersionSpec, store: Store, *, workers: int | None = None, progress: bool | None = None,
    use_cache: bool = True, check: str = "full",
) -> ImportResult:
    """Import `spec.source` into `store` as a version of `spec.dataset`."""
    started_ns = time.time_ns()
    source = open_source(spec.source.uri)
    draft = parse_source(source, spec)
    cache = _Cache(load_cache(store, source.uri), started_ns) if use_cache else None
    reads = read_images(source, store, draft, workers=workers, progress=progress, cache=cache, check=check)
    version, skipped = build_version(spec.dataset, draft, reads, source, spec.on_invalid_image)
    digest, created = write_version(store, version)
    if use_cache:
        entries = {r.image.path: Entry(r.stamp, r.blob, r.width, r.height, r.size)
                   for r in reads if r.stamp is not None and r.blob and not r.error}
        save_cache(store, source.uri, spec.dataset, digest, entries)
    stats = version.stats() if isinstance(version, ManifestColumns) else compute_stats(version)
    return ImportResult(
        version=version, digest=digest, manifest_key=manifest_key(store, spec.dataset, digest),
        stats=stats, skipped=skipped, created=created, reused=sum(r.reused for r in reads),
    )
