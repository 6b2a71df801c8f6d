"""diff_manifests on constructed cases with known answers."""

from __future__ import annotations

import hashlib
import json

from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.diff import ImageChange, diff_manifests
from kubeforge.datasets.manifest import Category, Manifest, ManifestAnnotation, ManifestImage
from kubeforge.datasets.versions import write_version
from kubeforge.store import open_store


def image(name: str, content: str | None = None, tags: list[str] | None = None,
          label: int | None = None) -> ManifestImage:
    return ManifestImage(file_name=name, blob=hashlib.sha256((content or name).encode()).hexdigest(), width=64,
                         height=64, bytes=1, tags=tags or [], category_id=label)


def box(i: int, cat: int, x: float = 1.0) -> ManifestAnnotation:
    return ManifestAnnotation(image=i, category_id=cat, bbox=[x, 1, 5, 5], area=25)


def version_a() -> Manifest:
    return Manifest(
        dataset="d", task="object-detection", categories=[Category(id=1, name="cat"), Category(id=2, name="dog")],
        images=[image("keep.png"), image("edit.png"), image("gone.png"), image("swap.png")],
        annotations=[box(0, 1), box(1, 1), box(1, 2), box(2, 2), box(2, 2), box(3, 1)],
    )


def version_b() -> Manifest:
    # Class ids renumbered on purpose: classes are compared by name.
    return Manifest(
        dataset="d", task="object-detection",
        categories=[Category(id=7, name="dog"), Category(id=9, name="cat"), Category(id=5, name="fox")],
        images=[image("keep.png"), image("edit.png", tags=["val"]), image("new.png"),
                image("swap.png", content="other bytes")],
        annotations=[box(0, 9),                       # keep.png: unchanged
                     box(1, 9, x=3.0), box(1, 5),     # edit.png: cat moved, dog removed, fox added
                     box(2, 7),                       # new.png: one dog
                     box(3, 9)],                      # swap.png: new bytes, same annotation
    )


def test_constructed_diff() -> None:
    d = diff_manifests(version_a(), version_b())
    assert d.images_added == ["new.png"]
    assert d.images_removed == ["gone.png"]
    assert d.images_modified == ["swap.png"]
    assert d.images_retagged == ["edit.png"]
    # added: fox on edit.png + dog on new.png; removed: dog on edit.png + 2 dogs on gone.png; changed: the cat moved.
    assert (d.annotations_added, d.annotations_removed, d.annotations_changed) == (2, 3, 1)
    assert d.images_with_annotation_changes == [
        ImageChange("edit.png", added=1, removed=1, changed=1), ImageChange("gone.png", removed=2),
        ImageChange("new.png", added=1)]
    assert d.classes_added == ["fox"] and d.classes_removed == []
    assert d.objects_per_class == {"dog": -2, "fox": 1}  # cat: 3 -> 3
    changes = d.changes("abc").dump()
    assert changes["imagesAdded"] == 1 and changes["annotationsChanged"] == 1 and changes["against"] == "abc"


def test_identical_content_is_an_empty_diff_whatever_the_order_or_ids() -> None:
    a = version_a()
    shuffled = Manifest(dataset="d", task="object-detection",
                        categories=[Category(id=3, name="dog"), Category(id=4, name="cat")],
                        images=list(reversed(a.images)),
                        annotations=[box(3 - x.image, 4 if x.category_id == 1 else 3) for x in a.annotations])
    d = diff_manifests(a, shuffled)
    assert d.empty and d.objects_per_class == {}
    assert not diff_manifests(a, a.model_copy(update={"images": a.images[:-1],
                                                      "annotations": a.annotations[:-1]})).empty


def test_classification_labels_count_as_objects() -> None:
    cats = [Category(id=0, name="cat"), Category(id=1, name="dog")]
    a = Manifest(dataset="c", task="classification", categories=cats,
                 images=[image("1.png", label=0), image("2.png", label=0)])
    b = Manifest(dataset="c", task="classification", categories=cats,
                 images=[image("1.png", label=0), image("2.png", label=1), image("3.png", label=1)])
    d = diff_manifests(a, b)
    assert (d.annotations_added, d.annotations_removed, d.annotations_changed) == (2, 1, 0)  # relabel: -cat +dog
    assert d.objects_per_class == {"cat": -1, "dog": 2}


def test_diff_scales_linearly() -> None:
    """10k images: a dict/set diff takes well under a second (a quadratic one would take minutes)."""
    import time

    n = 10_000
    cats = [Category(id=1, name="x")]
    a = Manifest(dataset="d", task="object-detection", categories=cats, images=[image(f"{i}.png") for i in range(n)],
                 annotations=[box(i, 1) for i in range(n)])
    b = a.model_copy(update={"images": [*a.images[1:], image("extra.png")]})
    b = b.model_copy(update={"annotations": [box(i, 1) for i in range(n)]})
    start = time.perf_counter()
    d = diff_manifests(a, b)
    assert time.perf_counter() - start < 5
    assert d.images_added == ["extra.png"] and d.images_removed == ["0.png"]


def test_cli_diff_by_digest_prefix_with_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(tmp_path.as_uri())
    da, _ = write_version(store, version_a())
    db, _ = write_version(store, version_b())
    cli = CliRunner()
    out = cli.invoke(app, ["datasets", "diff", f"d@{da[:10]}", f"d@{db}", "--store", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["images_added"] == ["new.png"] and data["objects_per_class"] == {"dog": -2, "fox": 1}
    shown = cli.invoke(app, ["datasets", "diff", f"d@{da}", f"d@{db}", "--store", str(tmp_path)])
    assert shown.exit_code == 0 and "new.png" in shown.stdout and "fox" in shown.stdout
    missing = cli.invoke(app, ["datasets", "diff", "d@ffff", f"d@{db}", "--store", str(tmp_path)])
    assert missing.exit_code == 1 and "d@ffff" in missing.output
