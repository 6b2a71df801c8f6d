"""Kubernetes object semantics shared by the emulator's store: errors, resource types, selectors,
JSON merge patch (structural pruning lives with the rest of a CRD schema, in `crd_schema`).
Pure functions; no I/O.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)


class ApiError(Exception):
    """An API failure rendered as a Kubernetes `Status` object with this HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: Body | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Body:
        out = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "code": self.code, "reason": self.reason, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class ResourceType:
    """What discovery says about one resource (one served version of it)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    singular: str = ""
    shortnames: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    # A CRD's openAPIV3Schema (applied through `crd` below): unknown fields are pruned as a real
    # server does, which is how an operator's own bookkeeping in `status` silently disappears.
    schema: Body | None = None
    # The compiled `crd_schema.CrdSchema` a custom resource is admitted with (None: stored as sent).
    crd: Any = field(default=None, compare=False, repr=False)
    # A built-in kind: validated against the Kubernetes OpenAPI schemas (`core_schema`).
    builtin: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        # Versions of one group/plural share their objects, as in a real server.
        return (self.group, self.plural)


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors ---------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b=c` is two terms)."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate over labels for `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (..)`, `k notin (..)`."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_selector(text or ""):
        if m := _SET_RE.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            checks.append(lambda labels, k=absent: k not in labels)
        else:
            checks.append(lambda labels, k=term: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def parse_field_selector(text: str | None) -> Callable[[Body], bool]:
    """Equality on metadata.name / metadata.namespace (what clients actually select on)."""
    checks: list[Callable[[Body], bool]] = []
    for term in _split_selector(text or ""):
        negate = "!=" in term
        path, value = (s.strip() for s in term.replace("!=", "=").replace("==", "=").split("=", 1))
        parts = path.split(".")

        def check(obj: Body, parts: list[str] = parts, value: str = value, negate: bool = negate) -> bool:
            cur: Any = obj
            for part in parts:
                cur = cur.get(part) if isinstance(cur, dict) else None
            return (str(cur) == value) != negate

        checks.append(check)
    return lambda obj: all(check(obj) for check in checks)


def spec_of(obj: Body) -> Body:
    """Everything that counts as the desired state: not metadata, not status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_patch(target.get(key), value)
    return target
