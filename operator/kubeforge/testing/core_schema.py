"""Built-in kinds (Jobs, Deployments, Services, ConfigMaps, Pods, Events...) against the Kubernetes
OpenAPI schemas of one release, the JSON schemas that PyPI `kubernetes-validate` ships.

The same Kubernetes version as the chart tests (tests/test_chart.py). The schemas are read once per
process and one validator per kind is kept (kubernetes-validate's own `validate()` re-reads 1.3 MB
of definitions on every call); a compiled predicate (`fast_schema`) answers "valid" first, and
`jsonschema` is asked for the errors only when it says no. As an API server decodes a built-in object:

- a field no schema declares is dropped with a `Warning` header, or refused with 400 under
  `?fieldValidation=Strict` ("strict decoding error: unknown field ...");
- a value of the wrong JSON type is a 400 decoding error, as Go's JSON decoder refuses it;
- anything else the schema refuses (a required field missing, an enum) is 422 Invalid, except
  `required` under `status`: built-in kinds are decoded by Go, which zero-fills a missing field, and
  status is written by controllers whose validation is looser than the schema's `required`.

Not modelled: the built-in defaulting (e.g. a Job's backoffLimit 6) and most of the hand-written
validation of each kind; `object_meta` adds the few checks that catch operator bugs (names, labels)
and the Job/Deployment rules in `kind_errors`.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
from referencing import Registry, Resource

from kubeforge.testing import field_errors as fe
from kubeforge.testing.fast_schema import Check, Compiler
from kubeforge.testing.field_errors import FieldError

KUBE_VERSION = "1.31.0"  # as tests/test_chart.py; kind-config.yaml runs 1.31
_UNEXPECTED = re.compile(r"'([^']+)' (?:was|were) unexpected")


@functools.cache
def _registry(version: str) -> tuple[Any, Registry, Compiler]:
    import importlib.resources

    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions = json.loads((root / "_definitions.json").read_text())
    return root, Resource.from_contents(definitions) @ Registry(), Compiler(definitions["$defs"])


@functools.cache
def validator(api_version: str, kind: str, version: str = KUBE_VERSION) -> tuple[Check, jsonschema.Validator] | None:
    """(fast validity check, jsonschema validator for the errors) of a built-in kind; None without a schema."""
    root, registry, compiler = _registry(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = root / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return compiler.compile(schema), jsonschema.Draft202012Validator(
        schema, registry=Resource.from_contents(schema) @ registry)


def _delete(obj: Any, parts: tuple[Any, ...], key: str) -> None:
    for part in parts:
        obj = obj[part]
    obj.pop(key, None)


def check(obj: dict[str, Any], unknown: list[str]) -> tuple[list[FieldError], list[str]]:
    """(422 field errors, 400 type errors) of a built-in object; unknown fields are removed from `obj`
    in place and their paths appended to `unknown`."""
    found = validator(obj.get("apiVersion", ""), obj.get("kind", ""))
    if found is None or found[0](obj):
        return [], []
    invalid: list[FieldError] = []
    decode: list[str] = []
    for error in found[1].iter_errors(obj):
        parts = tuple(error.absolute_path)
        path = fe.field_path(parts)
        if error.validator == "additionalProperties":
            for key in _UNEXPECTED.findall(error.message) or [
                    k for k in error.instance if k not in (error.schema.get("properties") or {})]:
                unknown.append(fe.field_path((*parts, key)))
                _delete(obj, parts, key)
        elif error.validator == "type":
            wanted = [t for t in error.validator_value if t != "null"] if isinstance(
                error.validator_value, list) else [error.validator_value]
            decode.append(f"json: cannot unmarshal {fe.json_type(error.instance)} into Go struct field "
                          f"{path} of type {wanted[0] if wanted else 'null'}")
        elif error.validator == "required" and parts[:1] == ("status",):
            continue  # status is the controllers' (and the tests playing them); Go's decoder zero-fills it
        elif error.validator == "required":
            missing = re.match(r"^'(.*)' is a required property$", error.message)
            name = missing.group(1) if missing else str(error.validator_value)
            invalid.append(fe.required(f"{path}.{name}" if path else name))
        elif error.validator == "enum":
            invalid.append(fe.not_supported(path, error.instance, error.validator_value))
        else:
            invalid.append(fe.invalid(path, error.instance, error.message))
    return invalid, decode
