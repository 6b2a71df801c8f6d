"""The committed CRDs match the API models, are structural, and accept what the models accept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from kubeforge.api import KINDS, ObjectMeta, TrainingJob, TrainingJobSpec, TrainingJobStatus
from kubeforge.api.crd import CRDGenerationError, crd_filename, structural_schema
from kubeforge.api.training_job import BestMetric, ModelSpec, Progress
from kubeforge.cli import crds as crds_cli

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
# YAML inside an example's Python package is its data (a custom trainer's models.yaml), not a manifest.
EXAMPLES = sorted(p for p in (REPO / "examples").glob("**/*.yaml") if not (p.parent / "__init__.py").exists())


def load(kind: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / crd_filename(KINDS[kind])).read_text())


def schema_of(kind: str) -> dict[str, Any]:
    return load(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# --- the generated files ----------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    # The real entrypoint, as CI and a contributor run it.
    proc = subprocess.run(
        [sys.executable, "-m", "kubeforge.cli.main", "crds", "generate", "--out", str(CRDS), "--check"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in CRDS.glob("*.kubeforge.io.yaml")) == sorted(crd_filename(c) for c in KINDS.values())


def test_check_reports_drift_and_generate_repairs_it(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    shutil.copytree(CRDS, out)
    changed = out / "trainingjobs.kubeforge.io.yaml"
    changed.write_text(changed.read_text().replace("minimum: 1", "minimum: 0", 1))
    (out / "benchmarks.kubeforge.io.yaml").unlink()
    (out / "olds.kubeforge.io.yaml").write_text("{}\n")
    (out / "kustomization.yaml").write_text("resources: []\n")  # not ours: neither reported nor removed

    runner = CliRunner()
    result = runner.invoke(crds_cli.app, ["generate", "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert f"differs {changed}" in result.output
    assert f"missing {out / 'benchmarks.kubeforge.io.yaml'}" in result.output
    assert f"extra {out / 'olds.kubeforge.io.yaml'}" in result.output
    assert "kustomization" not in result.output
    assert changed.read_text().count("minimum: 0") >= 1  # --check wrote nothing

    result = runner.invoke(crds_cli.app, ["generate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "olds.kubeforge.io.yaml").exists() and (out / "kustomization.yaml").exists()
    assert changed.read_text() == (CRDS / changed.name).read_text()
    assert runner.invoke(crds_cli.app, ["generate", "--out", str(out), "--check"]).exit_code == 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_names_columns_and_subresources(kind: str) -> None:
    crd = load(kind)
    cls = KINDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{cls.plural}.kubeforge.io"
    spec = crd["spec"]
    assert spec["group"] == "kubeforge.io" and spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names == {
        "kind": kind, "listKind": f"{kind}List", "plural": cls.plural, "singular": kind.lower(),
        "shortNames": cls.short_names, "categories": ["kubeforge"],
    }
    # KServe's InferenceService owns `isvc`; a clash would make `kubectl get isvc` ambiguous.
    assert "isvc" not in names["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == [c.name for c in cls.printer_columns]
    assert {"Phase", "Age"} <= {c["name"] for c in columns}
    schema = version["schema"]["openAPIV3Schema"]
    for col in columns:
        # Every column must point at a declared field of the matching type, or it shows <none> forever.
        if col["jsonPath"].startswith(".metadata."):
            continue
        node = schema
        for part in col["jsonPath"].lstrip(".").split("."):
            assert part in node.get("properties", {}), f"{kind} column {col['name']}: {col['jsonPath']} not in schema"
            node = node["properties"][part]
        expected = "string" if col["type"] == "date" else col["type"]
        assert node["type"] == expected, f"{kind} column {col['name']}: {node['type']} != {col['type']}"


def test_short_names_are_unique_across_kinds() -> None:
    short = [s for cls in KINDS.values() for s in cls.short_names]
    assert len(short) == len(set(short))


# --- structural schema rules ------------------------------------------------------------

_JUNCTORS = ("anyOf", "oneOf", "allOf", "not")


def structural_problems(node: Any, path: str = "") -> list[str]:
    """Violations of Kubernetes' structural-schema rules (and of what we promise on top)."""
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    problems = []
    if "type" not in node and not (
        node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    ):
        problems.append(f"{path}: no type")
    for key in ("$ref", "$defs", "title", "const", *_JUNCTORS):
        if key in node:
            problems.append(f"{path}: has {key}")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for flag in ("exclusiveMinimum", "exclusiveMaximum"):
        if flag in node and not isinstance(node[flag], bool):
            problems.append(f"{path}: {flag} must be a boolean in OpenAPI v3.0")
    if "default" in node and node["default"] is None:
        problems.append(f"{path}: null default")
    if "enum" in node and node.get("type") and any(
        not _is_type(v, node["type"]) for v in node["enum"]
    ):
        problems.append(f"{path}: enum values not all of type {node['type']}")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    for name, sub in node.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def _is_type(value: Any, type_: str) -> bool:
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }[type_]


@pytest.mark.parametrize("kind", list(KINDS))
def test_schemas_are_structural(kind: str) -> None:
    schema = schema_of(kind)
    assert structural_problems(schema, kind) == []
    props = schema["properties"]
    # metadata is the API server's to validate: typed, described, nothing more.
    assert props["metadata"]["type"] == "object" and set(props["metadata"]) == {"type", "description"}
    assert props["status"]["x-kubernetes-preserve-unknown-fields"] is True
    # Only status keeps unknown fields (Kopf's progress); spec typos are pruned, not stored.
    assert "x-kubernetes-preserve-unknown-fields" not in props["spec"]
    assert schema["required"] == ["spec"]


def test_the_checker_catches_violations() -> None:
    # The walker above is the test's only guard: prove it fails on each rule it claims to check.
    bad = {
        "type": "object",
        "properties": {
            "untyped": {"description": "x"},
            "ref": {"$ref": "#/$defs/X", "type": "object"},
            "closed": {"type": "object", "additionalProperties": False},
            "excl": {"type": "number", "exclusiveMinimum": 0},
            "arr": {"type": "array"},
            "union": {"type": "string", "anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    found = "\n".join(structural_problems(bad))
    for field in ("untyped: no type", "ref: has $ref", "closed: additionalProperties: false",
                  "excl: exclusiveMinimum", "arr: array without items", "union: has anyOf"):
        assert field in found


def test_translation_of_json_schema_constructs() -> None:
    source = {
        "type": "object",
        "title": "M",
        "properties": {
            "maybe": {"anyOf": [{"$ref": "#/$defs/Sub"}, {"type": "null"}], "default": None, "description": "d"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "fixed": {"const": "only"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "anything": {},
            "port": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
        "additionalProperties": False,
        "$defs": {"Sub": {"type": "object", "title": "Sub", "properties": {"a": {"type": "string"}}}},
    }
    out = structural_schema(source, "M")
    props = out["properties"]
    assert props["maybe"] == {
        "type": "object", "description": "d", "nullable": True, "properties": {"a": {"type": "string"}},
    }
    assert props["ratio"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}
    assert props["fixed"] == {"type": "string", "enum": ["only"]}
    assert props["counts"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["anything"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert props["port"] == {"x-kubernetes-int-or-string": True}
    assert "additionalProperties" not in out and "title" not in out
    with pytest.raises(CRDGenerationError, match=r"M\.bad: union"):
        structural_schema({"type": "object", "properties": {"bad": {"anyOf": [{"type": "string"},
                                                                              {"type": "boolean"}]}}}, "M")


# --- the schema accepts what the models accept, and rejects what they reject -------------



def to_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 (nullable) -> JSON Schema draft 4 (type lists), for the jsonschema library."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k != "properties"}
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    return out


def validator(kind: str) -> Any:
    # Draft 4 has boolean exclusiveMinimum/Maximum, as OpenAPI v3.0 does.
    return jsonschema.Draft4Validator(to_json_schema(schema_of(kind)))


def pruned(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would silently drop: in the object, not in the schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return []
    lost = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                lost += pruned(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                lost += pruned(value, extra, f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                lost.append(f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, value in enumerate(obj):
            lost += pruned(value, schema["items"], f"{path}[{i}]")
    return lost


def full_training_job() -> TrainingJob:
    job = TrainingJob(
        metadata=ObjectMeta(name="shapes-detector"),
        spec=TrainingJobSpec(
            dataset_version="shapes-v1", task="object-detection",
            model=ModelSpec(name="ssdlite320_mobilenet_v3_large", image_size=160),
            classes=["circle", "square"],
        ),
        status=TrainingJobStatus(
            progress=Progress(epoch=3, epochs=10, metrics={"loss": 0.5}),
            best_metric=BestMetric(name="AP50", value=0.9, epoch=3), metrics={"AP50": 0.9},
            onnx_uri="s3://b/x/model.onnx",
        ),
    )
    job.status.set_condition("Succeeded", False, "Training", "epoch 3/10")  # type: ignore[union-attr]
    return job


def test_a_training_job_with_defaults_validates_and_loses_nothing() -> None:
    obj = full_training_job().dump()
    assert obj["spec"]["hyperparameters"]["epochs"] == 10  # the defaults are in the dump
    errors = [e.message for e in validator("TrainingJob").iter_errors(obj)]
    assert errors == []
    assert pruned(obj, schema_of("TrainingJob")) == []
    # Also with explicit nulls, as `model_dump` without exclude_none writes them.
    with_nulls = full_training_job().model_dump(mode="json", by_alias=True)
    assert with_nulls["spec"]["model"]["checkpoint"] is None
    assert list(validator("TrainingJob").iter_errors(with_nulls)) == []


@pytest.mark.parametrize(
    ("path", "value", "keyword"),
    [
        (("hyperparameters", "epochs"), -1, "minimum"),
        (("split", "trainPercent"), 100, "maximum"),  # exclusive bound survived the translation
        (("hyperparameters", "optimizer", "lr"), 0, "minimum"),
        (("task",), "regression", "enum"),
        (("model", "name"), "", "minLength"),
    ],
)
def test_invalid_specs_are_rejected_by_the_schema(path: tuple[str, ...], value: Any, keyword: str) -> None:
    obj = full_training_job().dump()
    node = obj["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    errors = list(validator("TrainingJob").iter_errors(obj))
    assert errors, f"spec.{'.'.join(path)}={value!r} was accepted"
    # Rejected by the rule we meant, at the field we changed.
    assert any(e.validator == keyword and tuple(e.path)[1:] == path for e in errors), errors


def test_missing_required_spec_field_is_rejected() -> None:
    obj = full_training_job().dump()
    del obj["spec"]["model"]
    assert any("'model' is a required property" in e.message for e in validator("TrainingJob").iter_errors(obj))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifests_validate(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("apiVersion") == "kubeforge.io/v1alpha1"]
    assert docs, f"{path}: no kubeforge.io documents"
    for doc in docs:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator(doc["kind"]).iter_errors(doc)]
        assert errors == [], f"{path} {doc['kind']}/{doc['metadata']['name']}"
        assert pruned(doc, schema_of(doc["kind"])) == [], f"{path}: fields the API server would drop"
