"""Kubernetes field errors (apimachinery's `field.Error`) and the 422/400 `Status` bodies they make.

One place for the wording an API server uses, so the CRD schemas, the core-kind schemas and the
metadata checks all answer as kube-apiserver 1.31 does:
`TrainingJob.kubeforge.io "x" is invalid: spec.hyperparameters.epochs: Invalid value: 0: ...`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubeforge.testing.kube_objects import ApiError


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, ...
    detail: str  # the message after "<field>: "


def field_path(parts: Iterable[Any]) -> str:
    """`spec.tolerations[0].key` from ("spec", "tolerations", 0, "key")."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def show(value: Any) -> str:
    """A value as apimachinery prints it in "Invalid value: ..." (objects by their type)."""
    if isinstance(value, dict | list):
        return json.dumps("object" if isinstance(value, dict) else "array")
    return json.dumps(value)  # scalars as JSON: true, null, 3, "text"


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid", f"Invalid value: {show(value)}: {detail}")


def required(field: str) -> FieldError:
    return FieldError(field, "FieldValueRequired", "Required value")


def not_supported(field: str, value: Any, allowed: Sequence[Any]) -> FieldError:
    listed = ", ".join(json.dumps(a) for a in allowed)
    return FieldError(field, "FieldValueNotSupported", f"Unsupported value: {show(value)}: supported values: {listed}")


def too_long(field: str, limit: int) -> FieldError:
    return FieldError(field, "FieldValueTooLong", f"Too long: may not be longer than {limit}")


def too_many(field: str, count: int, limit: int) -> FieldError:
    return FieldError(field, "FieldValueTooMany", f"Too many: {count}: must have at most {limit} items")


def type_invalid(field: str, value: Any, wanted: str) -> FieldError:
    return FieldError(field, "FieldValueTypeInvalid",
                      f"Invalid value: {show(json_type(value))}: {field} in body must be of type {wanted}: "
                      f"{json.dumps(json_type(value))}")


def invalid_error(kind: str, group: str, name: str, errors: Sequence[FieldError]) -> ApiError:
    """422 Invalid, as `apierrors.NewInvalid` renders it."""
    texts = [f"{e.field}: {e.detail}" if e.field else e.detail for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details = {"name": name, "group": group, "kind": kind,
               "causes": [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]}
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)


def strict_decoding_error(kind: str, version: str, unknown: Sequence[str]) -> ApiError:
    """400 for unknown fields under `?fieldValidation=Strict` (kubectl's default)."""
    fields = ", ".join(f'unknown field "{path}"' for path in unknown)
    return ApiError(400, "BadRequest",
                    f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}')


def decode_error(kind: str, version: str, detail: str) -> ApiError:
    """400 for a value of the wrong JSON type in a built-in kind (Go's json decoder refuses it)."""
    return ApiError(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}')
