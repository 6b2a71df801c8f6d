"""`kubeforge store tree`: blobs collapse to one line, everything else is listed with sizes."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.cli.store import build_tree
from kubeforge.store import LocalStore


def render(tree: object) -> str:
    console = Console(width=200, record=True)
    console.print(tree)
    return console.export_text()


def test_tree_collapses_blobs_and_lists_artifacts() -> None:
    sizes = [
        ("blobs/sha256/ab/" + "a" * 64, 100),
        ("blobs/sha256/cd/" + "c" * 64, 50),
        ("datasets/shapes/d1/manifest.json", 2048),
        ("experiments/default_shapes/job_torchvision/export/model.onnx", 3 * 1024 * 1024),
    ]
    text = render(build_tree("file:///store", sizes))
    assert "2 content-addressed objects, 150 B" in text
    assert "manifest.json" in text and "2.0 KB" in text
    assert "model.onnx" in text and "3.0 MB" in text
    assert "a" * 64 not in text


def test_tree_command_reads_the_state_dirs_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "state" / "store")
    store.put_bytes("benchmarks/default_b/report.html", b"<html></html>")
    result = CliRunner().invoke(app, ["store", "tree", "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
