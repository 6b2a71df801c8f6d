"""PATH arguments of `kubeforge predict` -> `Item`s: image files, folders, S3 prefixes and videos.

Folders are walked recursively for image extensions, sorted, so runs are reproducible; an S3 prefix
(`s3://bucket/prefix`) is listed with the project's store client (endpoint and credentials from the
environment, as for every store) and each object read when its turn comes. A video file becomes its
frames (`kubeforge.predict.video`, imported only when a video is given).
Items are produced lazily: a folder of a million images is never listed into memory twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from kubeforge.predict.engine import Item, file_item
from kubeforge.predict.video import VIDEO_EXTENSIONS  # PyAV itself is imported only when a video is read

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


class SourceError(ValueError):
    """A PATH argument that is neither an image, a folder, a video nor a readable S3 prefix."""


def is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def folder_files(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted by path (hidden files and folders left out)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and is_image(p.name)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def s3_items(uri: str) -> list[Item]:
    """The images under an S3 prefix, sorted by key, each read from the store when loaded."""
    from kubeforge.models.preprocess import load_rgb
    from kubeforge.store.s3 import S3Store

    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise SourceError(f"{uri}: expected s3://bucket/prefix")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    store = S3Store.from_uri(f"s3://{bucket}", create_bucket=False)
    keys = sorted(k for k in store.list(prefix) if is_image(k))
    if not keys:
        raise SourceError(f"{uri}: no images under this prefix (extensions {sorted(IMAGE_EXTENSIONS)})")

    def item(key: str) -> Item:
        name = f"s3://{bucket}/{key}"

        def load() -> object:
            try:
                data = store.get_bytes(key)
            except KeyError:
                raise ValueError(f"{name}: the object is gone") from None
            try:
                return load_rgb(data)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

        return Item(name=name, load=load)  # type: ignore[arg-type]

    return [item(k) for k in keys]


def count(paths: Sequence[str]) -> int | None:
    """How many items `items(paths)` gives (for a progress bar), or None when a video is among them."""
    total = 0
    for raw in paths:
        if raw.startswith("s3://"):
            total += len(s3_items(raw))
        elif Path(raw).is_dir():
            total += len(folder_files(Path(raw)))
        elif is_video_path(raw):
            return None
        else:
            total += 1
    return total


def items(paths: Sequence[str], video_stride: int = 1) -> Iterator[Item]:
    """Every PATH's items, in argument order; each PATH is checked before any of it is yielded."""
    for raw in paths:
        if raw.startswith("s3://"):
            yield from s3_items(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            files = folder_files(path)
            if not files:
                raise SourceError(f"{path}: folder has no images (extensions {sorted(IMAGE_EXTENSIONS)})")
            yield from (file_item(f) for f in files)
        elif not path.exists():
            raise SourceError(f"{path}: no such file or folder")
        elif is_video_path(raw):
            from kubeforge.predict.video import frame_items  # the video part: PyAV only when a video is given

            yield from frame_items(path, stride=video_stride)
        else:
            yield file_item(path)  # any other file is tried as an image: the error names it if it is not
