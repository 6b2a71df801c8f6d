"""`kubeforge explain KIND[.field.path]`: the field reference, read from the schema generated from the models."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from kubeforge.api import KINDS, TrainingJob
from kubeforge.api.crd import resource_schema
from kubeforge.api.training_job import TrainingJobSpec
from kubeforge.cli.explain import ExplainError, explain_text, resolve
from kubeforge.cli.main import app


def test_a_nested_field_shows_type_constraints_and_its_fields() -> None:
    text = explain_text("trainingjob.spec.split")
    assert "KIND:     TrainingJob" in text and "VERSION:  kubeforge.io/v1alpha1" in text
    assert "FIELD:    spec.split <Object>" in text
    split = TrainingJobSpec.model_fields["split"].default_factory()  # type: ignore[misc]
    # Each child with what the model enforces: enum, default, exclusive bounds.
    assert '   method  <string>\n     random: ' in text
    assert 'one of: "auto", "random", "dataset"; default: "auto".' in text
    assert f"default: {split.train_percent}; > 0; < 100" in text.split("   trainPercent  <number>\n", 1)[1]
    assert "   seed  <integer>\n     method random: the shuffle's seed; default: 0" in text


def test_required_fields_arrays_and_maps() -> None:
    assert "FIELD:    spec.models.trainingJob <string> -required-" in explain_text("benchmark.spec.models.trainingJob")
    models = explain_text("kfbench.spec.models")  # a short name; an array of objects shows its items' fields
    assert "<[]Object> -required-" in models and "at least 1 items" in models
    assert "   trainingJob  <string> -required-" in models
    assert "<map[string]string>" in explain_text("tj.spec.nodeSelector")
    assert "FIELD:    spec.nodeSelector.pool <string>" in explain_text("tj.spec.nodeSelector.pool")  # any map key
    top = explain_text("TrainingJob")
    assert "RESOURCE: trainingjobs (short names: tj; categories: kubeforge)" in top
    assert "   spec  <Object> -required-" in top
    assert "rule: spec is immutable" in explain_text("datasetversion.spec")


def _paths(node: dict[str, Any], prefix: list[str]) -> list[list[str]]:
    while node.get("type") == "array" and isinstance(node.get("items"), dict):
        node = node["items"]
    out = []
    for name, child in (node.get("properties") or {}).items():
        out.append([*prefix, name])
        out += _paths(child, [*prefix, name])
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_field_of_every_kind_is_explained(kind: str) -> None:
    cls = KINDS[kind]
    paths = _paths(resource_schema(cls), [])
    assert len(paths) > 10
    for path in paths:
        trail, _, _ = resolve(cls, path)
        assert trail == [kind, *path]
        assert f"FIELD:    {'.'.join(path)} <" in explain_text(".".join([kind.lower(), *path]))


def test_recursive_prints_the_whole_tree() -> None:
    tree = explain_text("trainingjob.spec", recursive=True)
    assert "\n   split  <Object>\n      method  <string>\n      trainPercent  <number>\n" in tree
    assert "hyperparameters  <Object>" in tree and "optimizer  <Object>" in tree


def test_unknown_paths_name_the_missing_part_and_the_fields_that_exist() -> None:
    with pytest.raises(ExplainError, match=r"field 'splitt' does not exist in TrainingJob\.spec; its fields: .*split"):
        resolve(TrainingJob, ["spec", "splitt"])
    with pytest.raises(ExplainError, match=r"field 'x' does not exist: TrainingJob\.spec\.split\.seed is <integer>"):
        resolve(TrainingJob, ["spec", "split", "seed", "x"])
    runner = CliRunner()
    bad_field = runner.invoke(app, ["explain", "trainingjob.spec.splitt"])
    assert bad_field.exit_code == 2 and "field 'splitt' does not exist in TrainingJob.spec" in bad_field.output
    bad_kind = runner.invoke(app, ["explain", "widget.spec"])
    assert bad_kind.exit_code == 2 and "unknown kind 'widget'" in bad_kind.output
    ok = runner.invoke(app, ["explain", "trainingjob.spec.split"])
    assert ok.exit_code == 0 and "trainPercent" in ok.output
