"""metrics.json formatVersion 2: the schema accepts every fixture document and refuses broken ones."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from kubeforge.evaluation.metrics_schema import SCHEMA_ID, MetricsDocError, errors, schema, validate
from kubeforge.testing.metrics_docs import v2_doc

TASKS = ["object-detection", "instance-segmentation", "classification", "semantic-segmentation"]


def test_the_schema_is_a_valid_2020_12_schema_shipped_as_package_data() -> None:
    Draft202012Validator.check_schema(schema())
    assert schema()["$id"] == SCHEMA_ID == v2_doc()["schema"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("models", [("solo",), ("a", "b", "c")])
def test_fixture_documents_validate(task: str, models: tuple[str, ...]) -> None:
    doc = v2_doc(task, models, seed=len(models), class_sets_differ=len(models) > 2)
    validate(json.loads(json.dumps(doc)))  # as read back from metrics.json
    # Optional parts may be absent: no intervals (0 resamples), no speed (disabled), no comparison.
    for name in models:
        doc["models"][name].pop("intervals")
        doc["models"][name].pop("speed")
    doc.pop("comparison", None)
    validate(doc)


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    if value is KeyError:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


BROKEN = [
    (["formatVersion"], 1, "formatVersion"),
    (["models"], KeyError, "'models' is a required property"),
    (["bootstrap", "resamples"], "many", "bootstrap/resamples"),
    (["models", "det-a", "intervals", "AP"], {"low": 0.1}, "'high' is a required property"),
    (["models", "det-a", "speed", "rows", 0, "runtime"], "tensorflow", "speed/rows/0/runtime"),
    (["models", "det-a", "speed", "rows", 0, "batched"], KeyError, "'batched' is a required property"),
    (["models", "det-a", "speed", "skipped", 0, "reason"], 3, "speed/skipped/0/reason"),
    (["models", "det-a", "metrics", "counts", "tp"], 1.5, "counts/tp"),
    (["models", "det-a", "metrics", "confusion", "matrix"], [["x"]], "confusion/matrix/0/0"),
    (["models", "det-a", "metrics", "calibration", "bins", 0, "count"], -1, "bins/0/count"),
    (["models", "det-a", "metrics", "perClass", 0, "curve"], {"recall": []}, "'precision' is a required property"),
    (["models", "det-a", "perImage", "values"], ["high"], "perImage/values/0"),
    (["comparison", "differences", "AP", 0, "excludesZero"], "yes", "differences/AP/0/excludesZero"),
    (["comparison", "classSetsDiffer"], "no", "comparison/classSetsDiffer"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BROKEN)
def test_broken_documents_fail_naming_the_place(path: list[Any], value: Any, expected: str) -> None:
    doc = copy.deepcopy(v2_doc())
    validate(doc)
    _set(doc, path, value)
    with pytest.raises(MetricsDocError) as err:
        validate(doc)
    assert expected in str(err.value), str(err.value)
    assert errors(doc) == err.value.problems


def test_comparison_best_is_read_from_the_document_and_minimised_metrics_win_low(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """comparison.best (catalog.benchmark_best) is the highest value, the lowest for a minimised metric;
    the report marks the model the document names instead of recomputing it."""
    import dataclasses
    import re

    from kubeforge.evaluation.report import render_report
    from kubeforge.models import catalog

    doc = v2_doc("classification", ("a", "b"))
    assert doc["comparison"]["best"]["accuracy"] == "a"  # a is the better fixture model
    assert set(doc["comparison"]["best"]) >= {*catalog.BENCHMARK_METRICS["classification"].headline} - {"threshold"}
    doc["comparison"]["best"]["accuracy"] = "b"
    html = render_report(doc)
    table = html[html.index("<table class='comparison'>"):]
    row = re.search(r"<tr><td class=\"l\">accuracy</td>(.*?)</tr>", table)
    assert row is not None
    assert [('class="best"' in c) for c in row.group(1).split("</td>")[:2]] == [False, True]
    spec = dataclasses.replace(catalog.BENCHMARK_METRICS["classification"], report_extra=("ece",))
    monkeypatch.setitem(catalog.BENCHMARK_METRICS, "classification", spec)
    doc["models"]["a"]["metrics"]["ece"], doc["models"]["b"]["metrics"]["ece"] = 0.2, 0.05
    best = catalog.benchmark_best(doc["models"], ["a", "b"])
    assert best["ece"] == "b" and best["accuracy"] == "a"
