"""Writers of the formats `kubeforge predict --format` offers; each takes predictions as they arrive.

- `table`: the rich table (kept in memory: meant for a screen's worth of images).
- `jsonl`: one JSON object per image, written and flushed as it arrives (a huge folder never sits in
  memory); masks as COCO RLE with `rle=True`.
- `coco`: COCO results JSON (a list of {image_id, category_id, bbox [x,y,w,h], score[, segmentation]}) that
  pycocotools' `COCO.loadRes` loads. Image and category ids come from a ground-truth file when given
  (matched by file name and class name); otherwise images are numbered 1.. in input order and
  categories 1.. in the model's class order, and that mapping is written beside the results as
  `<name>.images.json`, itself a COCO ground-truth skeleton (images, categories, no annotations).
- `annotated`: each image with its prediction drawn (`annotate.draw`), into a folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any, Protocol

from kubeforge.datasets.formats.common import mask_to_rle
from kubeforge.models.meta import ModelMeta
from kubeforge.predict.engine import Item
from kubeforge.serving.client import Prediction

FORMATS = ("table", "jsonl", "coco", "annotated")


class Writer(Protocol):
    def write(self, pred: Prediction, item: Item | None) -> None: ...

    def close(self) -> list[Path]: ...  # the files written


def prediction_json(pred: Prediction, masks_as_rle: bool = False) -> dict[str, Any]:
    """`Prediction.to_dict`, plus the masks as RLE when asked (instance: per detection; semantic: per class)."""
    out = pred.to_dict()
    if not masks_as_rle:
        return out
    for det, raw in zip(out["detections"], pred.detections, strict=True):
        if raw.mask is not None:
            det["segmentation"] = mask_to_rle(raw.mask)
    if pred.mask is not None:
        for px in out["pixels"]:
            px["segmentation"] = mask_to_rle(pred.mask == px["index"])
    return out


class TableWriter:
    def __init__(self, stream: IO[str] | None = None) -> None:
        self.predictions: list[Prediction] = []
        self.stream = stream

    def write(self, pred: Prediction, item: Item | None) -> None:
        pred.mask = None  # the table shows fractions and mask files, not pixels: keep memory small
        for det in pred.detections:
            det.mask = None
        self.predictions.append(pred)

    def close(self) -> list[Path]:
        from rich.console import Console

        from kubeforge.serving.client import render_table

        Console(width=120, file=self.stream).print(render_table(self.predictions))
        return []


class JsonlWriter:
    """One line per image, flushed as it comes (to a file, or stdout when `path` is None)."""

    def __init__(self, path: Path | None, masks_as_rle: bool = False) -> None:
        self.path = path
        self.masks_as_rle = masks_as_rle
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "w") if path is not None else sys.stdout

    def write(self, pred: Prediction, item: Item | None) -> None:
        self._fh.write(json.dumps(prediction_json(pred, self.masks_as_rle)) + "\n")
        self._fh.flush()

    def close(self) -> list[Path]:
        if self.path is None:
            return []
        self._fh.close()
        return [self.path]


class JsonArrayWriter:
    """`--json`: one JSON array on stdout at the end (small inputs; jsonl streams)."""

    def __init__(self, masks_as_rle: bool = False) -> None:
        self.masks_as_rle = masks_as_rle
        self.rows: list[dict[str, Any]] = []

    def write(self, pred: Prediction, item: Item | None) -> None:
        self.rows.append(prediction_json(pred, self.masks_as_rle))

    def close(self) -> list[Path]:
        sys.stdout.write(json.dumps(self.rows, indent=2) + "\n")
        return []


class CocoWriter:
    """COCO results (see the module docstring for ids)."""

    def __init__(self, path: Path, meta: ModelMeta, ground_truth: Path | None = None) -> None:
        if meta.task == "classification":
            raise ValueError("--format coco: COCO results hold boxes or masks; a classification model has "
                             "neither (use --format jsonl)")
        self.path, self.meta = path, meta
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.by_file: dict[str, int] | None = None
        self.categories = [{"id": k + 1, "name": name} for k, name in enumerate(meta.classes)]
        if ground_truth is not None:
            gt = json.loads(ground_truth.read_text())
            self.by_file = {Path(img["file_name"]).name: int(img["id"]) for img in gt.get("images", [])}
            self.categories = gt.get("categories", [])
        self.category_of = {c["name"]: int(c["id"]) for c in self.categories}

    def _image_id(self, pred: Prediction) -> int:
        if self.by_file is None:
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, "file_name": pred.image, "width": pred.width, "height": pred.height})
            return image_id
        name = Path(pred.image.split("#", 1)[0]).name
        if name not in self.by_file:
            raise ValueError(f"{pred.image}: --coco-gt has no image with file_name {name!r}")
        return self.by_file[name]

    def write(self, pred: Prediction, item: Item | None) -> None:
        image_id = self._image_id(pred)
        for det in pred.detections:
            category = self.category_of.get(det.class_name)
            if category is None:
                continue  # a model class the ground truth does not have: nothing to score it against
            x1, y1, x2, y2 = det.box
            entry: dict[str, Any] = {"image_id": image_id, "category_id": category, "score": round(det.score, 6),
                                     "bbox": [round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)]}
            if det.mask is not None:
                entry["segmentation"] = mask_to_rle(det.mask)
            self.results.append(entry)
        if pred.mask is not None:  # semantic: one region per present class, scored 1
            for px in pred.pixels:
                category = self.category_of.get(px.class_name)
                if category is not None and px.index != 0:
                    self.results.append({"image_id": image_id, "category_id": category, "score": 1.0,
                                         "segmentation": mask_to_rle(pred.mask == px.index)})

    def mapping_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.images.json")

    def close(self) -> list[Path]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.results))
        if self.by_file is not None:
            return [self.path]
        mapping = {"images": self.images, "categories": self.categories, "annotations": []}
        self.mapping_path().write_text(json.dumps(mapping, indent=1))
        return [self.path, self.mapping_path()]


class AnnotatedWriter:
    """Each image with its prediction drawn, as `<folder>/<image file name>` (PNG for non-image names)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.written: list[Path] = []
        self._taken: set[str] = set()

    def _name(self, pred: Prediction) -> str:
        base = Path(pred.image.split("#", 1)[0]).name
        stem, suffix = Path(base).stem, Path(base).suffix.lower()
        if pred.frame is not None:
            stem, suffix = f"{stem}_frame{pred.frame:06d}", ".png"
        if suffix not in (".jpg", ".jpeg", ".png"):
            suffix = ".png"
        name, n = f"{stem}{suffix}", 1
        while name in self._taken:  # two folders with a.jpg each: a-1.jpg for the second
            name, n = f"{stem}-{n}{suffix}", n + 1
        self._taken.add(name)
        return name

    def write(self, pred: Prediction, item: Item | None) -> None:
        from kubeforge.predict.annotate import draw

        path = self.folder / self._name(pred)
        if item is None:
            raise ValueError(f"{pred.image}: annotated output needs the image it was predicted on")
        draw(item.load(), pred).save(path)
        self.written.append(path)

    def close(self) -> list[Path]:
        return self.written


def writer(fmt: str, output: Path | None, meta: ModelMeta, *, masks_as_rle: bool = False,
           coco_gt: Path | None = None) -> Writer:
    """The writer of one `--format`, checking `--output` is what that format needs."""
    if fmt == "table":
        if output is not None:
            raise ValueError("--format table prints to the terminal; --output needs jsonl, coco or annotated")
        return TableWriter()
    if fmt == "json":
        return JsonArrayWriter(masks_as_rle)
    if fmt == "jsonl":
        return JsonlWriter(output, masks_as_rle)
    if fmt == "coco":
        if output is None or output.is_dir():
            raise ValueError("--format coco: --output must name the results file, e.g. --output results.json")
        return CocoWriter(output, meta, coco_gt)
    if fmt == "annotated":
        if output is None or output.is_file():
            raise ValueError("--format annotated: --output must name a folder for the annotated images")
        return AnnotatedWriter(output)
    raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
