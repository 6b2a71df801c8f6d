"""The Argo CD health check (helm/kubeforge/health/health.lua) run by a real Lua on sample statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubeforge.api.registry import KINDS
from kubeforge.cli.main import app

lupa = pytest.importorskip("lupa")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = (REPO / "helm/kubeforge/health/health.lua").read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the script the way Argo CD does: the resource as the global `obj`, a table back."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def resource(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubeforge.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "t", "namespace": "default", "generation": generation},
        "spec": {"datasetVersion": "d", **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}


@pytest.mark.parametrize(
    ("status", "expected", "message_part"),
    [
        (None, "Progressing", "operator"),
        ({"phase": "Succeeded", "observedGeneration": 1,
          "conditions": [cond("Ready", "True", "Succeeded", "best mAP 0.93")]}, "Healthy", "best mAP 0.93"),
        ({"phase": "Running", "observedGeneration": 1,
          "conditions": [cond("Ready", "False", "Training", "epoch 3 of 8"), cond("Reconciling", "True", "Training")]},
         "Progressing", "Training"),
        ({"phase": "Waiting", "observedGeneration": 1,
          "conditions": [cond("Ready", "False", "WaitingForDatasetVersion", "shapes-v1 is not Ready")]},
         "Progressing", "shapes-v1 is not Ready"),
        ({"phase": "Failed", "observedGeneration": 1,
          "conditions": [cond("Ready", "False", "OOMKilled", "the trainer ran out of memory")]},
         "Degraded", "out of memory"),
        ({"phase": "Running", "observedGeneration": 1,
          "conditions": [cond("Stalled", "True", "SpecChangeRefused", "spec changed after the run started")]},
         "Degraded", "spec changed"),
        ({"phase": "Stopped", "observedGeneration": 1, "conditions": []}, "Suspended", "Stopped"),
        ({"phase": "Pending"}, "Progressing", "Pending"),
        # A Ready condition left from generation 1 says nothing about generation 2.
        ({"phase": "Succeeded", "observedGeneration": 1, "conditions": [cond("Ready", "True", "Succeeded")]},
         "Progressing", "generation 2"),
    ],
    ids=["no-status", "ready", "reconciling", "waiting", "failed", "stalled", "stopped", "pending", "stale"],
)
def test_health_of_a_status(status: dict[str, Any] | None, expected: str, message_part: str) -> None:
    generation = 2 if message_part == "generation 2" else 1
    got, message = health(resource(status, generation=generation))
    assert got == expected
    assert message_part in message


def test_a_suspended_training_job_is_suspended_until_it_succeeded() -> None:
    waiting = {"phase": "Pending", "observedGeneration": 1, "conditions": [cond("Ready", "False", "Suspended")]}
    assert health(resource(waiting, suspend=True))[0] == "Suspended"
    done = {"phase": "Succeeded", "observedGeneration": 1, "conditions": [cond("Ready", "True", "Succeeded")]}
    assert health(resource(done, suspend=True))[0] == "Healthy"


def test_the_argocd_patch_registers_the_script_for_every_kind() -> None:
    result = CliRunner().invoke(app, ["chart", "argocd-health", "--chart", str(REPO / "helm/kubeforge")])
    assert result.exit_code == 0, result.output
    cm = yaml.safe_load(result.output)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert set(cm["data"]) == {f"resource.customizations.health.kubeforge.io_{kind}" for kind in KINDS}
    # The block scalar round-trips to the file byte for byte.
    assert all(script == SCRIPT for script in cm["data"].values())
