"""Manifests against the generated CRD schemas, as a real API server would judge them.

The Kubernetes emulator the operator tests run against admits every write by these schemas
(kubeforge.testing.admission); here every example manifest must pass, and broken ones (unknown field,
wrong type, out-of-range value, missing field, a changed immutable spec) must fail, with the
openAPIV3Schema (jsonschema) and the CEL rules (`x-kubernetes-validations`, cel-python).

An API server prunes unknown fields silently unless a schema node says
`x-kubernetes-preserve-unknown-fields`; `kubectl apply` (strict field validation, the default
since 1.27) rejects them. Unknown fields are errors here, as with kubectl.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from pydantic import ValidationError

from kubeforge.api.crd import crd_filename
from kubeforge.api.registry import KINDS, parse_resource
from kubeforge.testing.crd_schema import CrdSchema

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
EXAMPLES = sorted((REPO / "examples").glob("**/*.yaml"))


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / crd_filename(KINDS[kind])).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What a real API server with kubectl's strict field validation refuses, in its words: the
    emulator's translation of the structural schema (kubeforge.testing.crd_schema) judges it."""
    kind = obj["kind"]
    schema = CrdSchema(kind, "kubeforge.io", "v1alpha1", crd_schema(kind))
    unknown: list[str] = []
    admitted = schema.admit(obj, None, None, unknown)
    return sorted([f'{path}: strict decoding error: unknown field "{path}"' for path in unknown]
                  + [f"{e.field}: {e.detail}" for e in schema.errors(admitted, None, None)])


# --- CEL ------------------------------------------------------------------------------------


def cel_rules(node: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every `x-kubernetes-validations` rule with the path of the node it sits on."""
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in node.get("properties", {}).items():
        yield from cel_rules(sub, (*path, name))


def at(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def cel_errors(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Messages of the CEL rules that fail; transition rules (oldSelf) only on an update."""
    env = celpy.Environment()
    errors = []
    for path, rule in cel_rules(crd_schema(new["kind"])):
        is_transition = "oldSelf" in rule["rule"]
        value, old_value = at(new, path), at(old, path) if old is not None else None
        if value is None or (is_transition and old_value is None):
            continue  # the API server evaluates a rule only where its node (and, for oldSelf, the old one) exists
        activation = {"self": celpy.json_to_cel(value)}
        if is_transition:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        result = env.program(env.compile(rule["rule"])).evaluate(activation)
        if not bool(result):
            errors.append(f"{'.'.join(path)}: {rule.get('message', rule['rule'])}")
    return errors


# --- the examples ---------------------------------------------------------------------------


def example_objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in KINDS:
                found.append((f"{path.relative_to(REPO)}:{doc['metadata']['name']}", doc))
    return found


EXAMPLE_OBJECTS = example_objects()


def example(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(obj for _, obj in EXAMPLE_OBJECTS if obj["kind"] == kind))


def test_every_kind_has_an_example() -> None:
    assert {obj["kind"] for _, obj in EXAMPLE_OBJECTS} >= {"DatasetVersion", "TrainingJob", "InferenceService"}


@pytest.mark.parametrize(("where", "obj"), EXAMPLE_OBJECTS, ids=[w for w, _ in EXAMPLE_OBJECTS])
def test_example_passes_the_crd_schema_and_its_cel_rules(where: str, obj: dict[str, Any]) -> None:
    assert schema_errors(obj) == []
    assert cel_errors(obj) == []
    assert cel_errors(obj, old=copy.deepcopy(obj)) == []  # re-applying it unchanged is an allowed update


# --- broken manifests: the CRD refuses them, and so do the API models -------------------------


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return obj


def _drop(obj: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[part]
    del node[last]
    return obj


BROKEN = [
    # (id, kind, change, what the schema error names)
    ("unknown-field", "TrainingJob", lambda o: _set(o, "spec.hyperparameters.epoch", 3), "unknown field"),
    ("unknown-spec-field", "DatasetVersion", lambda o: _set(o, "spec.sorce", {"uri": "x"}), "unknown field"),
    ("wrong-type", "TrainingJob", lambda o: _set(o, "spec.hyperparameters.epochs", "ten"), "must be of type integer"),
    ("wrong-type-bool", "TrainingJob", lambda o: _set(o, "spec.model.pretrained", "often"), "must be of type boolean"),
    ("below-minimum", "TrainingJob", lambda o: _set(o, "spec.hyperparameters.epochs", 0),
     "should be greater than or equal to"),
    ("exclusive-maximum", "TrainingJob", lambda o: _set(o, "spec.split.trainPercent", 100),
     "should be less than 100"),
    ("above-maximum", "TrainingJob", lambda o: _set(o, "spec.model.imageSize", 100000),
     "should be less than or equal to 4096"),
    ("not-in-enum", "DatasetVersion", lambda o: _set(o, "spec.source.format", "pascal"), "Unsupported value"),
    ("bad-pattern", "DatasetVersion", lambda o: _set(o, "spec.dataset", "Shapes_V1"), "should match"),
    ("missing-required", "DatasetVersion", lambda o: _drop(o, "spec.dataset"), "spec.dataset: Required value"),
    ("parent-of-no-kind", "DatasetVersion",  # a parent is a DatasetVersion or PredictionJob/<name>
     lambda o: _set(_set(_drop(o, "spec.source"), "spec.parents", ["TrainingJob/clf"]), "spec.operations",
                    [{"filter": {"minScore": 0.5}}]), "spec.parents[0]: Invalid value"),
    ("negative-replicas", "InferenceService", lambda o: _set(o, "spec.replicas", -1),
     "should be greater than or equal to"),
]


@pytest.mark.parametrize(("kind", "change", "expected"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_manifest_is_refused_by_the_crd_and_the_models(kind: str, change: Any, expected: str) -> None:
    obj = change(example(kind))
    errors = schema_errors(obj)
    assert errors, f"the CRD schema accepted {obj['spec']}"
    assert any(expected in e for e in errors), errors
    # One source of truth: the API models (used by `kubeforge run` and the operator) agree.
    with pytest.raises((ValidationError, ValueError)):
        parse_resource(obj)


def test_status_keeps_what_kopf_writes() -> None:
    # Kopf stores handler progress under status.kopf; the schema must not make it an error
    # (a real server would prune it, and the handler would retry forever).
    obj = example("TrainingJob")
    obj["status"] = {"phase": "Running", "kopf": {"progress": {"create_fn": {"retries": 1}}}}
    assert schema_errors(obj) == []


# --- CEL: DatasetVersion.spec is immutable --------------------------------------------------


def test_dataset_version_spec_has_an_immutability_rule() -> None:
    rules = list(cel_rules(crd_schema("DatasetVersion")))
    assert (("spec",), {"rule": "self == oldSelf", "message": "spec is immutable"}) in rules


@pytest.mark.parametrize(
    ("path", "value"),
    [("spec.source.uri", "s3://raw/shapes-v2/"), ("spec.source.format", "voc"), ("spec.parent", "shapes-v0")],
)
def test_changing_a_dataset_version_spec_is_refused(path: str, value: str) -> None:
    old = example("DatasetVersion")
    new = _set(copy.deepcopy(old), path, value)
    assert schema_errors(new) == []  # valid on its own: only the transition is refused
    assert cel_errors(new, old) == ["spec: spec is immutable"]
    assert cel_errors(new) == []  # creating it is fine


def test_status_and_metadata_changes_of_a_dataset_version_are_allowed() -> None:
    old = example("DatasetVersion")
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "vision"}
    new["status"] = {"phase": "Succeeded", "digest": "sha256:abc"}
    assert cel_errors(new, old) == []


def test_training_job_spec_is_not_immutable_in_the_crd() -> None:
    # A TrainingJob spec change after it started is refused by the operator with a condition,
    # not by the API server (a not-yet-started job may still be edited).
    old = example("TrainingJob")
    new = _set(copy.deepcopy(old), "spec.hyperparameters.epochs", 3)
    assert cel_errors(new, old) == []
