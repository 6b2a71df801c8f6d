"""Every source format: its parser and its exporter, imported only when that format is used.

One table, so the API's `spec.source.format`, the importer, `kubeforge datasets export` and the
docs agree on the names. Parsers are imported lazily: the CLI's start-up is timed against
`dvc add`, and numpy (COCO RLE, masks) alone costs about 0.1 s.

A parser is `parse(source, spec_source, files) -> Draft`: it reads only the annotation files,
checks every entry against the format's declarations and names the file and entry of each
defect (`DatasetImportError`). A writer is `write(manifest, tree)`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource
    from kubeforge.datasets.draft import Draft
    from kubeforge.datasets.formats.tree import ExportTree
    from kubeforge.datasets.manifest import Manifest
    from kubeforge.datasets.sources import Source

# format name -> "module:function"
PARSERS: dict[str, str] = {
    "coco": "kubeforge.datasets.coco:parse",
    "imagefolder": "kubeforge.datasets.imagefolder:parse",
    "voc": "kubeforge.datasets.formats.voc:parse",
    "yolo": "kubeforge.datasets.formats.yolo:parse",
    "supervisely": "kubeforge.datasets.formats.supervisely:parse",
    "cvat": "kubeforge.datasets.formats.cvat:parse",
    "labelme": "kubeforge.datasets.formats.labelme:parse",
    "labelstudio": "kubeforge.datasets.formats.labelstudio:parse",
    "masks": "kubeforge.datasets.formats.masks:parse",
}
WRITERS: dict[str, str] = {
    "masks": "kubeforge.datasets.formats.masks:write_masks",
    "labelstudio": "kubeforge.datasets.formats.labelstudio:write_labelstudio",
    "coco": "kubeforge.datasets.formats.basic:write_coco",
    "voc": "kubeforge.datasets.formats.voc:write_voc",
    "yolo": "kubeforge.datasets.formats.yolo:write_yolo",
    "imagefolder": "kubeforge.datasets.formats.basic:write_imagefolder",
    "supervisely": "kubeforge.datasets.formats.supervisely:write_supervisely",
    "cvat": "kubeforge.datasets.formats.cvat:write_cvat",
    "labelme": "kubeforge.datasets.formats.labelme:write_labelme",
}
SOURCE_FORMATS = tuple(PARSERS)
EXPORT_FORMATS = tuple(WRITERS)


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(import_module(module), name)


def parser(fmt: str) -> Callable[[Source, DatasetSource, list[str]], Draft]:
    return _load(PARSERS[fmt])  # type: ignore[no-any-return]


def writer(fmt: str) -> Callable[[Manifest, ExportTree], None]:
    return _load(WRITERS[fmt])  # type: ignore[no-any-return]
