"""ImageFolder: `<root>/<class>/<image>` -> a classification dataset.

Categories are the class folder names sorted, with ids 1..K in that order (COCO's convention,
so every manifest numbers categories the same way; consumers map ids to outputs through
`Manifest.categories`, never by assuming an offset). Images may sit in sub-folders of a class
folder (as torchvision's ImageFolder reads them); files without an image extension are ignored.

Split folders: when every top-level folder holding images is a split name (`train`, `val`,
`valid`, `validation`, `test`), the layout is `<root>/<split>/<class>/<image>`: classes are the
folders below the splits, and each image's split is recorded as its image tag.

Images outside the class folders (at the top level, or directly in a split folder) are invalid:
they fail the import, or with `onInvalidImage: Skip` are left out and listed, with a message
naming the file and the layout expected. A class folder holding no images is noted in
status.skipped (the class is left out; no image is lost).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from kubeforge.datasets.draft import IMAGE_EXTENSIONS, DatasetImportError, Draft, DraftImage
from kubeforge.datasets.manifest import Category
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

# The split folder names and the tag each records (formats/common.SPLIT_NAMES; kept here so an
# ImageFolder import does not load numpy).
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_imagefolder(source, files)


def _is_image(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in IMAGE_EXTENSIONS


def parse_imagefolder(source: Source, files: list[str]) -> Draft:
    images = [rel for rel in files if _is_image(rel)]
    tops = {rel.split("/")[0] for rel in images if "/" in rel}
    splits = sorted(t for t in tops if t in SPLIT_FOLDERS)
    if splits and len(splits) != len(tops):
        others = sorted(tops - set(splits))
        raise DatasetImportError(
            f"source {source.uri}: top-level folders {', '.join(splits)} are split folders but "
            f"{', '.join(others[:5])} {'is' if len(others) == 1 else 'are'} not; expected either "
            "<root>/<class>/<image> or <root>/<split>/<class>/<image> (split: train, val, test)"
        )
    depth = 1 if splits else 0  # the class folder's position in the path
    expected = "<root>/<split>/<class>/<image>" if splits else "<root>/<class>/<image>"
    by_class: dict[str, list[str]] = {}
    outside: list[str] = []
    for rel in images:
        parts = rel.split("/")
        if len(parts) < depth + 2:
            outside.append(rel)
            continue
        by_class.setdefault(parts[depth], []).append(rel)
    if not by_class:
        raise DatasetImportError(
            f"source {source.uri}: no images in class folders; expected {expected} "
            f"with one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
            + (f" (found {len(outside)} outside them, e.g. {source.where(outside[0])})" if outside else "")
        )
    names = sorted(by_class)
    categories = [Category(id=i + 1, name=name) for i, name in enumerate(names)]
    draft_images = [
        DraftImage(path=rel, ref=rel, category_id=i + 1,
                   tags=[SPLIT_FOLDERS[rel.split("/")[0]]] if splits else [])
        for i, name in enumerate(names)
        for rel in sorted(by_class[name])
    ]
    where = "directly in a split folder" if splits else "at the top level"
    draft_images += [
        DraftImage(path=rel, ref=rel, error=f"an image outside the class folders ({where}): its class is unknown; "
                   f"expected {expected}")
        for rel in outside
    ]
    draft = Draft(task="classification", categories=categories, images=draft_images, origin=source.uri)
    draft.skipped.extend(_empty_class_folders(source, files, images, depth, set(by_class)))
    return draft


def _empty_class_folders(source: Source, files: list[str], images: list[str], depth: int,
                         classes: set[str]) -> list[tuple[str, str]]:
    """(folder, note) for each class folder that holds files but no image: the class is left out."""
    image_set = set(images)
    others: dict[str, list[str]] = {}
    for rel in files:
        parts = rel.split("/")
        if rel in image_set or len(parts) < depth + 2:
            continue
        if depth and parts[0] not in SPLIT_FOLDERS:
            continue
        folder = "/".join(parts[:depth + 1])
        if parts[depth] not in classes:
            others.setdefault(folder, []).append(rel)
    return [
        (source.where(folder + "/"),
         f"class folder without images ({len(rels)} other file{'s' if len(rels) > 1 else ''}, e.g. "
         f"{PurePosixPath(rels[0]).name}): class {PurePosixPath(folder).name!r} is left out; expected images "
         f"with one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
        for folder, rels in sorted(others.items())
    ]
