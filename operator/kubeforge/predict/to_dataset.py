"""Predictions -> a DatasetVersion in the store: the predictions as annotations, with their scores.

A prediction becomes what a labelled image is in a manifest (`datasets.manifest`): a detection an
annotation (box, instance mask as COCO RLE), a classification the image's label. Each carries its
confidence as the tag `score=0.8731`, so the version can be reviewed and filtered by confidence with the
dataset tools (a tag `name=value`, like the attributes importers keep). The version is written by the one
writer of versions (`datasets.versions.write_version`); beside it, `predictions.json` records its source:
the parent version, the model (TrainingJob, run, InferenceService) and the threshold. It is not a
`lineage.json`: predictions cannot be replayed from operations.

A prediction line (one JSON object per image, what the predict step writes as it goes) is
`Prediction.to_dict()` plus where the image is: `fileName`, `blob`, `bytes`, `tags`; detections with a
mask carry `segmentation` (RLE).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from kubeforge.api.dataset_operations import ParentVersion
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.operations import SCORE_TAG
from kubeforge.datasets.versions import write_version
from kubeforge.store import layout
from kubeforge.store.base import Store

SOURCE_FORMAT = 1
SOURCE_FILE = "predictions.json"
TRACK_TAG = "track"
# Manifest tasks by model task: segmentation instances are objects with a mask; semantic masks are not
# objects, and a manifest has no per-pixel form yet.
MANIFEST_TASKS = {"classification": "classification", "object-detection": "object-detection",
                  "instance-segmentation": "object-detection"}


class PredictionDatasetError(ValueError):
    """The predictions cannot become a DatasetVersion (a task a manifest cannot hold)."""


def score_tag(score: float) -> str:
    return f"{SCORE_TAG}={score:.4f}"


def manifest_task(model_task: str) -> str:
    try:
        return MANIFEST_TASKS[model_task]
    except KeyError:
        raise PredictionDatasetError(
            f"a {model_task} model's predictions cannot be a DatasetVersion (a version holds "
            f"{', '.join(sorted(set(MANIFEST_TASKS.values())))} annotations); use `kubeforge predict` for its "
            "masks") from None


def categories_for(classes: Sequence[str], parent: Sequence[Category] = ()) -> list[Category]:
    """The model's classes as categories; a class the parent version has keeps its id (diffs line up)."""
    ids = {c.name: c.id for c in parent}
    next_id = max([0, *ids.values()]) + 1
    out = []
    for name in classes:
        if name not in ids:
            ids[name] = next_id
            next_id += 1
        out.append(Category(id=ids[name], name=name))
    return out


def manifest_of(dataset: str, model_task: str, classes: Sequence[str], lines: Iterable[dict[str, Any]],
                parent: Manifest | None = None) -> Manifest:
    """The version holding `lines` (prediction lines, any order): one image per line."""
    task = manifest_task(model_task)
    categories = categories_for(classes, parent.categories if parent is not None else ())
    by_name = {c.name: c.id for c in categories}
    images: list[ManifestImage] = []
    annotations: list[ManifestAnnotation] = []
    for line in lines:
        tags = list(line.get("tags") or [])
        label = None
        if task == "classification" and line.get("classes"):
            top = line["classes"][0]
            label = by_name[top["class_name"]]
            tags.append(score_tag(top["probability"]))
        index = len(images)
        images.append(ManifestImage(file_name=line["fileName"], blob=line["blob"], width=line["width"],
                                    height=line["height"], bytes=line["bytes"], category_id=label, tags=tags))
        for det in line.get("detections") or []:
            x1, y1, x2, y2 = det["box"]
            w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
            obj_tags = [score_tag(det["score"])]
            if det.get("track_id") is not None:
                obj_tags.append(f"{TRACK_TAG}={det['track_id']}")
            segmentation = det.get("segmentation")
            area = float(det["mask_pixels"]) if det.get("mask_pixels") is not None else w * h
            annotations.append(ManifestAnnotation(image=index, category_id=by_name[det["class_name"]],
                                                  bbox=[x1, y1, w, h], area=area, segmentation=segmentation,
                                                  tags=obj_tags))
    return Manifest(dataset=dataset, task=task, categories=categories, images=images,  # type: ignore[arg-type]
                    annotations=annotations).canonical()


def source_key(dataset: str, digest: str) -> str:
    return f"{layout.dataset_version_prefix(dataset, digest)}/{SOURCE_FILE}"


def write_predictions_version(store: Store, manifest: Manifest, source: dict[str, Any],
                              parents: Sequence[ParentVersion] = ()) -> tuple[str, str]:
    """Store the version (its blobs are in the store already): predictions.json first, so a visible version
    always says where it came from, then the manifest. Returns (digest, predictions.json key)."""
    digest = manifest.digest()
    key = source_key(manifest.dataset, digest)
    record = {"formatVersion": SOURCE_FORMAT, "dataset": manifest.dataset, "digest": digest,
              "parents": [p.dump() for p in parents], **source}
    store.put_bytes(key, json.dumps(record, indent=2, sort_keys=True).encode())
    written, _ = write_version(store, manifest)
    assert written == digest, "write_version hashes the same canonical bytes"
    return digest, key


def read_source(store: Store, dataset: str, digest: str) -> dict[str, Any] | None:
    """The predictions.json of a version made by a PredictionJob, or None for any other version."""
    try:
        data = store.get_json(source_key(dataset, digest))
    except KeyError:
        return None
    return data if isinstance(data, dict) else None
