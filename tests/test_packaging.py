"""What ships is the product: it imports no test infrastructure and works from a wheel, away from the repository.

The wheel test builds the wheel from a copy of the sources (so the checkout gets no build/ folder),
installs it into a fresh virtual environment with pip, and runs the installed `kubeforge` console script
from an empty directory. The dependencies come from this environment's site-packages through a plain
path entry, which Python adds to sys.path without processing its .pth files: the editable install of
the repository that lives there is not loaded, so nothing can quietly fall back to the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_INFRASTRUCTURE = ("kubeforge.testing", "pytest", "_pytest", "kmock")

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import kubeforge, kubeforge_trainers
names = []
def walk(package):  # pkgutil.walk_packages would import kubeforge.testing itself to look inside
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name == "kubeforge.testing":
            continue
        module = importlib.import_module(info.name)
        names.append(info.name)
        if info.ispkg:
            walk(module)
walk(kubeforge)
walk(kubeforge_trainers)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest", "kmock")
                or m == "kubeforge.testing" or m.startswith("kubeforge.testing."))
print(json.dumps({"imported": names, "test_infrastructure": loaded}))
"""


def test_no_product_module_imports_test_infrastructure() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainers")])}
    proc = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert {"kubeforge.cli.main", "kubeforge.operator.handlers", "kubeforge.local.runner",
            "kubeforge_trainers.engine"} <= set(result["imported"])
    assert result["test_infrastructure"] == [], "product modules import test infrastructure"


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("operator", "trainers"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed by pip, its dependencies visible but not the repository."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    src.mkdir()
    _copy_sources(src)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("kubeforge-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr
    return venv


def _run(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KUBEFORGE_STATE_DIR", "KUBEFORGE_STORE")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_runs_away_from_the_repository(wheel_venv: Path, tmp_path: Path) -> None:
    where = _run(wheel_venv, ["python", "-c", "import kubeforge; print(kubeforge.__file__)"], tmp_path)
    assert where.stdout.startswith(str(wheel_venv)), where.stdout + where.stderr

    helped = _run(wheel_venv, ["kubeforge", "--help"], tmp_path)
    assert helped.returncode == 0 and "explain" in helped.stdout, helped.stderr

    generated = _run(wheel_venv, ["kubeforge", "crds", "generate", "--out", "crds"], tmp_path)
    assert generated.returncode == 0, generated.stderr
    committed = sorted((REPO / "crds").glob("*.kubeforge.io.yaml"))
    assert [p.name for p in committed] == sorted(p.name for p in (tmp_path / "crds").glob("*.yaml"))
    for path in committed:
        assert (tmp_path / "crds" / path.name).read_text() == path.read_text(), path.name

    explained = _run(wheel_venv, ["kubeforge", "explain", "trainingjob.spec.split"], tmp_path)
    assert explained.returncode == 0 and "trainPercent" in explained.stdout, explained.stderr
    listed = _run(wheel_venv, ["kubeforge", "get", "kubeforge"], tmp_path)
    assert listed.returncode == 0 and "No resources found" in listed.stderr, listed.stderr


def test_the_kube_emulator_fixture_works_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    """The fixture applies CRDs generated from the installed API models, not crds/ of a checkout."""
    (tmp_path / "test_emulated.py").write_text(textwrap.dedent("""
        def test_kinds_are_served(kube_emulator):
            job = {"apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob",
                   "metadata": {"name": "t", "namespace": "default"},
                   "spec": {"datasetVersion": "d", "task": "classification", "model": {"name": "resnet18"}}}
            created = kube_emulator.create(job)
            assert created["metadata"]["name"] == "t"
            assert kube_emulator.get("TrainingJob", "t")["spec"]["datasetVersion"] == "d"
    """))
    proc = _run(wheel_venv, ["python", "-m", "pytest", "-q", "-p", "kubeforge.testing.fixtures",
                             "-p", "no:cacheprovider", "test_emulated.py"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
