"""Compare two manifests: images and annotations added, removed, modified; per-class deltas.

Pure and O(n): images are matched by file_name in dicts, annotations by their content within
each image (a multiset), classes by name, never by id, so a version whose class ids were
renumbered but whose content is the same has no changes.

Definitions (what `status.changes` and `kubeforge datasets diff` report):
- image added / removed: its file_name is only in B / only in A;
- image modified: in both, different bytes (blob); retagged: same file_name, other tags;
- annotation added / removed: an object (class, box, area, iscrowd, segmentation) in B but not
  A / in A but not B, per image; on images added or removed, all their objects count;
- annotation changed: on the same image and class, one object removed and one added
  (a box moved or resized) count as one change, not one removal and one addition.
  A classification label counts as one object of its class.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from kubeforge.api.dataset_operations import DatasetChanges
from kubeforge.datasets.columnar import ColumnarManifest
from kubeforge.datasets.manifest import Manifest


@dataclass
class ImageChange:
    file_name: str
    added: int = 0
    removed: int = 0
    changed: int = 0


@dataclass
class ManifestDiff:
    a: str  # dataset@digest
    b: str
    images_added: list[str] = field(default_factory=list)
    images_removed: list[str] = field(default_factory=list)
    images_modified: list[str] = field(default_factory=list)
    images_retagged: list[str] = field(default_factory=list)
    annotations_added: int = 0
    annotations_removed: int = 0
    annotations_changed: int = 0
    images_with_annotation_changes: list[ImageChange] = field(default_factory=list)
    classes_added: list[str] = field(default_factory=list)
    classes_removed: list[str] = field(default_factory=list)
    objects_per_class: dict[str, int] = field(default_factory=dict)  # B - A, non-zero only

    @property
    def empty(self) -> bool:
        return not (self.images_added or self.images_removed or self.images_modified or self.images_retagged
                    or self.annotations_added or self.annotations_removed or self.annotations_changed
                    or self.classes_added or self.classes_removed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def changes(self, against_digest: str) -> DatasetChanges:
        """The counts for `status.changes` (B against its parent A)."""
        return DatasetChanges(
            against=against_digest,
            images_added=len(self.images_added), images_removed=len(self.images_removed),
            images_modified=len(self.images_modified),
            annotations_added=self.annotations_added, annotations_removed=self.annotations_removed,
            annotations_changed=self.annotations_changed, objects_per_class=dict(self.objects_per_class),
        )


Objects = dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]]
_NONE: tuple[tuple[str, str], ...] = ()


def _objects(m: Manifest | ColumnarManifest) -> Objects:
    """file_name -> (blob, sorted tags, sorted (class, object content json) multiset).

    Tuples, not a Counter per image: a million-image version costs a million small tuples,
    and Counters are built only for the images whose objects differ.
    """
    if isinstance(m, ColumnarManifest):
        return _objects_columnar(m)
    names = {c.id: c.name for c in m.categories}
    per_image: dict[int, list[tuple[str, str]]] = {}
    if m.task == "classification":
        for i, im in enumerate(m.images):
            if im.category_id is not None:
                per_image.setdefault(i, []).append((names[im.category_id], "label"))
    for a in m.annotations:
        body = json.dumps([a.bbox, a.area, a.iscrowd, a.segmentation], separators=(",", ":"), sort_keys=True)
        per_image.setdefault(a.image, []).append((names[a.category_id], body))
    return {im.file_name: (im.blob, tuple(sorted(set(im.tags))), tuple(sorted(per_image.get(i, _NONE))))
            for i, im in enumerate(m.images)}


def _objects_columnar(m: ColumnarManifest) -> Objects:
    names = {c.id: c.name for c in m.categories}
    per_image: dict[int, list[tuple[str, str]]] = {}
    if m.task == "classification":
        labels = {cid: ((names[cid], "label"),) for cid in names}
        cids = m.images["category_id"].to_pylist()
    else:
        cids = [None] * m.images.num_rows
        anns = m.annotations
        cols = [anns[n].to_pylist() for n in ("image", "category_id", "bbox", "area", "iscrowd", "segmentation")]
        for image, cid, bbox, area, iscrowd, seg in zip(*cols, strict=True):
            body = json.dumps([bbox, area, iscrowd, None if seg is None else json.loads(seg)],
                              separators=(",", ":"), sort_keys=True)
            per_image.setdefault(image, []).append((names[cid], body))
    out: Objects = {}
    files, blobs, tags = (m.images[n].to_pylist() for n in ("file_name", "blob", "tags"))
    for i, (name, blob, tg, cid) in enumerate(zip(files, blobs, tags, cids, strict=True)):
        objs = labels[cid] if cid is not None else tuple(sorted(per_image.get(i, _NONE)))
        out[name] = (blob, tuple(sorted(set(tg))) if tg else (), objs)
    return out


def _class_counts(objects: Objects) -> Counter[str]:
    out: Counter[str] = Counter()
    for _, _, objs in objects.values():
        for cls, _ in objs:
            out[cls] += 1
    return out


def diff_manifests(a: Manifest | ColumnarManifest, b: Manifest | ColumnarManifest) -> ManifestDiff:
    """What changed from A to B (either form: columnar versions are diffed from their columns)."""
    out = ManifestDiff(a=f"{a.dataset}@{a.digest()}", b=f"{b.dataset}@{b.digest()}")
    oa, ob = _objects(a), _objects(b)
    for name in sorted(ob.keys() - oa.keys()):
        out.images_added.append(name)
        n = len(ob[name][2])
        out.annotations_added += n
        if n:
            out.images_with_annotation_changes.append(ImageChange(name, added=n))
    for name in sorted(oa.keys() - ob.keys()):
        out.images_removed.append(name)
        n = len(oa[name][2])
        out.annotations_removed += n
        if n:
            out.images_with_annotation_changes.append(ImageChange(name, removed=n))
    for name in sorted(oa.keys() & ob.keys()):
        blob_a, tags_a, objs_a = oa[name]
        blob_b, tags_b, objs_b = ob[name]
        if blob_a != blob_b:
            out.images_modified.append(name)
        if tags_a != tags_b:
            out.images_retagged.append(name)
        if objs_a == objs_b:
            continue
        gone, new = Counter(objs_a) - Counter(objs_b), Counter(objs_b) - Counter(objs_a)
        gone_by_class: Counter[str] = Counter()
        new_by_class: Counter[str] = Counter()
        for (cls, _), n in gone.items():
            gone_by_class[cls] += n
        for (cls, _), n in new.items():
            new_by_class[cls] += n
        changed = sum(min(n, new_by_class[cls]) for cls, n in gone_by_class.items())
        removed = sum(gone_by_class.values()) - changed
        added = sum(new_by_class.values()) - changed
        out.annotations_changed += changed
        out.annotations_removed += removed
        out.annotations_added += added
        out.images_with_annotation_changes.append(ImageChange(name, added=added, removed=removed, changed=changed))
    out.images_with_annotation_changes.sort(key=lambda c: c.file_name)
    names_a, names_b = set(a.class_names()), set(b.class_names())
    out.classes_added = sorted(names_b - names_a)
    out.classes_removed = sorted(names_a - names_b)
    count_a, count_b = _class_counts(oa), _class_counts(ob)
    deltas = {cls: count_b[cls] - count_a[cls] for cls in sorted(names_a | names_b)}
    out.objects_per_class = {cls: d for cls, d in deltas.items() if d}
    return out
