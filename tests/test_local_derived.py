"""Derived DatasetVersions and auto-versioning through the local runner with the real dataset step.

Real `kubeforge step dataset-version` subprocesses on a 6-image synthetic COCO set (32 px).
The train step is a stand-in (it reports the digest its run spec carried): what is tested
here is that a TrainingJob with `source` trains on the exact version the runner made for it.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.lineage import lineage_key, replay
from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.datasets.versions import load_manifest
from kubeforge.local.manifests import load_manifests
from kubeforge.local.runner import Runner
from kubeforge.local.state import StateDir
from kubeforge.store import open_store

BASE = """apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {name: shapes-v1}
spec: {dataset: shapes, source: {uri: data, format: coco}}
"""
DERIVED = """apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {name: circles}
spec:
  dataset: shapes
  parents: [shapes-v1]
  operations:
    - filter: {classes: [circle]}
    - assignSplit: {method: random, seed: 3, train: 50, val: 50}
---
apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {name: same}
spec:
  dataset: shapes
  parents: [shapes-v1]
  operations: [{filter: {minWidth: 1}}]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("derived")
    generate_shapes_coco(root / "data", n_images=6, size=32, seed=2, max_objects=2)
    (root / "base.yaml").write_text(BASE)
    (root / "derived.yaml").write_text(DERIVED)
    result = CliRunner().invoke(app, ["run", "-f", str(root / "base.yaml"), "--state-dir", str(root / "state"),
                                      "--store", str(root / "store")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["run", "-f", str(root / "derived.yaml"), "--state-dir", str(root / "state"),
                                      "--store", str(root / "store")])
    assert result.exit_code == 0, result.output
    return root


def status(root: Path, name: str) -> dict:
    return StateDir(root / "state").get("DatasetVersion", "default", name).resource.status.dump()  # type: ignore


def test_derived_version_filters_and_records_its_lineage(project: Path) -> None:
    store = open_store((project / "store").as_uri())
    base, child = status(project, "shapes-v1"), status(project, "circles")
    assert child["phase"] == "Succeeded" and child["digest"] != base["digest"]
    assert child["parents"] == [{"name": "shapes-v1", "dataset": "shapes", "digest": base["digest"]}]
    assert [next(iter(op)) for op in child["lineage"]["operations"]] == ["filter", "assignSplit"]

    parent = load_manifest(store, "shapes", base["digest"])
    manifest = load_manifest(store, "shapes", child["digest"])
    with_circle = {im.file_name for im, objs in zip(parent.images, parent.annotations_by_image(), strict=True)
                   if any(parent.category_name(a.category_id) == "circle" for a in objs)}
    assert 0 < len(with_circle) < len(parent.images)  # the seed gives a case where the filter matters
    assert {im.file_name for im in manifest.images} == with_circle
    assert sorted(t for im in manifest.images for t in im.tags if t in ("train", "val")) == \
        ["train"] * (len(with_circle) // 2) + ["val"] * (len(with_circle) - len(with_circle) // 2)
    assert child["changes"]["imagesRemoved"] == len(parent.images) - len(with_circle)
    assert child["changes"]["against"] == base["digest"]
    assert next(c for c in child["conditions"] if c["type"] == "ContentChanged")["reason"] == "Changed"

    # The lineage beside the manifest replays to the same digest.
    assert store.exists(lineage_key("shapes", child["digest"]))
    rebuilt, matches = replay(store, "shapes", child["digest"])
    assert matches and rebuilt.digest() == child["digest"]


def test_same_content_as_the_parent_is_unchanged_and_not_stored_again(project: Path) -> None:
    base, same = status(project, "shapes-v1"), status(project, "same")
    assert same["phase"] == "Succeeded"
    assert same["unchanged"] is True and same["digest"] == base["digest"]
    cond = next(c for c in same["conditions"] if c["type"] == "ContentChanged")
    assert (cond["status"], cond["reason"]) == ("False", "Unchanged")
    assert "lineageUri" not in same
    versions = sorted(p.name for p in (project / "store" / "datasets" / "shapes").iterdir())
    assert versions == sorted({base["digest"], status(project, "circles")["digest"]})
    # The first version of a dataset is always created.
    assert [c["type"] for c in base["conditions"]] == ["Ready", "Reconciling", "Stalled"] and "unchanged" not in base


SHIM = r'''
import json, subprocess, sys
from pathlib import Path
step = sys.argv[1]
if step == "dataset-version":
    sys.exit(subprocess.call([sys.executable, "-m", "kubeforge.cli.main", "step", *sys.argv[1:]]))
spec = json.loads(Path(sys.argv[3]).read_text())
Path(sys.argv[5]).write_text(json.dumps({"datasetDigest": spec["dataset"]["digest"],
                                          "experimentUri": spec["experiment_prefix"]}))
'''

JOB = """apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {name: quick}
spec:
  source: {dataset: shapes, uri: data, format: coco}
  task: object-detection
  model: {name: ssdlite320_mobilenet_v3_large}
"""


def test_a_training_job_with_a_source_trains_on_the_version_made_for_it(project: Path, tmp_path: Path) -> None:
    (project / "job.yaml").write_text(JOB)
    shim = tmp_path / "shim.py"
    shim.write_text(SHIM)
    state = StateDir(tmp_path / "state")
    runner = Runner(state, (project / "store").as_uri(), Console(file=io.StringIO()),
                    step_command=[sys.executable, str(shim)])
    plan = runner.plan(load_manifests(project / "job.yaml"))
    data = plan.get(("DatasetVersion", "default", "quick-data"))
    assert data is not None and data.owner == ("TrainingJob", "default", "quick")
    assert data.resource.spec.source.uri == str(project / "data")  # relative to the job's manifest
    outcomes = runner.run(plan)
    assert [(o.key[2], o.action) for o in outcomes] == [("quick-data", "succeeded"), ("quick", "succeeded")]
    dsv = state.get("DatasetVersion", "default", "quick-data").resource
    job = state.get("TrainingJob", "default", "quick").resource
    assert dsv.metadata.model_extra["ownerReferences"][0]["name"] == "quick"  # type: ignore[index]
    assert job.status.dataset_digest == dsv.status.digest == status(project, "shapes-v1")["digest"]  # type: ignore
    run_spec = json.loads((state.run_dir("TrainingJob", "default", "quick") / "run.json").read_text())
    assert run_spec["dataset"] == {"dataset": "shapes", "digest": dsv.status.digest,  # type: ignore[union-attr]
                                   "name": "quick-data"}
    # Reused on the next run: same source, nothing runs again.
    again = runner.run(runner.plan(load_manifests(project / "job.yaml")))
    assert [o.action for o in again] == ["unchanged", "unchanged"]


def test_a_training_job_needs_exactly_one_of_dataset_version_and_source(tmp_path: Path) -> None:
    both = JOB.replace("  source:", "  datasetVersion: shapes-v1\n  source:")
    (tmp_path / "both.yaml").write_text(both)
    result = CliRunner().invoke(app, ["run", "-f", str(tmp_path / "both.yaml"), "--dry-run",
                                      "--state-dir", str(tmp_path / "state")])
    assert result.exit_code != 0
    assert "exactly one of datasetVersion" in result.output and "TrainingJob/quick" in result.output
