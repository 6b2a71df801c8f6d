"""File names a version cannot store (newlines, control characters, bytes that are not UTF-8), and images
outside ImageFolder's class folders: refused naming the file, or skipped and listed, the rest imported."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kubeforge.api.dataset_version import DatasetVersionSpec
from kubeforge.datasets.draft import DatasetImportError
from kubeforge.datasets.importer import import_dataset
from kubeforge.datasets.names import printable, unsafe_reason
from kubeforge.datasets.versions import list_versions, load_manifest
from kubeforge.store import LocalStore


def _png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="PNG")
    return buf.getvalue()


def _spec(root: Path, skip: bool = False, fmt: str = "imagefolder") -> DatasetVersionSpec:
    return DatasetVersionSpec.model_validate({"dataset": "pets", "source": {"uri": str(root), "format": fmt},
                                              "onInvalidImage": "Skip" if skip else "Fail"})


def _tree(root: Path, files: dict[Any, bytes]) -> Path:
    """Files by relative name: str, or bytes for a name that is not UTF-8 (written with os-level calls)."""
    for rel, data in files.items():
        path = os.path.join(os.fsencode(root), os.fsencode(rel)) if isinstance(rel, bytes) else str(root / rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    return root


GOOD = {"cat/a.png": _png((10, 10, 10)), "dog/b.png": _png((250, 250, 250))}
BAD_NAMES = [
    pytest.param("cat/two\nlines.png", "the control character '\\n'", r"cat/two\nlines.png", id="newline"),
    pytest.param("cat/bell\x07.png", "the control character '\\x07'", r"cat/bell\x07.png", id="control"),
    pytest.param(b"cat/caf\xe9.png", "bytes that are not UTF-8", r"cat/caf\xe9.png", id="not-utf8"),
]


@pytest.mark.parametrize(("name", "why", "shown"), BAD_NAMES)
def test_an_unsafe_name_fails_the_import_naming_the_file(tmp_path: Path, name: Any, why: str, shown: str) -> None:
    root = _tree(tmp_path / "src", {**GOOD, name: _png()})
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError) as err:
        import_dataset(_spec(root), store, progress=False)
    message = str(err.value)
    assert message.startswith(f"{root}/{shown}: the name holds {why}"), message
    assert "onInvalidImage is Fail" in message and message.isprintable()
    assert list_versions(store, "pets") == []  # nothing stored


@pytest.mark.parametrize(("name", "why", "shown"), BAD_NAMES)
def test_an_unsafe_name_is_skipped_and_listed_with_skip(tmp_path: Path, name: Any, why: str, shown: str) -> None:
    root = _tree(tmp_path / "src", {**GOOD, name: _png()})
    store = LocalStore(tmp_path / "store")
    result = import_dataset(_spec(root, skip=True), store, progress=False)
    assert [(s.file, s.reason) for s in result.skipped] == [(f"{root}/{shown}", f"the name holds {why}")]
    manifest = load_manifest(store, "pets", result.digest)
    assert [im.file_name for im in manifest.images] == ["cat/a.png", "dog/b.png"]


def test_safe_names_pass_the_screen() -> None:
    assert unsafe_reason("chats/été 2024/ü-ß (1).png") == ""  # non-ASCII UTF-8 and spaces are fine
    assert unsafe_reason("a\tb.png") == "the name holds the control character '\\t'"
    assert unsafe_reason("a\x7fb.png") == "the name holds the control character '\\x7f'"
    assert printable(os.fsdecode(b"\xc3\xa9t\xc3\xa9/caf\xe9\n.png")) == "été/caf\\xe9\\n.png"


def test_images_outside_the_class_folders_fail_naming_the_file_and_the_layout(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {**GOOD, "stray.png": _png(), "README.md": b"not an image: ignored"})
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatasetImportError) as err:
        import_dataset(_spec(root), store, progress=False)
    assert str(err.value).startswith(
        f"{root}/stray.png: an image outside the class folders (at the top level): its class is unknown; "
        "expected <root>/<class>/<image>")
    result = import_dataset(_spec(root, skip=True), store, progress=False)
    assert [s.file for s in result.skipped] == [f"{root}/stray.png"]
    assert result.manifest.class_names() == ["cat", "dog"] and result.stats.images == 2


def test_split_folders_record_each_images_split(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {
        "train/cat/a.png": _png((1, 2, 3)), "train/dog/b.png": _png((4, 5, 6)),
        "valid/cat/c.png": _png((7, 8, 9)), "test/dog/sub/d.png": _png((9, 9, 9)),
    })
    result = import_dataset(_spec(root), LocalStore(tmp_path / "store"), progress=False)
    manifest = result.manifest
    assert manifest.class_names() == ["cat", "dog"]
    assert {im.file_name: (manifest.categories[im.category_id - 1].name, im.tags) for im in manifest.images} == {
        "train/cat/a.png": ("cat", ["train"]), "train/dog/b.png": ("dog", ["train"]),
        "valid/cat/c.png": ("cat", ["val"]), "test/dog/sub/d.png": ("dog", ["test"])}


def test_split_layout_errors(tmp_path: Path) -> None:
    mixed = _tree(tmp_path / "mixed", {"train/cat/a.png": _png(), "dog/b.png": _png()})
    with pytest.raises(DatasetImportError, match=r"top-level folders train are split folders but dog is not; "
                       r"expected either <root>/<class>/<image> or <root>/<split>/<class>/<image>"):
        import_dataset(_spec(mixed), LocalStore(tmp_path / "store"), progress=False)
    shallow = _tree(tmp_path / "shallow", {"train/cat/a.png": _png(), "val/b.png": _png((1, 1, 1))})
    with pytest.raises(DatasetImportError) as err:
        import_dataset(_spec(shallow), LocalStore(tmp_path / "store"), progress=False)
    assert str(err.value).startswith(f"{shallow}/val/b.png: an image outside the class folders (directly in a split "
                                     "folder): its class is unknown; expected <root>/<split>/<class>/<image>")


def test_a_class_folder_without_images_is_noted(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src", {**GOOD, "bird/notes.txt": b"todo", "bird/x.heic": b"?"})
    result = import_dataset(_spec(root), LocalStore(tmp_path / "store"), progress=False)
    assert result.manifest.class_names() == ["cat", "dog"]
    [note] = result.skipped
    assert note.file == f"{root}/bird/"
    assert note.reason.startswith("class folder without images (2 other files, e.g. notes.txt): class 'bird' is "
                                  "left out; expected images with one of .bmp, ")
