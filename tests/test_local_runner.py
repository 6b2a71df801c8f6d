"""The local runner's orchestration: order, status transitions, reruns, failures, secrets.

STAND-IN STEPS: these tests run the step as a real subprocess, but the subprocess is the tiny
script below instead of `kubeforge step ...`, so they check the runner alone (ordering,
statuses, no-op reruns, DependencyFailed, redaction) in well under a second per run. The
real steps have their own tests, and tests/test_e2e_quickstart.py runs the runner with them.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kubeforge.api import Phase
from kubeforge.local.manifests import load_manifests
from kubeforge.local.runner import Runner
from kubeforge.local.state import StateDir

SECRET = "s3cr3t-Value-that-must-not-leak"

FAKE_STEP = r'''
import hashlib, json, os, sys, time
from pathlib import Path

step, spec_path, result_path = sys.argv[1], Path(sys.argv[3]), Path(sys.argv[5])
spec = json.loads(spec_path.read_text())
with open(os.environ["FAKE_STEP_CALLS"], "a") as fh:
    fh.write(f"{step}:{spec['name']}\n")
# A careless library printing its credentials: the runner must redact this.
print(f"connecting with key {os.environ.get('AWS_SECRET_ACCESS_KEY')}", flush=True)
Path(os.environ["FAKE_STEP_CALLS"] + ".env").write_text(
    "secret-received" if os.environ.get("AWS_SECRET_ACCESS_KEY") else "no-secret")
if step == "train":
    # As the real trainer does: progress.json in the store while it trains.
    progress = Path(spec["store"].removeprefix("file://"), spec["experiment_prefix"], "progress.json")
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text(json.dumps({"epoch": 1, "epochs": 2, "metrics": {"loss": 0.5}, "phase": "Training"}))
if spec["name"] in os.environ.get("FAKE_STEP_FAIL", "").split(","):
    print(f"error: {spec['name']}: out of memory at epoch 3", file=sys.stderr)
    sys.exit(1)
if step == "dataset-version":
    content = Path(spec["spec"]["source"]["uri"], "labels.txt").read_text()
    result = {"digest": hashlib.sha256(content.encode()).hexdigest(), "classes": content.split()}
elif step == "train":
    time.sleep(0.2)
    result = {"datasetDigest": spec["dataset"]["digest"], "experimentUri": spec["experiment_prefix"],
              "bestMetric": {"name": "accuracy", "value": 0.75, "epoch": 1}}
elif step == "benchmark":
    result = {"headline": "accuracy=0.75", "metricsUri": spec["output_prefix"] + "/metrics.json"}
result_path.write_text(json.dumps(result))
'''


def manifests(data: Path, *, epochs: int = 1, extra_job: bool = False, policy: str = "Retain") -> str:
    docs = [f"""
apiVersion: kubeforge.io/v1alpha1
kind: DatasetVersion
metadata: {{name: shapes-v1}}
spec: {{dataset: shapes, source: {{uri: {data.name}, format: imagefolder}}}}
""", f"""
apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {{name: det}}
spec:
  datasetVersion: shapes-v1
  task: classification
  model: {{name: resnet18}}
  hyperparameters: {{epochs: {epochs}}}
  benchmark: {{enabled: true}}
  artifactPolicy: {policy}
"""]
    if extra_job:
        docs.append("""
apiVersion: kubeforge.io/v1alpha1
kind: TrainingJob
metadata: {name: alt}
spec: {datasetVersion: shapes-v1, task: classification, model: {name: resnet18}}
""")
    return "---".join(docs)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.data.mkdir()
        (self.data / "labels.txt").write_text("circle square")
        self.script = tmp / "fake_step.py"
        self.script.write_text(FAKE_STEP)
        self.calls = tmp / "calls.txt"
        self.state = StateDir(tmp / "state")
        self.manifest = tmp / "m.yaml"
        self.terminal = io.StringIO()  # what the user would have seen
        self.out = Console(file=self.terminal, width=200)

    def run(self, text: str, fail: str = "") -> list[Any]:
        self.manifest.write_text(text)
        env = {"FAKE_STEP_CALLS": str(self.calls), "FAKE_STEP_FAIL": fail, "AWS_SECRET_ACCESS_KEY": SECRET}
        runner = Runner(self.state, (self.tmp / "store").as_uri(), self.out,
                        step_command=[sys.executable, str(self.script)], env=env, progress_interval=0.05)
        return runner.run(runner.plan(load_manifests(self.manifest)))

    def calls_made(self) -> list[str]:
        return self.calls.read_text().split() if self.calls.exists() else []

    def status(self, kind: str, name: str) -> dict[str, Any]:
        record = self.state.get(kind, "default", name)
        return record.resource.status.dump()  # type: ignore[union-attr]


@pytest.fixture()
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_runs_in_reference_order_and_records_statuses(env: Env) -> None:
    outcomes = env.run(manifests(env.data))
    assert env.calls_made() == ["dataset-version:shapes-v1", "train:det", "benchmark:det-benchmark"]
    assert [o.action for o in outcomes] == ["succeeded"] * 3

    dsv = env.status("DatasetVersion", "shapes-v1")
    assert dsv["phase"] == "Succeeded" and dsv["classes"] == ["circle", "square"]
    job = env.status("TrainingJob", "det")
    assert job["phase"] == "Succeeded"
    assert job["datasetDigest"] == dsv["digest"]  # the run spec carried the upstream digest
    # Each run writes under its own id inside the experiment: a rerun never overwrites it.
    assert job["experimentUri"] == f"experiments/default_shapes/det_torchvision/runs/{job['runId']}"
    assert job["outputPrefix"] == job["experimentUri"]
    assert [(r["id"], r["phase"]) for r in job["runs"]] == [(job["runId"], "Succeeded")]
    assert job["benchmark"] == "det-benchmark"
    # Mirrored from the store's progress.json while the step ran (the result carried none).
    assert job["progress"] == {"epoch": 1, "epochs": 2, "metrics": {"loss": 0.5}}
    assert job["startTime"] <= job["completionTime"]
    ready = next(c for c in job["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    run_spec = json.loads((env.state.run_dir("TrainingJob", "default", "det") / "run.json").read_text())
    assert run_spec["dataset"] == {"dataset": "shapes", "digest": dsv["digest"], "name": "shapes-v1"}
    dsv_spec = json.loads((env.state.run_dir("DatasetVersion", "default", "shapes-v1") / "run.json").read_text())
    assert dsv_spec["spec"]["source"]["uri"] == str(env.data)  # resolved relative to the manifest

    bench = env.state.get("Benchmark", "default", "det-benchmark")
    assert bench.resource.metadata.model_extra["ownerReferences"][0]["name"] == "det"  # type: ignore[index]
    out = bench.resource.status.output_prefix  # type: ignore[union-attr]
    assert out == f"benchmarks/default_det-benchmark/runs/{bench.resource.status.run_id}"  # type: ignore[union-attr]


def test_rerun_with_the_same_manifests_runs_nothing(env: Env) -> None:
    env.run(manifests(env.data))
    before = env.status("TrainingJob", "det")
    outcomes = env.run(manifests(env.data))
    assert [o.action for o in outcomes] == ["unchanged"] * 3
    assert len(env.calls_made()) == 3
    assert env.status("TrainingJob", "det")["completionTime"] == before["completionTime"]


def test_a_spec_change_reruns_the_resource_and_what_depends_on_it(env: Env) -> None:
    env.run(manifests(env.data))
    outcomes = env.run(manifests(env.data, epochs=2))
    assert [o.action for o in outcomes] == ["unchanged", "succeeded", "succeeded"]
    assert env.calls_made()[3:] == ["train:det", "benchmark:det-benchmark"]
    assert env.state.get("TrainingJob", "default", "det").resource.metadata.generation == 2
    # The first run is kept, listed, and its prefix differs from the second's.
    runs = env.status("TrainingJob", "det")["runs"]
    assert [r["phase"] for r in runs] == ["Succeeded", "Succeeded"] and runs[0]["generation"] == 1
    assert runs[0]["outputPrefix"] != runs[1]["outputPrefix"]
    # The Benchmark evaluated the new run: its input changed, so it is a new run of its own too.
    assert len(env.status("Benchmark", "det-benchmark")["runs"]) == 2


def test_new_data_with_the_same_spec_reruns_downstream(env: Env) -> None:
    env.run(manifests(env.data))
    env.state.delete("DatasetVersion", "default", "shapes-v1")  # forget it so it is imported again
    (env.data / "labels.txt").write_text("circle square triangle")
    outcomes = env.run(manifests(env.data))
    # The digest changed, so the job and its benchmark are stale even though their specs are not.
    assert [o.action for o in outcomes] == ["succeeded"] * 3


def test_a_failure_stops_its_dependents_but_not_independent_resources(env: Env) -> None:
    outcomes = {o.key[2]: o for o in env.run(manifests(env.data, extra_job=True), fail="det")}
    assert outcomes["det"].action == "failed"
    assert outcomes["det-benchmark"].action == "dependency-failed"
    assert outcomes["alt"].action == "succeeded"
    assert "benchmark:det-benchmark" not in env.calls_made()

    job = env.status("TrainingJob", "det")
    assert job["phase"] == "Failed"
    assert job["message"] == "det: out of memory at epoch 3"  # the step's last error line
    assert next(c for c in job["conditions"] if c["type"] == "Ready")["reason"] == "StepFailed"
    # The trainer died saying "Training": its progress.json now agrees with the status.
    progress = json.loads((env.tmp / "store" / job["outputPrefix"] / "progress.json").read_text())
    assert progress["phase"] == "Failed" and "out of memory" in progress["message"]
    assert job["runs"][-1]["phase"] == "Failed"
    bench = env.status("Benchmark", "det-benchmark")
    assert bench["phase"] == "Failed"
    assert bench["conditions"][0]["reason"] == "DependencyFailed"
    assert "TrainingJob/det" in bench["message"]

    # Fixed: only the failed job and its dependent run again.
    outcomes2 = {o.key[2]: o.action for o in env.run(manifests(env.data, extra_job=True))}
    assert outcomes2 == {"shapes-v1": "unchanged", "det": "succeeded", "alt": "unchanged",
                         "det-benchmark": "succeeded"}


def test_a_reference_can_be_satisfied_by_the_state_directory(env: Env) -> None:
    dsv_only, job_only = manifests(env.data).split("---")
    env.run(dsv_only)
    outcomes = env.run(job_only)
    assert [o.key[2] for o in outcomes] == ["det", "det-benchmark"]
    assert env.status("TrainingJob", "det")["phase"] == Phase.SUCCEEDED


def test_runs_are_listed_and_delete_follows_the_artifact_policy(env: Env) -> None:
    """`kubeforge runs` lists every run (newest first, the current one marked); `delete` removes every run's
    output only with artifactPolicy Delete."""
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    env.run(manifests(env.data, policy="Delete"))
    env.run(manifests(env.data, epochs=2, policy="Delete"))
    runs = env.status("TrainingJob", "det")["runs"]
    store = env.tmp / "store"
    assert all((store / r["outputPrefix"] / "progress.json").is_file() for r in runs) and len(runs) == 2
    cli = CliRunner()
    listed = cli.invoke(app, ["runs", "tj", "det", "--state-dir", str(env.state.root)])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[1].split()[:3] == [runs[1]["id"], "*", "Succeeded"] and lines[2].split()[:2] == [runs[0]["id"],
                                                                                                 "Succeeded"]
    as_json = json.loads(cli.invoke(app, ["runs", "tj", "det", "-o", "json", "--state-dir",
                                          str(env.state.root)]).stdout)
    assert [r["id"] for r in as_json] == [r["id"] for r in runs]
    deleted = cli.invoke(app, ["delete", "tj", "det", "--state-dir", str(env.state.root)])
    assert deleted.exit_code == 0, deleted.output
    assert not [f for r in runs for f in (store / r["outputPrefix"]).rglob("*") if f.is_file()]
    assert "(artifactPolicy: Delete)" in deleted.stdout
    # The DatasetVersion (Retain) and its data stay.
    assert env.status("DatasetVersion", "shapes-v1")["phase"] == "Succeeded"


def test_secrets_reach_the_step_but_never_state_files_or_logs(env: Env) -> None:
    env.run(manifests(env.data))
    assert Path(str(env.calls) + ".env").read_text() == "secret-received"
    step_log = (env.state.run_dir("TrainingJob", "default", "det") / "step.log").read_text()
    assert "connecting with key ***" in step_log
    assert "connecting with key ***" in env.terminal.getvalue()
    assert SECRET not in env.terminal.getvalue()
    written = [p for p in env.state.root.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        assert SECRET not in path.read_text(errors="replace"), path


def test_cli_run_with_the_real_dataset_step_exits_1_on_failure(tmp_path: Path) -> None:
    """Through `kubeforge run` and the real `kubeforge step dataset-version` (fast: a few tiny images)."""
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    cli = CliRunner()
    synth = cli.invoke(app, ["datasets", "synth", "shapes", "--out", str(tmp_path / "good"), "--images", "4",
                             "--size", "32", "--seed", "1"])
    assert synth.exit_code == 0, synth.output
    (tmp_path / "empty").mkdir()
    doc = "apiVersion: kubeforge.io/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: {name}}}\n" \
          "spec: {{dataset: shapes, source: {{uri: {uri}, format: coco}}}}\n"
    text = doc.format(name="good", uri="good") + "---\n" + doc.format(name="bad", uri="empty")
    (tmp_path / "m.yaml").write_text(text)
    state = str(tmp_path / "state")

    run = cli.invoke(app, ["run", "-f", str(tmp_path / "m.yaml"), "--state-dir", state])
    assert run.exit_code == 1, run.output
    phases = cli.invoke(app, ["get", "dsv", "--state-dir", state]).stdout
    assert [line.split()[0] + ":" + line.split()[-2] for line in phases.splitlines()[1:]] == [
        "bad:Failed", "good:Succeeded"]
    failed = StateDir(state).get("DatasetVersion", "default", "bad").resource.status
    assert failed is not None and failed.message  # the step's own error line
    assert failed.message in cli.invoke(app, ["logs", "dsv", "bad", "--state-dir", state]).stdout
