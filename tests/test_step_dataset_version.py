"""The dataset-version step through its real entrypoint, and from an S3 source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.datasets.versions import load_manifest
from kubeforge.steps import dataset_version
from kubeforge.steps.spec import DatasetVersionRun
from kubeforge.store import LocalStore

KUBEFORGE = Path(sys.executable).parent / "kubeforge"


def run_spec(store: str, uri: str, **spec: Any) -> dict[str, Any]:
    return {
        "store": store, "namespace": "default", "name": "shapes-v1",
        "spec": {"dataset": "shapes", "source": {"uri": uri, "format": "coco"}, **spec},
    }


def step(tmp_path: Path, spec: dict[str, Any]) -> tuple[subprocess.CompletedProcess, Path]:
    spec_path, result = tmp_path / "run.json", tmp_path / "out" / "result.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [str(KUBEFORGE), "step", "dataset-version", "--spec", str(spec_path), "--result", str(result)],
        capture_output=True, text=True, timeout=120,
    )
    return proc, result


def test_step_entrypoint_writes_result(tmp_path: Path) -> None:
    generate_shapes_coco(tmp_path / "src", n_images=5, size=40, seed=2)
    store_dir = tmp_path / "store"
    proc, result = step(tmp_path, run_spec(str(store_dir), str(tmp_path / "src")))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(result.read_text())
    assert set(out) == {"digest", "manifestUri", "task", "classes", "stats", "skipped"}
    assert out["task"] == "object-detection" and out["classes"] == ["circle", "square", "triangle"]
    assert out["stats"]["images"] == 5 and "objectsPerClass" in out["stats"] and out["skipped"] == []
    assert Path(out["manifestUri"]).is_file()
    manifest = load_manifest(LocalStore(store_dir), "shapes", out["digest"])
    assert len(manifest.images) == 5


def test_failing_import_exits_nonzero_naming_the_file(tmp_path: Path) -> None:
    generate_shapes_coco(tmp_path / "src", n_images=4, size=40, seed=2)
    (tmp_path / "src" / "images" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    store_dir = tmp_path / "store"
    proc, result = step(tmp_path, run_spec(str(store_dir), str(tmp_path / "src")))
    assert proc.returncode != 0
    assert "images/000001.png" in proc.stderr and "not a readable image" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not result.exists()
    assert list(LocalStore(store_dir).list("datasets/")) == []  # no manifest, no stats


def test_run_is_idempotent_and_reports_skips(tmp_path: Path) -> None:
    generate_shapes_coco(tmp_path / "src", n_images=4, size=40, seed=3)
    (tmp_path / "src" / "images" / "000000.png").write_bytes(b"garbage")
    spec = DatasetVersionRun.model_validate(
        run_spec(str(tmp_path / "store"), str(tmp_path / "src"), onInvalidImage="Skip")
    )
    first = dataset_version.run(spec)
    stats_file = Path(first["manifestUri"]).with_name("stats.json")
    stats_file.unlink()  # as if a writer stopped between manifest and stats
    second = dataset_version.run(spec)
    assert first == second and first["stats"]["images"] == 3
    assert [Path(s["file"]).name for s in first["skipped"]] == ["000000.png"]
    assert json.loads(stats_file.read_text())["images"] == 3  # recomputed from the manifest


@pytest.mark.s3
def test_import_from_s3_source_into_s3_store(tmp_path: Path, s3_store: Any) -> None:
    generate_shapes_coco(tmp_path / "src", n_images=4, size=40, seed=4)
    s3_store.put_tree("raw/shapes", tmp_path / "src")
    source_uri = f"{s3_store.uri.rstrip('/')}/raw/shapes/"
    out = dataset_version.run(DatasetVersionRun.model_validate(run_spec(s3_store.uri, source_uri)))
    assert out["manifestUri"].startswith("s3://") and out["stats"]["images"] == 4
    # The same data from a local directory is the same version: the digest is the content's.
    local = dataset_version.run(
        DatasetVersionRun.model_validate(run_spec(str(tmp_path / "store"), str(tmp_path / "src")))
    )
    assert local["digest"] == out["digest"]
    manifest = load_manifest(s3_store, "shapes", out["digest"])
    assert all(s3_store.exists(f"blobs/sha256/{im.blob[:2]}/{im.blob}") for im in manifest.images)
