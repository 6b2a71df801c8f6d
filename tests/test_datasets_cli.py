"""`kubeforge datasets import` and `inspect` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.synth import generate_shapes_coco, generate_shapes_imagefolder

KUBEFORGE = str(Path(sys.executable).parent / "kubeforge")


def kf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBEFORGE, "datasets", *args], capture_output=True, text=True, timeout=120)


def test_import_then_inspect(tmp_path: Path) -> None:
    root = generate_shapes_imagefolder(tmp_path / "src", n_per_class=2, size=24, seed=1)
    (root / "square" / "0001.png").write_bytes(b"not a png")
    store = str(tmp_path / "store")
    failed = kf("import", str(root), "--dataset", "toy", "--format", "imagefolder", "--store", store)
    assert failed.returncode == 1 and "square/0001.png: not a readable image" in failed.stderr
    done = kf("import", str(root), "--dataset", "toy", "--format", "imagefolder", "--store", store, "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "square/0001.png" in done.stderr and "imported: toy@" in done.stdout and "5 images" in done.stdout
    digest = done.stdout.split("toy@")[1].split()[0]
    listed = kf("inspect", "toy", "--store", store)
    assert listed.stdout.split() == [digest]
    shown = kf("inspect", "toy", digest, "--store", store)
    assert shown.returncode == 0 and "classification, 5 images" in shown.stdout
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip() for line in shown.stdout.splitlines()
            if line.count("│") == 5}
    assert rows == {"circle": "2", "square": "1", "triangle": "2"}
    missing = kf("inspect", "toy", "0" * 64, "--store", store)
    assert missing.returncode == 1 and "no version" in missing.stderr


def test_truth_prints_the_ground_truth_boxes(tmp_path: Path) -> None:
    ann = generate_shapes_coco(tmp_path / "d", n_images=2, size=64, seed=1)
    coco = json.loads(ann.read_text())
    first = coco["images"][0]
    expected = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    result = CliRunner().invoke(app, ["datasets", "truth", str(ann), first["file_name"]])
    assert result.exit_code == 0, result.output
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for a in expected:
        assert names[a["category_id"]] in result.output
        assert f"{a['bbox'][0]:.1f}" in result.output
    missing = CliRunner().invoke(app, ["datasets", "truth", str(ann), "nope.png"])
    assert missing.exit_code == 1
