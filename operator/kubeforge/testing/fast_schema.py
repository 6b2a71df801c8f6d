"""A JSON Schema compiled to nested Python closures that answer one question fast: is it valid?

`jsonschema` explains what is wrong, but walking a Job through it costs milliseconds (it re-resolves
`$ref`s and builds an evolved validator per keyword), which made the emulator the bottleneck of the
500-TrainingJob benchmark. The emulator asks this predicate first and asks `jsonschema` for the
errors only when an object is invalid, so the answer and the messages are still jsonschema's.

Covers exactly the keywords of the schemas it is given (the Kubernetes OpenAPI JSON schemas and
CRD structural schemas translated to draft 4): an unknown validation keyword is an error at compile
time, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# Keywords that never make a value invalid (annotations, and Kubernetes' own extensions).
ANNOTATIONS = frozenset({"description", "title", "default", "$schema", "$id", "discriminator", "examples",
                         "fields-to-discriminateBy", "example", "readOnly", "deprecated"})

_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class Compiler:
    """Compiles schemas whose `$ref`s point into `definitions` (by the last path segment)."""

    def __init__(self, definitions: dict[str, Any] | None = None, draft4: bool = False,
                 formats: dict[str, Check] | None = None) -> None:
        self.definitions = definitions or {}
        self.draft4 = draft4  # exclusiveMinimum/Maximum are booleans beside minimum/maximum
        self.formats = formats or {}
        self._refs: dict[str, Check] = {}
        # Draft 4 counts only ints as integers; later drafts also 1.0 (as jsonschema does).
        self.types = {**_TYPES, "integer": lambda v: isinstance(v, int) and not isinstance(v, bool)} if draft4 \
            else _TYPES

    def ref(self, ref: str) -> Check:
        name = ref.rsplit("/", 1)[-1]
        if name not in self._refs:
            slot: list[Check] = []
            self._refs[name] = lambda v: slot[0](v)  # recursion-safe: filled in below
            slot.append(self.compile(self.definitions[name]))
        return self._refs[name]

    def compile(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return lambda v: True
        if schema is False:
            return lambda v: False
        checks: list[Check] = []
        kinds: list[str] = []
        for key, arg in schema.items():
            if key in ANNOTATIONS or key.startswith("x-kubernetes-") or key in ("properties", "additionalProperties",
                                                                                "exclusiveMinimum", "exclusiveMaximum"):
                continue
            if key == "$ref":
                checks.append(self.ref(arg))
            elif key == "type":
                kinds = [arg] if isinstance(arg, str) else list(arg)
                tests = [self.types[k] for k in kinds]
                checks.append(tests[0] if len(tests) == 1 else lambda v, ts=tests: any(t(v) for t in ts))
            elif key == "enum":
                checks.append(lambda v, a=arg: any((v == x and type(v) is type(x)) or (
                    isinstance(v, int | float) and isinstance(x, int | float) and v == x
                    and not isinstance(v, bool) and not isinstance(x, bool)) for x in a))
            elif key == "required":
                checks.append(lambda v, a=tuple(arg): not isinstance(v, dict) or all(k in v for k in a))
            elif key == "items":
                item = self.compile(arg)
                checks.append(lambda v, c=item: not isinstance(v, list) or all(map(c, v)))
            elif key in ("oneOf", "anyOf", "allOf"):
                subs = [self.compile(s) for s in arg]
                if key == "oneOf":
                    checks.append(lambda v, ss=subs: sum(1 for s in ss if s(v)) == 1)
                elif key == "anyOf":
                    checks.append(lambda v, ss=subs: any(s(v) for s in ss))
                else:
                    checks.append(lambda v, ss=subs: all(s(v) for s in ss))
            elif key == "not":
                sub = self.compile(arg)
                checks.append(lambda v, s=sub: not s(v))
            elif key == "minimum":
                exclusive = self.draft4 and schema.get("exclusiveMinimum") is True
                checks.append(lambda v, a=arg, x=exclusive: not _is_num(v) or (v > a if x else v >= a))
            elif key == "maximum":
                exclusive = self.draft4 and schema.get("exclusiveMaximum") is True
                checks.append(lambda v, a=arg, x=exclusive: not _is_num(v) or (v < a if x else v <= a))
            elif key == "minLength":
                checks.append(lambda v, a=arg: not isinstance(v, str) or len(v) >= a)
            elif key == "maxLength":
                checks.append(lambda v, a=arg: not isinstance(v, str) or len(v) <= a)
            elif key == "pattern":
                rx = re.compile(arg)
                checks.append(lambda v, r=rx: not isinstance(v, str) or r.search(v) is not None)
            elif key == "minItems":
                checks.append(lambda v, a=arg: not isinstance(v, list) or len(v) >= a)
            elif key == "maxItems":
                checks.append(lambda v, a=arg: not isinstance(v, list) or len(v) <= a)
            elif key == "minProperties":
                checks.append(lambda v, a=arg: not isinstance(v, dict) or len(v) >= a)
            elif key == "maxProperties":
                checks.append(lambda v, a=arg: not isinstance(v, dict) or len(v) <= a)
            elif key == "uniqueItems":
                if arg:
                    checks.append(lambda v: not isinstance(v, list) or _unique(v))
            elif key == "multipleOf":
                checks.append(lambda v, a=arg: not _is_num(v) or (v / a) == int(v / a))
            elif key == "format":
                if arg in self.formats:
                    checks.append(self.formats[arg])
            else:
                raise ValueError(f"fast_schema: keyword {key!r} is not supported")
        # Properties that accept anything (description only) are not even called.
        props: dict[str, Check | None] = {}
        for name, sub in (schema.get("properties") or {}).items():
            check = self.compile(sub)
            props[name] = None if check is ALWAYS else check
        extra = schema.get("additionalProperties", True)
        if any(c is not None for c in props.values()) or extra is not True:
            extra_check = None if extra is True else (lambda v: False) if extra is False else self.compile(extra)
            if extra_check is ALWAYS:
                extra_check = None

            def object_check(v: Any, props: dict[str, Check | None] = props, extra: Check | None = extra_check) -> bool:
                if not isinstance(v, dict):
                    return True
                for key, item in v.items():
                    check = props[key] if key in props else extra
                    if check is not None and not check(item):
                        return False
                return True

            checks.append(object_check)
        if not checks:
            return ALWAYS
        if len(checks) == 1:
            return checks[0]
        first, *rest = checks
        if len(rest) == 1:
            second = rest[0]
            return lambda v: first(v) and second(v)

        def all_of(v: Any, cs: tuple[Check, ...] = tuple(checks)) -> bool:
            for c in cs:
                if not c(v):
                    return False
            return True

        return all_of


def ALWAYS(v: Any) -> bool:  # a constant: the check of a schema that accepts anything
    return True


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _unique(values: list[Any]) -> bool:
    seen: list[Any] = []
    for value in values:
        if value in seen:
            return False
        seen.append(value)
    return True
