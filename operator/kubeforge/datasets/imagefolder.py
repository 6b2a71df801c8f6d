"""ImageFolder: `<root>/<class>/<image>` -> a classification dataset.

Categories are the class folder names sorted, with ids 1..K in that order (COCO's convention,
so every manifest numbers categories the same way; consumers map ids to outputs through
`Manifest.categories`, never by assuming an offset). Images may sit in sub-folders of a class
folder; files at the top level and files without an image extension are ignored.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from kubeforge.datasets.draft import IMAGE_EXTENSIONS, DatasetImportError, Draft, DraftImage
from kubeforge.datasets.manifest import Category
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    return parse_imagefolder(source, files)


def parse_imagefolder(source: Source, files: list[str]) -> Draft:
    by_class: dict[str, list[str]] = {}
    for rel in files:
        parts = rel.split("/")
        if len(parts) < 2 or PurePosixPath(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        by_class.setdefault(parts[0], []).append(rel)
    if not by_class:
        raise DatasetImportError(
            f"source {source.uri}: no images in class folders; expected <root>/<class>/<image> "
            f"with one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    names = sorted(by_class)
    categories = [Category(id=i + 1, name=name) for i, name in enumerate(names)]
    images = [
        DraftImage(path=rel, ref=rel, category_id=i + 1)
        for i, name in enumerate(names)
        for rel in sorted(by_class[name])
    ]
    return Draft(task="classification", categories=categories, images=images, origin=source.uri)
