"""`kubeforge report NAME` and `kubeforge get benchmark NAME` on a local state directory."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubeforge.api import parse_resource
from kubeforge.cli.main import app
from kubeforge.evaluation.report import render_report
from kubeforge.local.state import Record, StateDir
from kubeforge.store import LocalStore
from kubeforge.testing.metrics_docs import v2_doc

GV = "kubeforge.io/v1alpha1"


def _benchmark(state: StateDir, name: str, status: dict[str, Any] | None, namespace: str = "default") -> None:
    obj = {"apiVersion": GV, "kind": "Benchmark", "metadata": {"name": name, "namespace": namespace},
           "spec": {"models": [{"trainingJob": "det-a"}, {"trainingJob": "det-b"}]}}
    if status is not None:
        obj["status"] = status
    state.save(Record(parse_resource(obj)))


def _status(report_uri: str) -> dict[str, Any]:
    return {"phase": "Succeeded", "reportUri": report_uri, "metricsUri": report_uri.replace("report.html", "m.json"),
            "headline": "AP50=0.850",
            "metrics": {"det-a": {"AP50": 0.85, "f1": 0.8114}, "det-b": {"AP50": 0.75}},
            "intervals": {"det-a": {"AP50": [0.812, 0.888], "f1": [0.78, 0.842]}}}


@pytest.fixture
def local(tmp_path: Path) -> tuple[Path, Path]:
    """(state dir, report path): a Benchmark whose run wrote its report to the local store."""
    store = LocalStore(tmp_path / "state" / "store")
    key = "benchmarks/default/cmp/runs/abc/report.html"
    store.put_bytes(key, render_report(v2_doc()).encode())
    state = StateDir(tmp_path / "state")
    _benchmark(state, "cmp", _status(store.url(key)))
    return state.root, Path(store.url(key))


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_report_prints_the_local_path_and_opens_it(local: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir, report = local
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = _cli("report", "cmp", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(report)] and opened == []
    result = _cli("report", "cmp", "--open", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert opened == [report.resolve().as_uri()]
    assert result.output.splitlines() == [str(report), f"opening {report.resolve().as_uri()}"]
    assert "<html" in report.read_text()[:100]


def test_report_errors_name_what_is_missing(local: tuple[Path, Path], tmp_path: Path) -> None:
    state_dir, report = local
    state = StateDir(state_dir)
    _benchmark(state, "fresh", None)
    _benchmark(state, "other-ns", _status(str(report)), namespace="ml")
    result = _cli("report", "fresh", "--state-dir", str(state_dir))
    assert result.exit_code == 2 and "has no report yet (phase never run)" in result.output
    result = _cli("report", "nope", "--state-dir", str(state_dir))
    assert result.exit_code == 2 and "nope" in result.output
    result = _cli("report", "other-ns", "-n", "ml", "--state-dir", str(state_dir))
    assert result.exit_code == 0 and result.output.strip() == str(report)
    report.unlink()
    result = _cli("report", "cmp", "--state-dir", str(state_dir))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_get_benchmark_prints_headline_metrics_with_intervals(local: tuple[Path, Path]) -> None:
    state_dir, _ = local
    result = _cli("get", "benchmark", "cmp", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("NAME") and lines[1].startswith("cmp ")
    assert "det-a: AP50 0.850 [0.812, 0.888], f1 0.811 [0.780, 0.842]" in lines
    assert "det-b: AP50 0.750" in lines
    # Lists and other kinds are as before: the table only.
    listed = _cli("get", "benchmarks", "--state-dir", str(state_dir))
    assert listed.exit_code == 0 and "det-a:" not in listed.output and "cmp" in listed.output
    as_json = _cli("get", "benchmark", "cmp", "-o", "json", "--state-dir", str(state_dir))
    assert as_json.exit_code == 0 and as_json.output.lstrip().startswith("{") and "det-a:" not in as_json.output


def test_report_on_an_s3_store_prints_the_uri_and_a_presigned_url(s3_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key = "benchmarks/default/cmp/runs/abc/report.html"
    s3_store.put_bytes(key, b"<html>the report</html>")
    state = StateDir(tmp_path / "state")
    _benchmark(state, "cmp", _status(s3_store.url(key)))
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = _cli("report", "cmp", "--presign", "--open", "--state-dir", str(state.root))
    assert result.exit_code == 0, result.output
    uri, url, opening = result.output.splitlines()
    assert uri == s3_store.url(key) and url.startswith("http") and opening == f"opening {url}" and opened == [url]
    with urllib.request.urlopen(url, timeout=10) as response:  # the URL works without credentials
        assert response.read() == b"<html>the report</html>"
