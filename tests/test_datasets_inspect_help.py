"""`kubeforge datasets inspect` takes VERSION like every datasets command (the old DATASET DIGEST still works,
with a note), and no help text of `kubeforge datasets ...` loses words when rendered."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from typer.testing import CliRunner

from kubeforge.api import parse_resource
from kubeforge.cli.main import app
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.versions import write_version
from kubeforge.local.state import Record, StateDir
from kubeforge.store import open_store


def _manifest(tags: list[list[str]]) -> Manifest:
    return Manifest.model_validate({
        "dataset": "d", "task": "classification", "categories": [{"id": 1, "name": "cat"}],
        "images": [{"file_name": f"{i}.png", "blob": f"{i:064x}", "width": 4, "height": 4, "bytes": 10,
                    "tags": t, "category_id": 1} for i, t in enumerate(tags)],
        "annotations": [],
    })


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, str]:
    """(store, state directory, digest): a version of `d` with a recorded split, named d-v1 in the state."""
    store = open_store(tmp_path.joinpath("store").as_uri())
    digest = write_version(store, _manifest([["train"], ["train", "night"], ["val"], ["test"], []]))[0]
    res = parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": "DatasetVersion",
                          "metadata": {"name": "d-v1"},
                          "spec": {"dataset": "d", "source": {"uri": "data/d", "format": "coco"}},
                          "status": {"phase": "Succeeded", "digest": digest}})
    StateDir(tmp_path / "state").save(Record(res, store=store.uri))
    return tmp_path / "store", tmp_path / "state", digest


def _inspect(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["datasets", "inspect", *args])
    return result.exit_code, result.stdout, result.stderr


def test_inspect_takes_a_version_name_or_dataset_at_digest(world: tuple[Path, Path, str]) -> None:
    store, state, digest = world
    opts = ("--store", str(store), "--state-dir", str(state))
    by_name = _inspect("d-v1", *opts)
    by_digest = _inspect(f"d@{digest[:6]}", *opts)
    assert by_name[0] == by_digest[0] == 0, (by_name, by_digest)
    assert by_name[1] == by_digest[1]
    assert f"d@{digest}: classification, 5 images" in by_name[1]
    assert "splits: 2 train, 1 val, 1 test, 1 untagged" in by_name[1]
    # A dataset name lists its versions; the old two-argument form still works, with a note.
    assert _inspect("d", *opts)[1].split() == [digest]
    code, out, err = _inspect("d", digest[:8], *opts)
    assert code == 0 and out == by_name[1]
    assert f"`datasets inspect d {digest[:8]}` is deprecated; write `datasets inspect d@{digest[:8]}`" in err
    code, _, err = _inspect("nope", *opts)
    assert code == 1 and "no DatasetVersion default/nope" in err and "no dataset 'nope'" in err
    code, _, err = _inspect(f"d@{digest[:5]}", *opts)
    assert code == 1 and "give at least 6 characters" in err


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        out.append(((*path, name), cmd))
        if hasattr(cmd, "list_commands"):  # a group (typer vendors its own click: no isinstance)
            out += _commands(cmd, (*path, name))
    return out


def _squash(text: str) -> str:
    return re.sub(r"[\s│]+", "", text)


def test_no_help_text_is_cut() -> None:
    top = typer.main.get_command(app)
    datasets = top.get_command(click.Context(top), "datasets")  # type: ignore[attr-defined]
    commands = _commands(datasets)
    assert {"import", "inspect", "diff", "synth shapes"} <= {" ".join(p) for p, _ in commands}
    for path, cmd in commands:
        result = CliRunner().invoke(app, ["datasets", *path, "--help"], env={"COLUMNS": "100"},
                                    terminal_width=100)
        assert result.exit_code == 0, result.output
        for param in cmd.params:
            text = getattr(param, "help", None)
            if text:
                assert _squash(text) in _squash(result.output), f"datasets {' '.join(path)}: {param.name}: {text!r}"


def test_synth_splits_writes_the_standard_coco_layout(tmp_path: Path) -> None:
    import json

    from kubeforge.datasets.synth import generate_shapes_coco

    out = tmp_path / "coco"
    result = CliRunner().invoke(app, ["datasets", "synth", "shapes", "--out", str(out), "--images", "10",
                                      "--size", "32", "--splits", "train,val"])
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "annotations/instances_train.json", "annotations/instances_val.json",
        *[f"train/{i:06d}.png" for i in (0, 1, 2, 3, 5, 6, 7, 8)], "val/000004.png", "val/000009.png"]
    plain = json.loads(generate_shapes_coco(tmp_path / "plain", n_images=10, size=32, seed=0).read_text())
    docs = {s: json.loads((out / "annotations" / f"instances_{s}.json").read_text()) for s in ("train", "val")}
    assert sorted(im["id"] for d in docs.values() for im in d["images"]) == [im["id"] for im in plain["images"]]
    assert sorted(a["id"] for d in docs.values() for a in d["annotations"]) == [a["id"] for a in plain["annotations"]]
    for split, doc in docs.items():
        ids = {im["id"] for im in doc["images"]}
        assert all(a["image_id"] in ids for a in doc["annotations"])
        for im in doc["images"]:
            assert (out / split / im["file_name"]).read_bytes() == (tmp_path / "plain" / "images" /
                                                                    im["file_name"]).read_bytes()
    bad = CliRunner().invoke(app, ["datasets", "synth", "shapes", "--out", str(tmp_path / "x"), "--splits", "val"])
    assert bad.exit_code == 2 and "expected train and any of val, test" in bad.output
