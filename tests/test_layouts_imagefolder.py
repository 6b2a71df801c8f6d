"""ImageFolder export carries the split: `<split>/<class>/<image>`, read by torchvision's ImageFolder
(the independent reader) per split, and imported back with the same digest and split tags."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.export import export_version
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.versions import load_manifest
from kubeforge.store import LocalStore

LAYOUT = {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 2}}


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + seed, 6), (seed * 20 % 256, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _write(root: Path, layout: dict[str, dict[str, int]] | dict[str, int], split: bool) -> Path:
    n = 0
    for top, inner in layout.items():
        for cls, count in (inner.items() if split else [(top, inner)]):  # type: ignore[union-attr]
            for _ in range(count):
                path = root / (f"{top}/{cls}" if split else cls) / f"{n:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_png(n))
                n += 1
    return root


def _import(store: LocalStore, root: Path) -> str:
    spec = DatasetVersionSpec.model_validate({"dataset": "pets", "source": {"uri": str(root), "format": "imagefolder"}})
    return import_dataset(spec, store, progress=False).digest


def test_split_imagefolder_exports_split_folders_torchvision_reads(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    store = LocalStore(tmp_path / "store")
    digest = _import(store, _write(tmp_path / "src", LAYOUT, split=True))
    out = tmp_path / "out"
    result = export_version(store, "pets", digest, "imagefolder", out)
    assert not result.losses
    for split, classes in LAYOUT.items():
        ds = ImageFolder(str(out / split))
        assert ds.classes == sorted(classes)
        got = {c: sum(1 for _, t in ds.samples if ds.classes[t] == c) for c in ds.classes}
        assert got == classes, split
    again = _import(LocalStore(tmp_path / "store2"), out)
    assert again == digest
    manifest = load_manifest(store, "pets", digest)
    assert sorted({t for im in manifest.images for t in im.tags}) == ["train", "val"]


def test_imagefolder_without_splits_keeps_class_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    digest = _import(store, _write(tmp_path / "src", {"cat": 2, "dog": 1}, split=False))
    out = tmp_path / "out"
    export_version(store, "pets", digest, "imagefolder", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["cat/000.png", "cat/001.png",
                                                                                "dog/002.png"]
    assert _import(LocalStore(tmp_path / "store2"), out) == digest
