"""Label Studio's JSON export (a list of tasks) and the image files it names.

Import:
- the export: the one `*.json` at the top of the source (a list of tasks); the labeling config
  (`label_config.xml` or `config.xml` at the top), when present, declares the control tags and
  their labels: a result from another control, of another type or with another label is an error;
- images: the task's `data.image` (else the only `data` value with an image extension) is a URL:
  `/data/upload/<project>/<name>`, `/data/local-files/?d=<path>`, `http(s)://`, `s3://`, `gs://`.
  It names the one file of the source whose path ends with the longest suffix of the URL's path
  (`/data/upload/3/x.jpg` -> `.../3/x.jpg`, else `.../x.jpg`), else, for uploads, the one named
  without the 8-character prefix Label Studio adds (`1a2b3c4d-cat.jpg` -> `cat.jpg`). Two files
  for the same suffix are an error naming the task;
- annotations: the first annotation of a task that is not `was_cancelled` (predictions are not
  read); a task without one has no objects (classification: no label, an invalid image);
- results, in percent of `original_width` x `original_height` (the image's size, checked):
  `rectanglelabels` (x, y, width, height; `rotation` in degrees about the top-left corner makes a
  polygon), `polygonlabels` (points, 3+), `brushlabels` (Label Studio's RLE of the RGBA canvas) ->
  COCO RLE; `choices`: with region results anywhere in the export each choice is an image tag,
  else the export is a classification (one choice per task). Every other type is refused;
- classes: the config's labels in order; else the sorted set of the labels used. A region with
  several labels is an error (one class per object);
- split: `data.split` when it is train/val(idation)/test.
Lost: predictions, other annotators' annotations, meta, relations are refused.

Export (`write_labelstudio`): `export.json` (one task per image, `data.image` a
`/data/local-files/?d=<version path>` URL with the image at that path, `data.split`) and
`label_config.xml` declaring every class (and the image tags, as choices). Boxes are
`rectanglelabels`, single polygons `polygonlabels`, masks `brushlabels`; classification versions
are `choices`. Lost: iscrowd, object tags, multi-part polygons (written as their boxes).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from kubeforge.datasets.draft import DatasetImportError, Draft, DraftAnnotation, DraftImage, is_int, is_number
from kubeforge.datasets.formats.common import (
    is_image,
    mask_bbox_area,
    mask_to_rle,
    polygon_area,
    polygon_bbox,
    rc,
    read_json,
    set_split,
)
from kubeforge.datasets.formats.tree import ExportTree
from kubeforge.datasets.manifest import Category, Manifest, ManifestImage
from kubeforge.datasets.sources import Source

if TYPE_CHECKING:
    from kubeforge.api.dataset_version import DatasetSource

CONFIGS = ("label_config.xml", "config.xml")
REGIONS = ("rectanglelabels", "polygonlabels", "brushlabels")
CONTROL_TYPES = {"rectanglelabels": "rectanglelabels", "polygonlabels": "polygonlabels",
                 "brushlabels": "brushlabels", "choices": "choices"}
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def parse(source: Source, spec: DatasetSource, files: list[str]) -> Draft:
    """The registry's entry point (`kubeforge.datasets.formats.registry`)."""
    top = [f for f in files if "/" not in f and f.lower().endswith(".json")]
    if len(top) != 1:
        found = ", ".join(top) if top else "none"
        raise DatasetImportError(f"source {source.uri}: expected one Label Studio JSON export (*.json) at the top; "
                                 f"found {found}")
    rel = top[0]
    where = source.where(rel)
    tasks = read_json(source, rel)
    if not isinstance(tasks, list):
        raise DatasetImportError(f"{where}: expected a list of tasks (Label Studio's JSON export, not JSON-MIN)")
    controls = _config(source, files)
    results = [_results(where, k, task) for k, task in enumerate(tasks)]
    regions = any(r.get("type") in REGIONS for rs in results for r in rs) or any(
        t in REGIONS for t, _ in (controls or {}).values())
    resolver = _Resolver(files)
    images: list[DraftImage] = []
    objects: list[tuple[str, DraftAnnotation]] = []
    choices: list[tuple[DraftImage, str, str]] = []
    paths: dict[str, str] = {}
    for k, (task, found) in enumerate(zip(tasks, results, strict=True)):
        at = f"{where}: task {task.get('id', k)!r}"
        image = DraftImage(path="", ref=None)
        image.path = image.ref = resolver.find(at, _image_url(at, task["data"]))
        if image.path in paths:
            raise DatasetImportError(f"{at}: image {image.path} is also the image of {paths[image.path]}")
        paths[image.path] = f"task {task.get('id', k)!r}"
        split = task["data"].get("split")
        if isinstance(split, str):
            set_split(image, split, at)
        images.append(image)
        task_choices = []
        for j, r in enumerate(found):
            what = f"{at}: result {j} ({r.get('type')!r})"
            kind = r.get("type")
            if kind not in CONTROL_TYPES:
                raise DatasetImportError(f"{what}: type {kind!r} is not supported; expected one of "
                                         f"{', '.join(CONTROL_TYPES)}")
            value = r.get("value")
            if not isinstance(value, dict):
                raise DatasetImportError(f"{what}: expected a 'value' object")
            labels = value.get(kind)
            if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
                raise DatasetImportError(f"{what}: value.{kind}: expected a list of label names")
            _check_control(what, r, kind, labels, controls)
            if kind == "choices":
                task_choices.extend((image, x, what) for x in labels)
                continue
            if len(labels) != 1:
                raise DatasetImportError(f"{what}: {len(labels)} labels {labels}; expected one label per region")
            size = _size(what, r)
            if image.width is not None and (image.width, image.height) != size:
                raise DatasetImportError(f"{what}: original size {size[0]}x{size[1]}; the task's other results say "
                                         f"{image.width}x{image.height}")
            image.width, image.height = size
            if kind == "rectanglelabels":
                bbox, area, seg = _rectangle(what, value, *size)
            elif kind == "polygonlabels":
                bbox, area, seg = _polygon(what, value, *size)
            else:
                bbox, area, seg = _brush(what, value, *size)
            objects.append((labels[0], DraftAnnotation(
                image_ref=image.path, ref=f"task {task.get('id', k)!r} result {j}", category_id=0, bbox=bbox,
                area=area, iscrowd=0, segmentation=seg, where=where,
            )))
        choices.extend(task_choices)
        if not regions and len(task_choices) > 1:
            raise DatasetImportError(f"{at}: {len(task_choices)} choices; expected one class per image "
                                     "(classification)")
    if not images:
        raise DatasetImportError(f"{where}: no tasks")
    used = {name for name, _ in objects} if regions else {name for _, name, _ in choices}
    names = _declared(controls, regions) or sorted(used)
    ids = {name: i + 1 for i, name in enumerate(names)}
    annotations = []
    for name, a in objects:
        a.category_id = ids[name]
        annotations.append(a)
    for image, name, _ in choices:
        if regions:
            image.tags.append(name)
        else:
            image.category_id = ids[name]
    if not regions:
        for image in images:
            if image.category_id is None:
                image.error = f"no choice in its task of {where} (classification: every image needs a class)"
    categories = [Category(id=i, name=n) for n, i in ids.items()]
    return Draft(task="object-detection" if regions else "classification", categories=categories, images=images,
                 annotations=annotations, origin=where)


def _results(where: str, k: int, task: Any) -> list[dict[str, Any]]:
    at = f"{where}: task {task.get('id', k) if isinstance(task, dict) else k!r}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise DatasetImportError(f"{at}: expected an object with 'data' (Label Studio's JSON export)")
    anns = task.get("annotations") or []
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise DatasetImportError(f"{at}: annotations: expected a list of objects")
    chosen = next((a for a in anns if not a.get("was_cancelled")), None)
    if chosen is None:
        return []
    result = chosen.get("result") or []
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise DatasetImportError(f"{at}: annotation {chosen.get('id')!r}: result: expected a list of objects")
    return result


def _config(source: Source, files: list[str]) -> dict[str, tuple[str, list[str]]] | None:
    """control name -> (result type, label values), from the labeling config when there is one."""
    rel = next((c for c in CONFIGS if c in files), None)
    if rel is None:
        return None
    where = source.where(rel)
    try:
        root = ET.fromstring(source.read(rel))
    except ET.ParseError as exc:
        raise DatasetImportError(f"{where}: not valid XML ({exc})") from None
    out: dict[str, tuple[str, list[str]]] = {}
    for node in root.iter():
        kind = node.tag.lower()
        if kind in CONTROL_TYPES:
            name = node.get("name") or ""
            values = [c.get("value") or "" for c in node if c.tag in ("Label", "Choice")]
            if not name or not all(values):
                raise DatasetImportError(f"{where}: <{node.tag}>: expected a name and <Label value>/<Choice value>s")
            out[name] = (kind, values)
    if not out:
        raise DatasetImportError(f"{where}: no <RectangleLabels>, <PolygonLabels>, <BrushLabels> or <Choices>")
    return out


def _declared(controls: dict[str, tuple[str, list[str]]] | None, regions: bool) -> list[str]:
    names: list[str] = []
    for kind, values in (controls or {}).values():
        if (kind in REGIONS) == regions:
            names.extend(v for v in values if v not in names)
    return names


def _check_control(what: str, r: dict[str, Any], kind: str, labels: list[str],
                   controls: dict[str, tuple[str, list[str]]] | None) -> None:
    if controls is None:
        return
    name = r.get("from_name")
    if name not in controls:
        raise DatasetImportError(f"{what}: from_name {name!r} is no control of the labeling config; expected one of "
                                 f"{', '.join(controls)}")
    declared, values = controls[name]
    if declared != kind:
        raise DatasetImportError(f"{what}: control {name!r} is declared as {declared}; found {kind}")
    bad = [x for x in labels if x not in values]
    if bad:
        raise DatasetImportError(f"{what}: label {bad[0]!r} is not declared for {name!r}; expected one of "
                                 f"{', '.join(values)}")


def _image_url(at: str, data: dict[str, Any]) -> str:
    url = data.get("image")
    if url is None:
        found = [v for v in data.values() if isinstance(v, str) and is_image(urlparse(v).path or v)]
        url = found[0] if len(found) == 1 else None
    if not isinstance(url, str) or not url:
        raise DatasetImportError(f"{at}: data: expected 'image' (a URL or path naming the image)")
    return url


class _Resolver:
    """A task's image URL -> the source file: the one whose path ends with the longest suffix of the
    URL's path, else (uploads) the one named like it without Label Studio's 8-character prefix."""

    def __init__(self, files: list[str]) -> None:
        self.by_suffix: dict[str, list[str]] = {}
        for f in files:
            if is_image(f):
                parts = f.split("/")
                for i in range(len(parts)):
                    self.by_suffix.setdefault("/".join(parts[i:]), []).append(f)

    def find(self, at: str, url: str) -> str:
        parsed = urlparse(url)
        path = unquote(parsed.path)
        if path.startswith("/data/local-files"):
            d = parse_qs(parsed.query).get("d")
            path = unquote(d[0]) if d else ""
        elif path.startswith("/data/upload/"):
            path = path[len("/data/upload/"):]
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts or not parts:
            raise DatasetImportError(f"{at}: image {url!r}: expected a path inside the source (no '..')")
        suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
        stripped = UPLOAD_PREFIX.sub("", parts[-1])
        if stripped != parts[-1]:
            suffixes.append(stripped)
        for suffix in suffixes:
            found = self.by_suffix.get(suffix, [])
            if len(found) > 1:
                raise DatasetImportError(f"{at}: image {url!r}: {len(found)} files end with {suffix} "
                                         f"({', '.join(found[:3])}); expected one")
            if found:
                return found[0]
        return "/".join(parts)  # not in the source: the importer reports it missing


def _size(what: str, r: dict[str, Any]) -> tuple[int, int]:
    w, h = r.get("original_width"), r.get("original_height")
    if not (is_int(w) and is_int(h) and w > 0 and h > 0):
        raise DatasetImportError(f"{what}: original_width {w!r}, original_height {h!r}: expected positive integers")
    return w, h


def _numbers(what: str, value: dict[str, Any], keys: tuple[str, ...]) -> list[float]:
    out = [value.get(k) for k in keys]
    if not all(is_number(v) for v in out):
        found = ", ".join(f"{k}={v!r}" for k, v in zip(keys, out, strict=True))
        raise DatasetImportError(f"{what}: {found}: expected numbers (percent of the image size)")
    return [float(v) for v in out]  # type: ignore[arg-type]


def _rectangle(what: str, value: dict[str, Any], w: int, h: int) -> tuple[list[float], float, Any]:
    x, y, bw, bh = _numbers(what, value, ("x", "y", "width", "height"))
    if bw < 0 or bh < 0:
        raise DatasetImportError(f"{what}: width {bw}, height {bh}: expected sizes >= 0")
    x0, y0, x1, y1 = x * w / 100, y * h / 100, (x + bw) * w / 100, (y + bh) * h / 100
    angle = value.get("rotation") or 0
    if not is_number(angle):
        raise DatasetImportError(f"{what}: rotation {angle!r}: expected a number (degrees)")
    if angle % 360 == 0:
        pw, ph = rc(x1 - x0), rc(y1 - y0)
        return [rc(x0), rc(y0), pw, ph], rc(pw * ph), None
    t = math.radians(angle)  # Label Studio rotates clockwise about the top-left corner
    poly = []
    for px, py in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        dx, dy = px - x0, py - y0
        poly += [rc(x0 + dx * math.cos(t) - dy * math.sin(t)), rc(y0 + dx * math.sin(t) + dy * math.cos(t))]
    return polygon_bbox(poly), polygon_area(poly), [poly]


def _polygon(what: str, value: dict[str, Any], w: int, h: int) -> tuple[list[float], float, Any]:
    pts = value.get("points")
    ok = isinstance(pts, list) and len(pts) >= 3 and all(
        isinstance(p, list) and len(p) == 2 and all(is_number(v) for v in p) for p in pts)
    if not ok:
        raise DatasetImportError(f"{what}: points: expected 3 or more [x, y] pairs of numbers (percent)")
    poly = [rc(v) for p in pts for v in (p[0] * w / 100, p[1] * h / 100)]
    return polygon_bbox(poly), polygon_area(poly), [poly]


def decode_brush(rle: list[int]) -> np.ndarray:
    """Label Studio's brush RLE (thi.ng rle-pack over the RGBA canvas) -> the flat decoded values."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise ValueError("the data ends early")
        v = 0
        for b in bits[pos:pos + n]:
            v = v << 1 | int(b)
        pos += n
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError(f"a run reaches past {num} values")
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def _brush(what: str, value: dict[str, Any], w: int, h: int) -> tuple[list[float], float, Any]:
    rle = value.get("rle")
    if value.get("format", "rle") != "rle" or not (isinstance(rle, list) and all(is_int(v) and 0 <= v < 256
                                                                                  for v in rle)):
        raise DatasetImportError(f"{what}: expected format 'rle' and 'rle' a list of byte values")
    try:
        flat = decode_brush(rle)
    except ValueError as exc:
        raise DatasetImportError(f"{what}: rle: not Label Studio's brush RLE ({exc})") from None
    if flat.size != w * h * 4:
        raise DatasetImportError(f"{what}: rle holds {flat.size} values; expected {w}x{h}x4 = {w * h * 4} (RGBA)")
    mask = flat.reshape(h, w, 4)[:, :, 3] > 0
    bbox, area = mask_bbox_area(mask)
    return bbox, area, mask_to_rle(mask)


def encode_brush(values: np.ndarray) -> list[int]:
    """Flat uint8 values -> an rle-pack stream `decode_brush` reads (8-bit words, repeat runs of up
    to 2**16), as Label Studio stores brush masks (RGBA canvas, 4 values a pixel)."""
    bits: list[str] = [format(values.size, "032b"), format(7, "05b")] + [format(15, "04b")] * 4
    flat = values.reshape(-1)
    i = 0
    while i < flat.size:
        j = i
        while j < flat.size and flat[j] == flat[i] and j - i < 1 << 16:
            j += 1
        bits += ["1", "00", format(j - i - 1, "016b"), format(int(flat[i]), "08b")]
        i = j
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k:k + 8], 2) for k in range(0, len(stream), 8)]


def _region(kind: str, name: str, value: dict[str, Any], im: ManifestImage, n: int) -> dict[str, Any]:
    """Result `n` of an image: a region of control `kind`, from the control named after its shape."""
    return {"id": f"r{n}", "type": kind, "from_name": kind.removesuffix("labels"), "to_name": "image",
            "original_width": im.width, "original_height": im.height, "image_rotation": 0,
            "value": {**value, kind: [name]}}


def write_labelstudio(manifest: Manifest, tree: ExportTree) -> None:
    import json
    from xml.sax.saxutils import quoteattr

    from kubeforge.datasets.formats.basic import image_split
    from kubeforge.datasets.formats.common import rle_to_mask, split_tags

    detection = manifest.task == "object-detection"
    name_of = {c.id: c.name for c in manifest.categories}
    names = [c.name for c in sorted(manifest.categories, key=lambda c: c.id)]
    image_tags = sorted({t for im in manifest.images for t in im.tags if t not in split_tags(im.tags)})
    per_image = manifest.annotations_by_image()
    tasks: list[dict[str, Any]] = []
    for i, im in enumerate(manifest.images):
        tree.image(im.file_name, im.blob)
        w, h = im.width, im.height
        data: dict[str, Any] = {"image": f"/data/local-files/?d={im.file_name}"}
        split = image_split(im)
        if split:
            data["split"] = split
        results: list[dict[str, Any]] = []

        if detection:
            for a in per_image[i]:
                name = name_of[a.category_id]
                if a.iscrowd:
                    tree.lose("iscrowd")
                if a.tags:
                    tree.lose("object tags")
                seg = a.segmentation
                if isinstance(seg, dict):
                    values = np.repeat(rle_to_mask(seg).astype(np.uint8).reshape(-1) * 255, 4)
                    results.append(_region("brushlabels", name, {"format": "rle", "rle": encode_brush(values)}, im,
                                           len(results)))
                elif isinstance(seg, list) and len(seg) == 1:
                    pts = [[x * 100 / w, y * 100 / h] for x, y in zip(seg[0][0::2], seg[0][1::2], strict=True)]
                    results.append(_region("polygonlabels", name, {"points": pts}, im, len(results)))
                else:
                    if seg:
                        tree.lose("multi-part polygons (written as their boxes)")
                    x, y, bw, bh = a.bbox
                    results.append(_region("rectanglelabels", name, {
                        "x": x * 100 / w, "y": y * 100 / h, "width": bw * 100 / w, "height": bh * 100 / h,
                        "rotation": 0}, im, len(results)))
            tags = [t for t in im.tags if t in image_tags]
            if tags:
                results.append({"id": f"r{len(results)}", "type": "choices", "from_name": "tags",
                                "to_name": "image", "value": {"choices": tags}})
        elif im.category_id is not None:
            results.append({"id": "r0", "type": "choices", "from_name": "class", "to_name": "image",
                            "value": {"choices": [name_of[im.category_id]]}})
            if set(im.tags) - set(split_tags(im.tags)):
                tree.lose("image tags")
        else:
            tree.lose("unlabeled images")
        tasks.append({"id": i + 1, "data": data, "annotations": [{"id": i + 1, "result": results}]})
    tree.text("export.json", json.dumps(tasks, indent=1, ensure_ascii=False))

    def control(tag: str, name: str, values: list[str], child: str) -> str:
        inner = "".join(f"<{child} value={quoteattr(v)}/>" for v in values)
        return f'  <{tag} name="{name}" toName="image">{inner}</{tag}>\n'

    body = '  <Image name="image" value="$image"/>\n'
    if detection:
        body += control("RectangleLabels", "rectangle", names, "Label") + control("PolygonLabels", "polygon", names,
                                                                                  "Label")
        body += control("BrushLabels", "brush", names, "Label")
        if image_tags:
            body += control("Choices", "tags", image_tags, "Choice")
    else:
        body += control("Choices", "class", names, "Choice")
    tree.text("label_config.xml", f"<View>\n{body}</View>\n")
