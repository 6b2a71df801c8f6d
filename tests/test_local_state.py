"""The state directory, spec hashes, and what `get`, `describe`, `stop`, `delete`, `logs` print."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubeforge.api import TrainingJob, parse_resource
from kubeforge.cli.main import app
from kubeforge.local.printing import human_duration, table_rows
from kubeforge.local.state import Record, StateDir, StateError, local_store_uri, run_digest, service_endpoint
from kubeforge.steps.runs import train_run
from kubeforge.steps.spec import DatasetRef

GV = "kubeforge.io/v1alpha1"
NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def job(epochs: int = 3, status: dict[str, Any] | None = None, name: str = "det") -> TrainingJob:
    obj: dict[str, Any] = {
        "apiVersion": GV, "kind": "TrainingJob",
        "metadata": {"name": name, "creationTimestamp": "2026-01-02T11:55:00Z"},
        "spec": {"datasetVersion": "shapes-v1", "task": "object-detection",
                 "model": {"name": "ssdlite320_mobilenet_v3_large"}, "hyperparameters": {"epochs": epochs}},
    }
    if status is not None:
        obj["status"] = status
    res = parse_resource(obj)
    assert isinstance(res, TrainingJob)
    return res


DONE = {"phase": "Succeeded", "startTime": "2026-01-02T11:55:00Z", "completionTime": "2026-01-02T11:58:30Z",
        "outputPrefix": "experiments/default_shapes/x", "runId": "abcdef1234",
        "runs": [{"id": "abcdef1234", "phase": "Succeeded", "generation": 1,
                  "outputPrefix": "experiments/default_shapes/x"}],
        "progress": {"epoch": 3, "epochs": 3}, "bestMetric": {"name": "AP50", "value": 0.912345, "epoch": 2},
        "experimentUri": "/store/experiments/default_shapes/det_torchvision",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                        "lastTransitionTime": "2026-01-02T11:58:30Z"}]}


def test_run_digest_changes_with_spec_upstream_and_store() -> None:
    data = DatasetRef(dataset="shapes", digest="a" * 64)
    base = run_digest(train_run(job(), "file:///s", data))
    assert base == run_digest(train_run(job(status=DONE), "file:///s", data)), "status must not affect the digest"
    assert base != run_digest(train_run(job(epochs=4), "file:///s", data))
    assert base != run_digest(train_run(job(), "file:///s", DatasetRef(dataset="shapes", digest="b" * 64)))
    assert base != run_digest(train_run(job(), "s3://b/p", data))


def test_record_round_trip_and_atomic_layout(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.save(Record(job(status=DONE), "h" * 64, "m.yaml", "file:///s"))
    path = tmp_path / "resources" / "TrainingJob" / "default" / "det.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["specHash"] == "h" * 64
    assert on_disk["resource"]["status"]["bestMetric"]["value"] == 0.912345  # camelCase, as the API dumps it
    assert on_disk["resource"]["metadata"]["creationTimestamp"] == "2026-01-02T11:55:00Z"
    assert not list(path.parent.glob(".tmp-*"))
    back = state.get("TrainingJob", "default", "det")
    assert back.store == "file:///s" and back.phase == "Succeeded"
    assert set(state.succeeded()) == {("TrainingJob", "default", "det")}
    path.write_text("{not json")
    with pytest.raises(StateError, match=r"det\.json: unreadable state record"):
        state.load("TrainingJob", "default", "det")


def test_store_uri_defaults_to_the_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEFORGE_STORE", raising=False)
    assert local_store_uri(None, tmp_path) == (tmp_path / "store").as_uri()
    monkeypatch.setenv("KUBEFORGE_STORE", "s3://bucket/dev")
    assert local_store_uri(None, tmp_path) == "s3://bucket/dev"
    assert local_store_uri("s3://other/x", tmp_path) == "s3://other/x"
    monkeypatch.delenv("KUBEFORGE_STORE")
    monkeypatch.setenv("KUBEFORGE_STATE_DIR", str(tmp_path / "st"))
    assert local_store_uri() == (tmp_path / "st" / "store").as_uri()  # the state dir as every command resolves it
    monkeypatch.chdir(tmp_path)
    assert local_store_uri("plain/dir") == (tmp_path / "plain" / "dir").as_uri()


@pytest.mark.parametrize(("seconds", "shown"), [
    (5, "5s"), (119, "119s"), (330, "5m30s"), (300, "5m"), (42 * 60, "42m"), (3 * 3600 + 1200, "3h20m"),
    (30 * 3600, "30h"), (3 * 86400 + 4 * 3600, "3d4h"), (40 * 86400, "40d"),
])
def test_age_reads_like_kubectl(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_trainingjob_table_is_the_experiments_table() -> None:
    rows = table_rows(TrainingJob, [Record(job(status=DONE))], now=NOW)
    assert rows == [
        ["NAME", "DATASET", "MODEL", "EPOCHS", "EPOCH", "METRIC", "BEST", "PHASE", "AGE"],
        ["det", "shapes-v1", "ssdlite320_mobilenet_v3_large", "3", "3", "AP50", "0.9123", "Succeeded", "5m"],
    ]


def seeded_state(tmp_path: Path) -> Path:
    state = StateDir(tmp_path / "state")
    state.save(Record(job(status=DONE), "h", "m.yaml", "file:///s"))
    owned = parse_resource({
        "apiVersion": GV, "kind": "Benchmark",
        "metadata": {"name": "det-benchmark", "creationTimestamp": "2026-01-02T11:55:00Z",
                     "ownerReferences": [{"apiVersion": GV, "kind": "TrainingJob", "name": "det"}]},
        "spec": {"models": [{"trainingJob": "det"}], "datasetVersion": "shapes-v1"}})
    state.save(Record(owned))
    dsv = parse_resource({
        "apiVersion": GV, "kind": "DatasetVersion", "metadata": {"name": "shapes-v1"},
        "spec": {"dataset": "shapes", "source": {"uri": "/data", "format": "coco"}},
        "status": {"phase": "Succeeded", "digest": "d" * 64, "stats": {"images": 40, "annotations": 90,
                                                                        "classes": 3}}})
    state.save(Record(dsv))
    svc = parse_resource({
        "apiVersion": GV, "kind": "InferenceService", "metadata": {"name": "shapes"},
        "spec": {"model": {"trainingJob": "det"}},
        "status": {"phase": "Running", "ready": True, "url": "http://127.0.0.1:8000", "modelName": "shapes",
                   "experimentPrefix": "experiments/default_shapes/x", "outputPrefix": "serving/default_shapes"}})
    state.save(Record(svc, store="file:///s"))
    return state.root


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_get_prints_kubectl_columns_and_objects(tmp_path: Path) -> None:
    root = str(seeded_state(tmp_path))
    out = cli("get", "tj", "--state-dir", root).stdout.splitlines()
    assert out[0].split() == ["NAME", "DATASET", "MODEL", "EPOCHS", "EPOCH", "METRIC", "BEST", "PHASE", "AGE"]
    assert out[1].split()[:8] == ["det", "shapes-v1", "ssdlite320_mobilenet_v3_large", "3", "3", "AP50", "0.9123",
                                  "Succeeded"]
    narrow = cli("get", "datasetversions", "--state-dir", root).stdout
    wide = cli("get", "dsv", "-o", "wide", "--state-dir", root).stdout
    assert "DIGEST" not in narrow and "DIGEST" in wide and "d" * 64 in wide  # priority-1 column
    obj = json.loads(cli("get", "trainingjob", "det", "-o", "json", "--state-dir", root).stdout)
    assert obj["kind"] == "TrainingJob" and obj["status"]["bestMetric"]["name"] == "AP50"
    listed = json.loads(cli("get", "TrainingJobs", "-o", "json", "--state-dir", root).stdout)
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["det"]

    unknown = cli("get", "pods", "--state-dir", root)
    assert unknown.exit_code == 2 and "unknown kind 'pods'" in unknown.stderr
    missing = cli("get", "tj", "nope", "--state-dir", root)
    assert missing.exit_code == 2 and "TrainingJob/nope not found" in missing.stderr


def test_describe_shows_status_conditions_and_artifacts(tmp_path: Path) -> None:
    root = str(seeded_state(tmp_path))
    out = cli("describe", "tj", "det", "--state-dir", root).stdout
    assert "Phase:       Succeeded" in out
    assert "Duration:    3m30s" in out
    assert "experimentUri:" in out and "/store/experiments/default_shapes/det_torchvision" in out
    assert "output prefix:" in out and "file:///s/experiments/default_shapes/x" in out
    assert "abcdef1234 *" in out  # the runs table marks the current run
    assert "Ready  " in out and "Succeeded" in out


def test_stop_delete_and_logs(tmp_path: Path) -> None:
    root = seeded_state(tmp_path)
    state = StateDir(root)
    # The recorded service has no pid (no server was started here): stop only updates its status.
    assert service_endpoint("shapes", state_dir=root).url == "http://127.0.0.1:8000"
    result = cli("stop", "kfsvc", "shapes", "--state-dir", str(root))
    assert result.exit_code == 0, result.stderr
    status = state.get("InferenceService", "default", "shapes").resource.status
    assert status is not None and status.phase == "Stopped" and status.ready is False  # type: ignore[union-attr]
    with pytest.raises(StateError, match="InferenceService/shapes is not ready"):
        service_endpoint("shapes", state_dir=root)
    assert cli("stop", "tj", "det", "--state-dir", str(root)).exit_code == 2

    no_logs = cli("logs", "tj", "det", "--state-dir", str(root))
    assert no_logs.exit_code == 2 and "no step.log" in no_logs.stderr

    deleted = cli("delete", "trainingjob", "det", "--state-dir", str(root))
    assert deleted.exit_code == 0
    assert 'trainingjob.kubeforge.io "det" deleted' in deleted.stdout
    assert 'benchmark.kubeforge.io "det-benchmark" deleted' in deleted.stdout  # owned: garbage-collected
    assert state.load("TrainingJob", "default", "det") is None
    assert state.load("Benchmark", "default", "det-benchmark") is None
    assert state.load("DatasetVersion", "default", "shapes-v1") is not None
