"""The JSON Schema of metrics.json formatVersion 2 (schemas/benchmark-metrics-v2.json), and validation.

The schema is package data; `validate` needs the `jsonschema` package (installed with the test extra).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_ID = "https://kubeforge.io/schemas/benchmark-metrics/v2.json"
SCHEMA_FILE = "benchmark-metrics-v2.json"


class MetricsDocError(ValueError):
    """A metrics document that does not match the schema; the message lists each problem with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("metrics.json does not match " + SCHEMA_ID + ":\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@cache
def schema() -> dict[str, Any]:
    """The schema document (JSON Schema 2020-12)."""
    text = resources.files("kubeforge.evaluation").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def errors(doc: Any) -> list[str]:
    """Every problem of `doc` as 'path: message', in document order; empty when it is valid."""
    try:
        from jsonschema import Draft202012Validator
    except ImportError as exc:  # pragma: no cover - a test dependency
        raise RuntimeError("validating metrics.json needs the jsonschema package (pip install jsonschema)") from exc
    validator = Draft202012Validator(schema())
    found = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in found]


def validate(doc: Any) -> None:
    """Raise MetricsDocError listing every problem when `doc` does not match the formatVersion 2 schema."""
    problems = errors(doc)
    if problems:
        raise MetricsDocError(problems)
