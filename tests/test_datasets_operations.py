"""Derived-version operations on constructed manifests with known answers."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from kubeforge.api.dataset_operations import DatasetOperation
from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.operations import OperationError, apply_operations


def blob(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def image(name: str, w: int = 100, h: int = 50, tags: list[str] | None = None, content: str | None = None,
          label: int | None = None) -> ManifestImage:
    return ManifestImage(file_name=name, blob=blob(content or name), width=w, height=h, bytes=10, tags=tags or [],
                         category_id=label)


def ann(i: int, cat: int, box: tuple[float, float, float, float] = (1, 1, 10, 10),
        seg: list[list[float]] | None = None) -> ManifestAnnotation:
    return ManifestAnnotation(image=i, category_id=cat, bbox=list(box), area=box[2] * box[3], segmentation=seg)


CATS = [Category(id=1, name="cat"), Category(id=2, name="dog"), Category(id=3, name="bird")]


def detection() -> Manifest:
    images = [image("a.png", tags=["day"]), image("b.png", w=20, h=20), image("c.png", tags=["night"]),
              image("d.png")]
    anns = [ann(0, 1), ann(0, 2), ann(1, 2), ann(2, 3), ann(2, 3), ann(2, 3)]  # d.png has none
    return Manifest(dataset="pets", task="object-detection", categories=CATS, images=images, annotations=anns)


def ops(*items: dict) -> list[DatasetOperation]:
    return [DatasetOperation.model_validate(i) for i in items]


def names(m: Manifest) -> list[str]:
    return [im.file_name for im in m.images]


def objects(m: Manifest) -> dict[str, list[str]]:
    by = m.annotations_by_image()
    return {im.file_name: sorted(m.category_name(a.category_id) for a in by[i]) for i, im in enumerate(m.images)}


@pytest.mark.parametrize(("criteria", "expected"), [
    ({"classes": ["dog"]}, ["a.png", "b.png"]),
    ({"tags": ["night", "day"]}, ["a.png", "c.png"]),
    ({"minWidth": 50}, ["a.png", "c.png", "d.png"]),
    ({"maxHeight": 20}, ["b.png"]),
    ({"minAnnotations": 2}, ["a.png", "c.png"]),
    ({"maxAnnotations": 0}, ["d.png"]),
    ({"classes": ["dog"], "minWidth": 50}, ["a.png"]),  # every criterion must hold
])
def test_filter(criteria: dict, expected: list[str]) -> None:
    out = apply_operations([detection()], ops({"filter": criteria}), "pets")
    assert names(out) == expected
    # Annotations follow their images (re-indexed), untouched.
    assert all(objects(out)[n] == objects(detection())[n] for n in expected)


def test_filter_by_an_unknown_class_names_it() -> None:
    with pytest.raises(OperationError, match=r"operations\[0\] \(filter\): classes: no class 'cow'.*cat, dog, bird"):
        apply_operations([detection()], ops({"filter": {"classes": ["cow"]}}), "pets")


def test_merge_classes_and_remap() -> None:
    merged = apply_operations([detection()], ops({"mergeClasses": {"from": ["cat", "dog"], "to": "pet"}}), "pets")
    assert [(c.id, c.name) for c in merged.categories] == [(1, "pet"), (3, "bird")]
    assert objects(merged)["a.png"] == ["pet", "pet"]
    # Onto an existing class: it keeps its id.
    into_bird = apply_operations([detection()], ops({"remapClasses": {"mapping": {"dog": "bird"}}}), "pets")
    assert [(c.id, c.name) for c in into_bird.categories] == [(1, "cat"), (3, "bird")]
    assert objects(into_bird)["b.png"] == ["bird"]
    renamed = apply_operations([detection()], ops({"remapClasses": {"mapping": {"cat": "kitten"}}}), "pets")
    assert renamed.class_names() == ["kitten", "dog", "bird"] and objects(renamed)["a.png"] == ["dog", "kitten"]


def test_drop_classes() -> None:
    out = apply_operations([detection()], ops({"dropClasses": {"classes": ["dog"]}}), "pets")
    assert out.class_names() == ["cat", "bird"]
    assert objects(out) == {"a.png": ["cat"], "b.png": [], "c.png": ["bird"] * 3, "d.png": []}
    dropped = apply_operations([detection()], ops({"dropClasses": {"classes": ["dog"], "dropEmptyImages": True}}),
                               "pets")
    assert names(dropped) == ["a.png", "c.png", "d.png"]  # d.png had nothing to lose: it stays


def test_drop_classes_in_classification_drops_their_images() -> None:
    m = Manifest(dataset="c", task="classification", categories=CATS[:2],
                 images=[image("x.png", label=1), image("y.png", label=2), image("z.png")])
    out = apply_operations([m], ops({"dropClasses": {"classes": ["dog"]}}), "c")
    assert names(out) == ["x.png", "z.png"] and out.class_names() == ["cat"]


def test_convert_geometry() -> None:
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]]  # 20 x 10 at (10, 10)
    m = Manifest(dataset="s", task="object-detection", categories=CATS[:1], images=[image("p.png")],
                 annotations=[ann(0, 1, (0, 0, 99, 49), seg=square)])
    box = apply_operations([m], ops({"convertGeometry": {"to": "box"}}), "s").annotations[0]
    assert (box.bbox, box.area, box.segmentation) == ([10.0, 10.0, 20.0, 10.0], 200.0, None)
    mask = apply_operations([m], ops({"convertGeometry": {"to": "mask"}}), "s").annotations[0]
    assert isinstance(mask.segmentation, dict) and mask.segmentation["size"] == [50, 100]
    assert isinstance(mask.segmentation["counts"], str)
    assert mask.area == pytest.approx(200, rel=0.15)  # rasterised: the edge pixels decide a little


def test_assign_split_random_is_seeded_and_proportional() -> None:
    m = Manifest(dataset="s", task="object-detection", categories=CATS,
                 images=[image(f"{i:03}.png", tags=["val", "keep"]) for i in range(100)])
    op = {"assignSplit": {"method": "random", "seed": 1, "train": 70, "val": 20, "test": 10}}
    out = apply_operations([m], ops(op), "s")
    splits = [next(t for t in im.tags if t in ("train", "val", "test")) for im in out.images]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (70, 20, 10)
    assert all("keep" in im.tags and len(im.tags) == 2 for im in out.images)  # old split tag replaced
    assert apply_operations([m], ops(op), "s").digest() == out.digest()
    other = apply_operations([m], ops({"assignSplit": {**op["assignSplit"], "seed": 2}}), "s")
    assert other.digest() != out.digest()


def test_assign_split_from_tags() -> None:
    out = apply_operations([detection()], ops({"assignSplit": {"method": "tags",
                                                               "fromTags": {"train": ["day"], "test": ["night"]}}}),
                           "pets")
    assert [im.tags for im in out.images] == [["day", "train"], [], ["night", "test"], []]


def test_sample_is_seeded_and_stable() -> None:
    m = Manifest(dataset="s", task="object-detection", categories=CATS, images=[image(f"{i}.png") for i in range(20)])
    a = apply_operations([m], ops({"sample": {"n": 5, "seed": 4}}), "s")
    again = apply_operations([m], ops({"sample": {"n": 5, "seed": 4}}), "s")
    assert len(a.images) == 5 and a.digest() == again.digest()
    assert names(apply_operations([m], ops({"sample": {"n": 5, "seed": 5}}), "s")) != names(a)
    assert len(apply_operations([m], ops({"sample": {"n": 50}}), "s").images) == 20


def test_merge_unions_parents_and_maps_classes_by_name() -> None:
    other = Manifest(dataset="more", task="object-detection",
                     categories=[Category(id=1, name="dog"), Category(id=2, name="fish")],
                     images=[image("a.png", tags=["day"]), image("e.png")],
                     annotations=[ann(0, 1), ann(1, 2)])
    # a.png: the same image, but (cat, dog) in pets and only a dog in `more`: a conflict.
    with pytest.raises(OperationError, match=r"a\.png differs between pets-v1 and more-v1"):
        apply_operations([detection(), other], ops({"merge": {}}), "all", ["pets-v1", "more-v1"])
    out = apply_operations([detection(), other], ops({"merge": {"onConflict": "KeepFirst"}}), "all")
    assert names(out) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert [(c.id, c.name) for c in out.categories] == [(1, "cat"), (2, "dog"), (3, "bird"), (4, "fish")]
    assert objects(out)["e.png"] == ["fish"] and objects(out)["a.png"] == ["cat", "dog"]
    # Identical images in two parents are not a conflict.
    same = apply_operations([detection(), detection()], ops({"merge": {}}), "all")
    assert names(same) == names(detection())


def test_spec_validation_names_the_problem() -> None:
    base = {"dataset": "d", "parents": ["a", "b"]}
    with pytest.raises(ValidationError, match="the first operation must be merge"):
        DatasetVersionSpec.model_validate({**base, "operations": [{"sample": {"n": 1}}]})
    with pytest.raises(ValidationError, match="not both"):
        DatasetVersionSpec.model_validate({**base, "source": {"uri": "x", "format": "coco"},
                                           "operations": [{"merge": {}}]})
    with pytest.raises(ValidationError, match="exactly one of filter, merge"):
        DatasetVersionSpec.model_validate({**base, "operations": [{"merge": {}, "sample": {"n": 1}}]})
    with pytest.raises(ValidationError, match="train \\+ val \\+ test must be 100"):
        DatasetOperation.model_validate({"assignSplit": {"train": 50, "val": 10}})
