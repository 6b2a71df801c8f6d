"""PredictionJob in local mode, end to end through `kubeforge run -f`: a tiny classifier trained for one epoch,
its ONNX export applied with ONNX Runtime to a DatasetVersion (the output version's parent, counts, model and
threshold checked) and to a folder with an unreadable image in the middle (the run fails naming it, keeps
what it predicted, and `kubeforge run` again continues from there once the file is fixed)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from kubeforge.datasets.operations import score_of
from kubeforge.datasets.versions import load_manifest
from kubeforge.predict import to_dataset
from kubeforge.store import open_store
from kubeforge.testing.cli import get_json, kubeforge
from kubeforge.testing.local_world import classifiers, local_world

JOBS = classifiers(("clf", "resnet18")) + """---
apiVersion: kubeforge.io/v1alpha1
kind: PredictionJob
metadata: {name: pred}
spec:
  model: {trainingJob: clf}
  input: {datasetVersion: shapes-cls}
  output: {dataset: shapes-predicted}
"""

FOLDER_JOB = """
apiVersion: kubeforge.io/v1alpha1
kind: PredictionJob
metadata: {name: pred-folder}
spec:
  model: {trainingJob: clf}
  input: {source: {uri: folder}}
  threshold: 0.3
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with local_world(tmp_path_factory.mktemp("predict-local"), images=4) as (work, env):
        (work / "jobs.yaml").write_text(JOBS)
        kubeforge("run", "-f", str(work / "jobs.yaml"), env=env)
        yield work, env


@pytest.mark.slow
def test_a_trainingjobs_export_predicts_on_a_dataset_version(world: Any) -> None:
    work, env = world
    data = get_json("datasetversion", "shapes-cls", env)["status"]
    job = get_json("trainingjob", "clf", env)["status"]
    pred = get_json("predictionjob", "pred", env)["status"]
    assert pred["phase"] == "Succeeded", pred
    assert pred["parents"] == [{"name": "shapes-cls", "dataset": "shapes-cls", "digest": data["digest"]}]
    images = data["stats"]["images"]
    assert pred["images"] == images == pred["progress"]["done"] == pred["progress"]["total"]
    assert pred["predictions"] == images  # a classifier labels every image
    assert pred["threshold"] == 0.5  # no spec.threshold, no Benchmark: the fallback
    assert (pred["trainingJob"], pred["trainingRun"]) == ("clf", job["runId"])
    assert pred["model"] == f"TrainingJob/clf run {job['runId']}" and pred["input"] == "DatasetVersion/shapes-cls"
    store = open_store((work / "store").as_uri())
    parent = load_manifest(store, "shapes-cls", data["digest"])
    out = load_manifest(store, "shapes-predicted", pred["digest"])
    assert [(i.file_name, i.blob) for i in out.images] == [(i.file_name, i.blob) for i in parent.images]
    assert {c.name: c.id for c in out.categories} == {c.name: c.id for c in parent.categories}
    for im in out.images:  # the parent's split tags stay; the score is added
        assert im.category_id is not None and any(t.startswith("score=") for t in im.tags)
    source = to_dataset.read_source(store, "shapes-predicted", pred["digest"])
    assert source is not None and source["model"]["run"] == job["runId"] and source["threshold"] == 0.5
    assert source["parents"][0]["digest"] == data["digest"]


@pytest.mark.slow
def test_a_bad_image_fails_the_run_and_a_rerun_continues(world: Any) -> None:
    work, env = world
    folder = work / "folder"
    folder.mkdir()
    sources = sorted((work / "data").rglob("*.png"))
    for i, path in enumerate(sources[:6]):
        shutil.copy(path, folder / f"img{i:02d}.png")
    good = (folder / "img03.png").read_bytes()
    (folder / "img03.png").write_bytes(b"truncated")
    (work / "folder.yaml").write_text(FOLDER_JOB)

    proc = kubeforge("run", "-f", str(work / "jobs.yaml"), "-f", str(work / "folder.yaml"), env=env, check=False)
    assert proc.returncode != 0
    status = get_json("predictionjob", "pred-folder", env)["status"]
    assert status["phase"] == "Failed"
    assert f"{folder}/img03.png" in status["message"] and "3 predictions kept at" in status["message"]
    assert status["progress"]["done"] == 3 and status["progress"]["total"] == 6

    (folder / "img03.png").write_bytes(good)
    kubeforge("run", "-f", str(work / "jobs.yaml"), "-f", str(work / "folder.yaml"), env=env)
    status = get_json("predictionjob", "pred-folder", env)["status"]
    assert status["phase"] == "Succeeded" and status["resumed"] == 3 and status["images"] == 6
    assert status["threshold"] == 0.3 and status["parents"] == [] and status["dataset"] == "pred-folder"
    assert len(status["runs"]) == 1  # the same run, continued


REVIEWED = """
apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {{name: shapes-reviewed}}
spec:
  dataset: shapes-reviewed
  parents: [{parent}]
  operations:
    - filter: {{minScore: {bar}, minAnnotations: 1}}
"""


@pytest.mark.slow
def test_a_version_derived_from_the_predictions_in_yaml(world: Any) -> None:
    """`parents: [PredictionJob/pred]` with `filter: {minScore}`: the confident predictions, as a version."""
    work, env = world
    pred = get_json("predictionjob", "pred", env)["status"]
    store = open_store((work / "store").as_uri())
    scores = {im.file_name: score_of(im.tags) for im in load_manifest(store, "shapes-predicted", pred["digest"]).images}
    bar = sorted(s for s in scores.values() if s is not None)[len(scores) // 2]  # the median: half of them go
    confident = sorted(name for name, score in scores.items() if score is not None and score >= bar)
    assert 0 < len(confident) < len(scores), scores

    (work / "reviewed.yaml").write_text(REVIEWED.format(parent="PredictionJob/pred", bar=bar))
    kubeforge("run", "-f", str(work / "reviewed.yaml"), env=env)  # the PredictionJob from the state directory
    status = get_json("datasetversion", "shapes-reviewed", env)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["parents"] == [{"name": "PredictionJob/pred", "dataset": "shapes-predicted",
                                  "digest": pred["digest"]}]
    manifest = load_manifest(store, "shapes-reviewed", status["digest"])
    assert sorted(im.file_name for im in manifest.images) == confident
    assert all(score_of(im.tags) == scores[im.file_name] for im in manifest.images)
    lineage = kubeforge("datasets", "lineage", "shapes-reviewed", "--replay", env=env).stdout
    assert "PredictionJob/pred" in lineage and "minScore" in lineage and "replayed: shapes-reviewed@" in lineage

    # A parent that is no PredictionJob's, or not of the form, is refused naming the field.
    (work / "bad.yaml").write_text(REVIEWED.format(parent="PredictionJob/nope", bar=bar))
    proc = kubeforge("run", "-f", str(work / "bad.yaml"), env=env, check=False)
    assert proc.returncode != 0 and "spec.parents[0]: PredictionJob 'nope' not found" in proc.stdout + proc.stderr
    (work / "bad.yaml").write_text(REVIEWED.format(parent="TrainingJob/clf", bar=bar))
    proc = kubeforge("run", "-f", str(work / "bad.yaml"), env=env, check=False)
    assert proc.returncode != 0 and "spec.parents[0]: Value error, 'TrainingJob/clf' is not a DatasetVersion name " \
        "or PredictionJob/<name>" in proc.stderr

    # The PredictionJob changes (its output is another dataset: a new version, a new digest): the derived
    # version follows it on the next run.
    (work / "moved.yaml").write_text(JOBS.replace("output: {dataset: shapes-predicted}",
                                                  "output: {dataset: shapes-predicted-2}"))
    kubeforge("run", "-f", str(work / "moved.yaml"), "-f", str(work / "reviewed.yaml"), env=env)
    moved = get_json("predictionjob", "pred", env)["status"]
    assert moved["dataset"] == "shapes-predicted-2" and moved["digest"] != pred["digest"]
    again = get_json("datasetversion", "shapes-reviewed", env)["status"]
    assert again["phase"] == "Succeeded" and len(again["runs"]) == len(status["runs"]) + 1, again
    assert again["parents"] == [{"name": "PredictionJob/pred", "dataset": "shapes-predicted-2",
                                 "digest": moved["digest"]}]
    rebuilt = load_manifest(store, "shapes-reviewed", again["digest"])
    assert sorted(im.file_name for im in rebuilt.images) == confident
