"""`kubeforge` imports a command's module only when it is used, and still lists every command.

The console script runs `cli.main.lazy_app()`; tests and docs use the full `cli.main.app`. Both
must print the same help for every command and group; the start-up time itself is measured by
benchmarks/data_versioning.py (`help_s`), never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import typer.main
from typer.testing import CliRunner

from kubeforge.cli.main import build, lazy_app

REPO = Path(__file__).resolve().parents[1]
ENV = {"COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1"}


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(_paths(cmd, (*prefix, name)))
    return out


def _help(app: typer.Typer, args: list[str]) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], prog_name="kubeforge", env=ENV)
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_every_command_prints_the_same_help_lazily() -> None:
    full = build()
    paths = _paths(typer.main.get_group(full))
    top = [p[0] for p in paths if len(p) == 1]
    assert {"run", "get", "datasets", "store", "eval", "predict"} <= set(top)
    lazy = lazy_app()
    assert _help(lazy, []) == _help(full, [])
    for path in paths:
        assert _help(lazy, list(path)) == _help(full, list(path)), path


def test_help_and_datasets_import_only_what_they_use() -> None:
    code = """
import json, sys
from kubeforge.cli.main import main
sys.argv = ["kubeforge", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainers")])}

    def modules(*args: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              timeout=120)
        return set(json.loads(proc.stderr.strip().splitlines()[-1]))

    heavy = {"numpy", "pyarrow", "PIL", "minio", "kubeforge.api", "kubeforge.steps", "kubeforge.datasets.manifest",
             "markdown_it"}
    top = modules("--help")
    assert not heavy & top, heavy & top
    assert not {m for m in top if m.startswith("kubeforge.cli.") and m != "kubeforge.cli.main"}
    datasets = modules("datasets", "--help")
    assert not heavy & datasets, heavy & datasets
    assert "kubeforge.cli.runner" not in datasets and "kubeforge.cli.predict" not in datasets


def test_unknown_command_is_still_refused() -> None:
    result = CliRunner().invoke(lazy_app(), ["no-such-command"], prog_name="kubeforge", env=ENV)
    assert result.exit_code == 2 and "No such command" in result.output


def test_datasets_import_loads_no_other_kind_and_no_arrow(tmp_path: Path) -> None:
    """A small import (JSON manifest) and its no-change re-import: no pyarrow, numpy, PIL (plain PNG
    headers are parsed without it), nor the API models of the other kinds."""
    from kubeforge.datasets.synth import generate_shapes_imagefolder

    generate_shapes_imagefolder(tmp_path / "src", n_per_class=2, size=32, seed=1)
    code = """
import json, sys
from kubeforge.cli.main import main
sys.argv = ["kubeforge", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainers")])}
    args = ["datasets", "import", str(tmp_path / "src"), "--dataset", "d", "--format", "imagefolder",
            "--store", str(tmp_path / "store"), "--check", "header"]
    for run in ("first", "again"):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
        heavy = {"numpy", "pyarrow", "kubeforge.api.training_job", "kubeforge.api.benchmark",
                 "kubeforge.api.inference_service", "kubeforge.steps.spec", "kubeforge.datasets.columnar"}
        assert not heavy & loaded, (run, heavy & loaded)
    assert "not read again" in proc.stdout
