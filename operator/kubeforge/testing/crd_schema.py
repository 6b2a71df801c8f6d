"""A CRD version's `openAPIV3Schema`, applied the way apiextensions-apiserver applies it.

Compiled once per CRD version (when the CRD is POSTed) and used on every write of its objects:

1. pruning of unknown fields (kept under `x-kubernetes-preserve-unknown-fields`), collecting
   their paths so that `?fieldValidation=Strict` can refuse them (400) and the default `Warn`
   can report them in a `Warning` header;
2. structural defaulting: `null` for a non-nullable field is dropped (or replaced by its
   default), a missing field with a `default` gets it, inside objects that exist;
3. validation of the OpenAPI v3 keywords with `jsonschema` (type, enum, minimum/maximum and
   their exclusive forms, minLength/maxLength, pattern, minItems/maxItems, required, nullable,
   the int32/int64/date-time formats), each error turned into a Kubernetes field error;
4. `x-kubernetes-validations` CEL rules with cel-python, transition rules (`oldSelf`) only on an
   update where the old value exists.

Validation ratchets as in Kubernetes 1.30+ (CRDValidationRatcheting): a top-level section
(`spec`, `status`, ...) that a write leaves unchanged is not re-validated; a write to `/status`
validates only `status`. CEL rules are evaluated on properties of objects (not inside list items or
map values: no rule of ours sits there).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema

from kubeforge.testing import field_errors as fe
from kubeforge.testing.fast_schema import Compiler
from kubeforge.testing.field_errors import FieldError
from kubeforge.testing.kube_objects import Body

IDENTITY = ("apiVersion", "kind", "metadata")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMATS.checks("date-time")
def _date_time(value: Any) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


# --- pruning and defaulting ----------------------------------------------------------------


def prune(value: Any, schema: Any, path: tuple[Any, ...] = (), unknown: list[str] | None = None) -> Any:
    """Drop what the schema does not declare (recording where), unless it preserves unknown fields."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        out = {}
        for key, item in value.items():
            if key in props:
                out[key] = prune(item, props[key], (*path, key), unknown)
            elif isinstance(extra, dict):
                out[key] = prune(item, extra, (*path, key), unknown)
            elif preserve:
                out[key] = item
            elif unknown is not None:
                unknown.append(fe.field_path((*path, key)))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], (*path, i), unknown) for i, item in enumerate(value)]
    return value


def default(value: Any, schema: Any) -> None:
    """Structural defaulting in place (apiextensions' PruneNonNullableNullsWithoutDefaults + Default)."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key in value and value[key] is None and not sub.get("nullable"):
                if "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                else:
                    del value[key]
            elif key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            if key in props:
                default(item, props[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                default(item, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            default(item, schema["items"])


# --- OpenAPI v3 (structural) -> JSON Schema draft 4 ------------------------------------------


def to_json_schema(node: Any) -> Any:
    """The validating keywords of a structural schema as draft 4 (whose exclusiveMinimum is a boolean
    like OpenAPI v3.0's). Unknown fields are pruned before validation, so objects stay open."""
    if not isinstance(node, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
                "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "required", "format",
                "minProperties", "maxProperties", "multipleOf"):
        if key in node:
            out[key] = node[key]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [to_json_schema(sub) for sub in node[key]]
    if "not" in node:
        out["not"] = to_json_schema(node["not"])
    if "properties" in node:
        out["properties"] = {name: to_json_schema(sub) for name, sub in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def field_error(error: jsonschema.ValidationError, prefix: tuple[Any, ...]) -> FieldError:
    """One jsonschema error in kube-openapi's words."""
    path = fe.field_path((*prefix, *error.absolute_path))
    keyword, limit, value = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword == "required":
        missing = re.match(r"^'(.*)' is a required property$", error.message)
        name = missing.group(1) if missing else str(limit)
        return fe.required(f"{path}.{name}" if path else name)
    if keyword == "type":
        wanted = limit[0] if isinstance(limit, list) else limit
        return fe.type_invalid(path, value, str(wanted))
    if keyword == "enum":
        return fe.not_supported(path, value, [v for v in limit if v is not None])
    if keyword == "minimum":
        op = "greater than" if schema.get("exclusiveMinimum") is True else "greater than or equal to"
        return fe.invalid(path, value, f"{path} in body should be {op} {_num(limit)}")
    if keyword == "maximum":
        op = "less than" if schema.get("exclusiveMaximum") is True else "less than or equal to"
        return fe.invalid(path, value, f"{path} in body should be {op} {_num(limit)}")
    if keyword == "minLength":
        return fe.invalid(path, value, f"{path} in body should be at least {limit} chars long")
    if keyword == "maxLength":
        return fe.too_long(path, limit)
    if keyword == "pattern":
        return fe.invalid(path, value, f"{path} in body should match '{limit}'")
    if keyword == "minItems":
        return fe.invalid(path, len(value), f"{path} in body should have at least {limit} items")
    if keyword == "maxItems":
        return fe.too_many(path, len(value), limit)
    if keyword == "format":
        return fe.invalid(path, value, f"{path} in body must be of type {limit}: {fe.show(value)}")
    return fe.invalid(path, value, error.message)


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# --- CEL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    path: tuple[str, ...]
    rule: str
    message: str
    transition: bool
    program: Any
    field_path: str = ""
    reason: str = "FieldValueInvalid"


@functools.cache
def cel_environment() -> celpy.Environment:
    """One CEL environment per process: building its parser takes a quarter of a second."""
    return celpy.Environment()


def _walk_rules(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    for rule in node.get("x-kubernetes-validations") or []:
        yield path, rule
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk_rules(sub, (*path, name))


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


# --- the compiled schema ---------------------------------------------------------------------


class CrdSchema:
    """Everything needed to admit an object of one CRD version, compiled once."""

    def __init__(self, kind: str, group: str, version: str, schema: Body) -> None:
        self.kind, self.group, self.version, self.schema = kind, group, version, schema
        props = schema.get("properties") or {}
        self.sections = {name: sub for name, sub in props.items() if name not in IDENTITY}
        self.required = [r for r in schema.get("required") or [] if r not in IDENTITY]
        self.validators = {name: jsonschema.Draft4Validator(to_json_schema(sub), format_checker=FORMATS)
                           for name, sub in self.sections.items()}
        # Asked first: jsonschema (slow) explains only what this predicate found invalid.
        compiler = Compiler(draft4=True, formats={"int32": _int32, "int64": _int64, "date-time": _date_time})
        self.valid = {name: compiler.compile(to_json_schema(sub)) for name, sub in self.sections.items()}
        self.rules: dict[str, list[CelRule]] = {}
        for path, rule in _walk_rules(schema, ()):
            if not path or path[0] in IDENTITY:
                continue
            env = cel_environment()
            text = rule["rule"]
            compiled = CelRule(path, text, rule.get("message") or f"failed rule: {text}",
                               "oldSelf" in text, env.program(env.compile(text)),
                               rule.get("fieldPath") or "", rule.get("reason") or "FieldValueInvalid")
            self.rules.setdefault(path[0], []).append(compiled)

    def admit(self, obj: Body, old: Body | None, subresource: str | None,
              unknown: list[str] | None = None) -> Body:
        """`obj` pruned (unknown paths appended to `unknown`) and defaulted.

        A section equal to the stored one is taken as it is: it was pruned and defaulted when
        written (most writes of an operator touch only metadata or only status)."""
        props = self.schema.get("properties") or {}
        if old is None or self.schema.get("x-kubernetes-preserve-unknown-fields"):
            kept = {k: obj[k] for k in IDENTITY if k in obj}
            rest = prune({k: v for k, v in obj.items() if k not in IDENTITY}, self.schema, (), unknown)
            default(rest, self.schema)
            return {**kept, **rest}
        out: Body = {}
        for key, value in obj.items():
            if key in IDENTITY or (key in old and old[key] == value):
                out[key] = value
            elif key not in props:
                if unknown is not None:
                    unknown.append(key)
            elif value is None and not props[key].get("nullable"):
                continue  # a null non-nullable field is dropped (then defaulted below, if it has a default)
            else:
                out[key] = prune(value, props[key], (key,), unknown)
                default(out[key], props[key])
        for key, sub in props.items():
            if key not in out and key not in IDENTITY and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
                default(out[key], sub)
        return out

    def errors(self, obj: Body, old: Body | None, subresource: str | None) -> list[FieldError]:
        """Every field error of an admitted object (sections a write left unchanged are skipped)."""
        errors: list[FieldError] = []
        if subresource is None and old is None:
            errors += [fe.required(name) for name in self.required if name not in obj]
        for name in self.sections:
            if subresource == "status" and name != "status":
                continue
            if name not in obj or (old is not None and old.get(name) == obj[name]):
                continue  # absent, or unchanged: ratcheting leaves it alone
            errors += self.section_errors(name, obj[name], None if old is None else old.get(name))
        return errors

    def section_errors(self, name: str, value: Any, old: Any) -> list[FieldError]:
        errors = [] if self.valid[name](value) else [
            field_error(e, (name,)) for e in self.validators[name].iter_errors(value)]
        errors.sort(key=lambda e: e.field)
        if errors:
            return errors  # CEL rules assume a value of the declared shape
        for rule in self.rules.get(name, ()):
            errors += self._cel_errors(rule, {name: value}, None if old is None else {name: old})
        return errors

    def _cel_errors(self, rule: CelRule, new: Body, old: Body | None) -> list[FieldError]:
        value = _at(new, rule.path)
        old_value = _at(old, rule.path) if old is not None else None
        if value is None or (rule.transition and old_value is None):
            return []
        activation = {"self": celpy.json_to_cel(value)}
        if rule.transition:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        path = fe.field_path(rule.path) + rule.field_path
        try:
            result = rule.program.evaluate(activation)
        except Exception as exc:  # a rule that cannot be evaluated is an invalid object, as in a cluster
            return [fe.invalid(path, value, f"{rule.message}: {exc}")]
        if isinstance(result, Exception) or not bool(result):
            return [fe.FieldError(path, rule.reason, f"Invalid value: {fe.show(value)}: {rule.message}")]
        return []
