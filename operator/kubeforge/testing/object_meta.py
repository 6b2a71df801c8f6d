"""The hand-written API-server checks that no OpenAPI schema carries, for the bugs an operator makes:
object names, label and annotation syntax (every kind), and a few rules of Jobs, Deployments and
pod templates (restartPolicy, selector vs template labels, container and volume names).

Messages as kube-apiserver 1.31 writes them (`metadata.labels: Invalid value: "...": must be no
more than 63 characters`). Far from all of apimachinery's validation: what is here is what an
operator building objects from user-chosen names can get wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubeforge.testing import field_errors as fe
from kubeforge.testing.field_errors import FieldError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
ANNOTATIONS_MAX = 256 * 1024


def _subdomain(value: str) -> list[str]:
    out = []
    if len(value) > 253:
        out.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN.match(value):
        out.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                   "'.', and must start and end with an alphanumeric character")
    return out


def _label(value: str, pattern: re.Pattern[str] = DNS1123_LABEL) -> list[str]:
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not pattern.match(value):
        out.append("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                   "must start and end with an alphanumeric character")
    return out


def name_errors(kind: str, group: str, name: str) -> list[FieldError]:
    """metadata.name by the rule of its kind."""
    if kind in ("Service",):
        problems = _label(name, DNS1035_LABEL)
    elif kind == "Namespace":
        problems = _label(name)
    elif kind == "ConfigMap" or kind == "Secret":
        problems = [] if CONFIGMAP_KEY.match(name) and len(name) <= 253 else [
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"]
    elif kind == "Event":
        problems = []  # any path segment name
    else:
        problems = _subdomain(name)
        if kind == "Job" and group == "batch" and len(name) > 63:
            problems.append("must be no more than 63 characters")  # its pods get the name as a label
    return [fe.invalid("metadata.name", name, p) for p in problems]


def _key_errors(path: str, key: str) -> list[FieldError]:
    prefix, _, name = key.rpartition("/")
    errors = []
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        errors.append(fe.invalid(path, key, "prefix part a lowercase RFC 1123 subdomain must consist of lower "
                                            "case alphanumeric characters, '-' or '.'"))
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        errors.append(fe.invalid(path, key, "name part must consist of alphanumeric characters, '-', '_' or '.', "
                                            "must start and end with an alphanumeric character, and be no more "
                                            "than 63 characters"))
    return errors


def labels_errors(path: str, labels: Any) -> list[FieldError]:
    if not isinstance(labels, dict):
        return []
    errors = []
    for key, value in labels.items():
        errors += _key_errors(path, key)
        if not isinstance(value, str) or len(value) > 63:
            errors.append(fe.invalid(path, value, "must be no more than 63 characters"))
        elif not LABEL_VALUE.match(value):
            errors.append(fe.invalid(path, value, "a valid label must be an empty string or consist of "
                                                  "alphanumeric characters, '-', '_' or '.', and must start and end "
                                                  "with an alphanumeric character"))
    return errors


def meta_errors(obj: dict[str, Any], kind: str, group: str, check_name: bool) -> list[FieldError]:
    meta = obj.get("metadata") or {}
    errors = name_errors(kind, group, meta.get("name", "")) if check_name else []
    errors += labels_errors("metadata.labels", meta.get("labels"))
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            errors += _key_errors("metadata.annotations", key)
        if len(json.dumps(annotations)) > ANNOTATIONS_MAX:
            errors.append(fe.too_long("metadata.annotations", ANNOTATIONS_MAX))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not (ref or {}).get(key):
                errors.append(fe.required(f"metadata.ownerReferences[{i}].{key}"))
    return errors


def pod_spec_errors(path: str, spec: Any) -> list[FieldError]:
    if not isinstance(spec, dict):
        return []
    errors: list[FieldError] = []
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    containers = spec.get("containers") or []
    if not containers:
        errors.append(fe.required(f"{path}.containers"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            where = f"{path}.{group}[{i}]"
            name = (container or {}).get("name") or ""
            errors += [fe.invalid(f"{where}.name", name, p) for p in _label(name)]
            if name in seen:
                errors.append(fe.FieldError(f"{where}.name", "FieldValueDuplicate",
                                            f"Duplicate value: {json.dumps(name)}"))
            seen.add(name)
            for j, env in enumerate(container.get("env") or []):
                if not ENV_NAME.match((env or {}).get("name") or ""):
                    errors.append(fe.invalid(f"{where}.env[{j}].name", (env or {}).get("name"),
                                             "a valid environment variable name must consist of alphabetic "
                                             "characters, digits, '_', '-', or '.', and must not start with a digit"))
            for j, mount in enumerate(container.get("volumeMounts") or []):
                if (mount or {}).get("name") not in volumes:
                    errors.append(fe.FieldError(f"{where}.volumeMounts[{j}].name", "FieldValueNotFound",
                                                f"Not found: {json.dumps((mount or {}).get('name'))}"))
    return errors


def _selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    if not isinstance(selector, dict):
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def kind_errors(obj: dict[str, Any], kind: str, group: str) -> list[FieldError]:
    """Per-kind rules of Jobs, Deployments and Pods (and their pod templates)."""
    spec = obj.get("spec") or {}
    errors: list[FieldError] = []
    if kind == "Pod" and not group:
        return pod_spec_errors("spec", spec)
    if (group, kind) not in (("batch", "Job"), ("apps", "Deployment")):
        return errors
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    errors += labels_errors("spec.template.metadata.labels", tmeta.get("labels"))
    pod = template.get("spec") or {}
    errors += pod_spec_errors("spec.template.spec", pod)
    policy = pod.get("restartPolicy")
    if kind == "Job":
        if policy not in ("Never", "OnFailure"):
            errors.append(fe.not_supported("spec.template.spec.restartPolicy", policy, ["OnFailure", "Never"])
                          if policy else fe.FieldError("spec.template.spec.restartPolicy", "FieldValueRequired",
                                                       'Required value: valid values: "OnFailure", "Never"'))
        if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
            errors.append(fe.FieldError("spec.completions", "FieldValueRequired",
                                        "Required value: when completion mode is Indexed"))
        return errors
    if policy not in (None, "Always"):
        errors.append(fe.not_supported("spec.template.spec.restartPolicy", policy, ["Always"]))
    selector = spec.get("selector")
    if not selector:
        errors.append(fe.required("spec.selector"))
    elif not _selector_matches(selector, tmeta.get("labels") or {}):
        errors.append(fe.invalid("spec.template.metadata.labels", tmeta.get("labels") or {},
                                 "`selector` does not match template `labels`"))
    return errors
