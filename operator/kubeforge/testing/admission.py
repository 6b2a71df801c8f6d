"""What the emulator checks on every create, update (PUT), patch and status write before storing it.

- custom resources: their CRD version's `openAPIV3Schema` (`crd_schema.CrdSchema`: pruning,
  defaulting, OpenAPI validation, CEL rules);
- built-in kinds: the Kubernetes OpenAPI schemas of a release (`core_schema`) and the per-kind
  rules of `object_meta.kind_errors`;
- every kind: metadata (name on create, labels, annotations, ownerReferences).

Unknown fields are dropped with a `Warning` header (`fieldValidation=Warn`, the server's default),
dropped silently (`Ignore`), or refused with 400 (`Strict`, what kubectl sends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeforge.testing import core_schema
from kubeforge.testing import field_errors as fe
from kubeforge.testing.kube_objects import ApiError, Body, ResourceType
from kubeforge.testing.object_meta import kind_errors, meta_errors


@dataclass
class WriteOptions:
    """Per-request: the `fieldValidation` query parameter, and the warnings to send back."""

    field_validation: str = "Warn"
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, query: Any) -> WriteOptions:
        value = query.get("fieldValidation") or "Warn"
        if value not in ("Ignore", "Warn", "Strict"):
            raise ApiError(400, "BadRequest",
                           f'fieldValidation must be one of "Ignore", "Warn", "Strict", not {value!r}')
        return cls(value)


def admit(rt: ResourceType, obj: Body, old: Body | None, subresource: str | None,
          options: WriteOptions | None) -> Body:
    """The object to store, pruned and defaulted; raises the API server's 400 or 422 (marked `admission`)."""
    try:
        return _admit(rt, obj, old, subresource, options or WriteOptions())
    except ApiError as exc:
        exc.admission = True  # type: ignore[attr-defined]
        raise


def _admit(rt: ResourceType, obj: Body, old: Body | None, subresource: str | None, options: WriteOptions) -> Body:
    unknown: list[str] = []
    errors: list[fe.FieldError] = []
    name = (obj.get("metadata") or {}).get("name", "")
    if subresource is None and (old is None or old.get("metadata") != obj.get("metadata")):
        errors += meta_errors(obj, rt.kind, rt.group, check_name=old is None)
    if rt.crd is not None:
        obj = rt.crd.admit(obj, old, subresource, unknown)
        _unknown_fields(rt, unknown, options)
        crd_errors = rt.crd.errors(obj, old, subresource)
        errors += crd_errors
    elif rt.builtin:
        invalid, decode = core_schema.check(obj, unknown)
        _unknown_fields(rt, unknown, options)
        if decode:
            raise fe.decode_error(rt.kind, rt.version, "; ".join(decode))
        if old is None or any(old.get(k) != obj.get(k) for k in obj if k not in ("metadata", "status")):
            invalid += kind_errors(obj, rt.kind, rt.group)
        errors += invalid
    if errors:
        raise fe.invalid_error(rt.kind, rt.group, name, errors)
    return obj


def _unknown_fields(rt: ResourceType, unknown: list[str], options: WriteOptions) -> None:
    if not unknown:
        return
    if options.field_validation == "Strict":
        raise fe.strict_decoding_error(rt.kind, rt.version, unknown)
    if options.field_validation == "Warn":
        options.warnings += [f'unknown field "{path}"' for path in unknown]
