"""The promotion gate (kubeforge.evaluation.gate) on constructed metrics documents.

Every branch by hand, then many seeded random documents against a direct re-statement of the rules
(`reference_gate`), which reads the document its own way (pairs looked up in both orders, no shared code).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from kubeforge.api.benchmark import BenchmarkSpec, GateCondition
from kubeforge.evaluation.gate import GateError, available_metrics, evaluate_gate, gate_status, metric_value


@dataclass
class Ref:
    training_job: str
    experiment_prefix: str
    run: str | None


def doc(values: dict[str, dict[str, float | None]], differences: dict[str, list[dict[str, Any]]] | None = None,
        task: str = "object-detection", resamples: int = 1000, **extra_metrics: Any) -> dict[str, Any]:
    """A metrics.json (v2 shape) with `values[model][metric]`; null values stay in metrics, not headline."""
    models = {}
    for name, vals in values.items():
        metrics = {k: v for k, v in vals.items()}
        metrics.update(extra_metrics.get(name, {}))
        models[name] = {"trainingJob": name, "experimentPrefix": f"experiments/x/{name}/runs/r{name}",
                        "task": task, "headline": {k: v for k, v in vals.items() if v is not None},
                        "metrics": metrics}
    out: dict[str, Any] = {"kind": "BenchmarkMetrics", "formatVersion": 2, "modelOrder": list(values),
                           "models": models, "bootstrap": {"resamples": resamples, "seed": 0, "confidence": 0.95}}
    if len(values) > 1:
        out["comparison"] = {"differences": differences or {}}
    return out


def diff(a: str, b: str, d: float, low: float | None, high: float | None, paired: bool = True) -> dict[str, Any]:
    excludes = None if low is None or high is None else (low > 0 or high < 0)
    return {"a": a, "b": b, "difference": d, "low": low, "high": high, "excludesZero": excludes, "paired": paired}


def gate(*conds: dict[str, Any]) -> list[GateCondition]:
    return [GateCondition.model_validate(c) for c in conds]


# --- by hand ------------------------------------------------------------------------------------


def test_min_passes_and_fails_with_the_numbers() -> None:
    d = doc({"new": {"AP": 0.5, "AP50": 0.61}})
    ok = evaluate_gate(d, gate({"metric": "AP50", "min": 0.5}))
    assert ok.passed and ok.winner == "new" and ok.metric == "AP50"
    assert ok.checks[0].message == "new AP50 0.61 >= 0.5" and ok.checks[0].value == 0.61
    assert ok.message == "new wins on AP50 0.61: new AP50 0.61 >= 0.5"
    bad = evaluate_gate(d, gate({"metric": "AP50", "min": 0.7}))
    assert not bad.passed and bad.winner is None and bad.winner_experiment_prefix is None
    assert bad.message == "new AP50 0.61 < 0.7"


def test_min_is_inclusive_and_max_bounds_from_above() -> None:
    d = doc({"m": {"AP50": 0.5, "AP": 0.3}})
    assert evaluate_gate(d, gate({"metric": "AP50", "min": 0.5})).passed
    res = evaluate_gate(d, gate({"metric": "AP", "max": 0.2}))
    assert not res.passed and res.message == "m AP 0.3 > 0.2"
    both = evaluate_gate(d, gate({"metric": "AP", "min": 0.1, "max": 0.4}))
    assert both.passed and both.checks[0].message == "m AP 0.3 >= 0.1; m AP 0.3 <= 0.4"


def test_a_null_value_fails_the_condition() -> None:
    d = doc({"m": {"AP50": None, "AP": 0.2}})
    res = evaluate_gate(d, gate({"metric": "AP50", "min": 0.0}))
    assert not res.passed and res.checks[0].value is None
    assert res.message == "m AP50 is null (no value to judge)"


def test_a_metric_the_task_does_not_report_is_an_error_naming_what_exists() -> None:
    d = doc({"m": {"AP50": 0.7, "AP": 0.4}})
    with pytest.raises(GateError, match=r"spec\.gate\[1\]\.metric: 'mIoU' is not a metric .*metrics: AP50, AP") as e:
        evaluate_gate(d, gate({"metric": "AP50", "min": 0.1}, {"metric": "mIoU", "min": 0.1}))
    assert "object-detection" in str(e.value)


def test_better_than_excludes_the_baseline_from_the_candidates() -> None:
    d = doc({"old": {"AP": 0.9}, "new": {"AP": 0.61}, "other": {"AP": 0.7}})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"}))
    assert not res.passed
    assert {c.model for c in res.checks} == {"new", "other"}  # old is the baseline, never a candidate
    assert res.message == "new AP 0.61 < old 0.9; other AP 0.7 < old 0.9"


def test_better_than_picks_the_best_passing_candidate() -> None:
    d = doc({"old": {"AP": 0.52}, "new": {"AP": 0.61}, "newer": {"AP": 0.66}})
    refs = [Ref("old", "p/old", "r1"), Ref("new", "p/new", "r2"), Ref("newer", "p/newer", "r3")]
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"}), refs)
    assert res.passed and res.winner == "newer" and res.winner_run == "r3" and res.winner_experiment_prefix == "p/newer"
    assert res.message.startswith("newer wins on AP 0.66 (also passed: new): newer AP 0.66 > old 0.52")


def test_equal_to_the_baseline_is_not_better() -> None:
    d = doc({"old": {"AP": 0.5}, "new": {"AP": 0.5}})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"}))
    assert not res.passed and res.message == "new AP 0.5 == old 0.5"


def test_a_null_baseline_cannot_be_beaten() -> None:
    d = doc({"old": {"AP": None}, "new": {"AP": 0.5}})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"}))
    assert not res.passed and "baseline old AP is null" in res.message


def test_significant_reads_the_interval_in_both_orders() -> None:
    # Stored once, a before b in modelOrder: old before new, so the entry is old - new and must be flipped.
    d = doc({"old": {"AP": 0.52}, "new": {"AP": 0.61}},
            {"AP": [diff("old", "new", -0.09, -0.15, -0.03)]})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old", "significant": True}))
    assert res.passed and res.winner == "new"
    assert res.checks[0].message == "new AP 0.61 > old 0.52, difference 0.09 [0.03, 0.15] excludes 0"
    d2 = doc({"new": {"AP": 0.61}, "old": {"AP": 0.52}}, {"AP": [diff("new", "old", 0.09, 0.03, 0.15)]})
    assert evaluate_gate(d2, gate({"metric": "AP", "betterThan": "old", "significant": True})).checks[0].message \
        == res.checks[0].message


def test_an_interval_that_includes_zero_is_not_significant() -> None:
    d = doc({"old": {"AP": 0.52}, "new": {"AP": 0.55}}, {"AP": [diff("old", "new", -0.03, -0.08, 0.01)]})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old", "significant": True}))
    assert not res.passed
    assert res.message == "new AP 0.55 > old 0.52, difference 0.03 [-0.01, 0.08] includes 0: not significant"
    # Without significant the same numbers pass.
    assert evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"})).passed


def test_no_interval_fails_significance_and_says_why() -> None:
    base = {"old": {"AP": 0.5}, "new": {"AP": 0.6}}
    cond = gate({"metric": "AP", "betterThan": "old", "significant": True})
    off = evaluate_gate(doc(base, {}, resamples=0), cond)
    assert not off.passed and "spec.bootstrap.resamples is 0" in off.message
    missing = evaluate_gate(doc(base, {}), cond)
    assert not missing.passed and "no comparison.differences entry for AP of new and old" in missing.message
    unpaired = evaluate_gate(doc(base, {"AP": [diff("old", "new", -0.1, -0.2, -0.05, paired=False)]}), cond)
    assert not unpaired.passed and "not evaluated on the same images" in unpaired.message
    null = evaluate_gate(doc(base, {"AP": [diff("old", "new", -0.1, None, None)]}, resamples=0), cond)
    assert not null.passed and "resamples is 0" in null.message


def test_minimised_metrics_are_better_when_lower() -> None:
    cal = {"old": {"calibration": {"ece": 0.08, "mce": 0.2}}, "new": {"calibration": {"ece": 0.03, "mce": 0.1}}}
    d = doc({"old": {"AP": 0.5}, "new": {"AP": 0.5}}, {"ece": [diff("old", "new", 0.05, 0.02, 0.07)]}, **cal)
    assert metric_value(d["models"]["new"], "ece") == (True, 0.03)
    res = evaluate_gate(d, gate({"metric": "ece", "betterThan": "old"}, {"metric": "ece", "max": 0.05}))
    assert res.passed and res.winner == "new"
    assert res.checks[0].message.startswith("new ece 0.03 < old 0.08")
    worse = doc({"old": {"AP": 0.5}, "new": {"AP": 0.5}}, {}, old=cal["new"], new=cal["old"])
    res = evaluate_gate(worse, gate({"metric": "ece", "betterThan": "old"}))
    assert not res.passed and res.message == "new ece 0.08 > old 0.03 (lower is better)"


def test_significant_on_the_wrong_side() -> None:
    # The point values say better, the interval says significantly worse (it can happen with skewed data).
    d = doc({"old": {"AP": 0.5}, "new": {"AP": 0.51}}, {"AP": [diff("new", "old", 0.01, -0.2, -0.1)]})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old", "significant": True}))
    assert not res.passed and "excludes 0 on the wrong side" in res.message


def test_the_winner_is_best_on_the_first_conditions_metric() -> None:
    d = doc({"a": {"AP": 0.6, "AP50": 0.9}, "b": {"AP": 0.7, "AP50": 0.8}})
    by_ap50 = evaluate_gate(d, gate({"metric": "AP50", "min": 0.5}, {"metric": "AP", "min": 0.5}))
    by_ap = evaluate_gate(d, gate({"metric": "AP", "min": 0.5}, {"metric": "AP50", "min": 0.5}))
    assert (by_ap50.winner, by_ap.winner) == ("a", "b")


def test_every_condition_must_hold_for_one_candidate() -> None:
    d = doc({"a": {"AP": 0.6, "AP50": 0.4}, "b": {"AP": 0.2, "AP50": 0.9}})
    res = evaluate_gate(d, gate({"metric": "AP", "min": 0.5}, {"metric": "AP50", "min": 0.5}))
    assert not res.passed and res.message == "a AP50 0.4 < 0.5; b AP 0.2 < 0.5"


def test_ties_go_to_the_first_in_model_order() -> None:
    d = doc({"b": {"AP": 0.6}, "a": {"AP": 0.6}})
    assert evaluate_gate(d, gate({"metric": "AP", "min": 0.1})).winner == "b"
    assert evaluate_gate(d, []).winner == "b"


def test_no_gate_picks_the_best_on_the_tasks_first_headline_metric() -> None:
    d = doc({"a": {"AP": 0.4, "AP50": 0.9}, "b": {"AP": 0.5, "AP50": 0.8}})
    res = evaluate_gate(d, [])
    assert res.passed and res.winner == "b" and res.metric == "AP" and res.checks == []
    assert res.message == "no gate: b is best on AP (0.5), ahead of a 0.4"
    seg = doc({"a": {"mIoU": 0.7}, "b": {"mIoU": 0.6}}, task="semantic-segmentation")
    assert evaluate_gate(seg, []).winner == "a"
    clf = doc({"a": {"accuracy": 0.7}, "b": {"accuracy": 0.8}}, task="classification")
    assert evaluate_gate(clf, []).winner == "b"
    inst = doc({"a": {"maskAP": None, "AP": 0.9}, "b": {"maskAP": 0.1, "AP": 0.1}}, task="instance-segmentation")
    assert evaluate_gate(inst, []).winner == "b"
    nothing = evaluate_gate(doc({"a": {"AP": None}}), [])
    assert not nothing.passed and nothing.message == "no gate, and no model has a value for AP"


def test_an_unknown_task_uses_its_first_headline_metric() -> None:
    d = doc({"a": {"score": 0.2, "other": 0.9}, "b": {"score": 0.3, "other": 0.1}}, task="custom")
    assert evaluate_gate(d, []).winner == "b"


def test_available_metrics_lists_headline_first_then_scalars() -> None:
    d = doc({"a": {"AP": 0.4, "AP50": 0.9, "threshold": 0.3}}, a={"counts": {"tp": 1}, "matchedIoU": 0.8,
                                                                   "calibration": {"ece": 0.1, "mce": 0.2}})
    names = available_metrics(d)
    assert names[:2] == ["AP", "AP50"] and "threshold" not in names
    assert {"matchedIoU", "ece", "mce"} <= set(names) and "counts" not in names


def test_gate_status_promotes_only_a_winner() -> None:
    d = doc({"old": {"AP": 0.52}, "new": {"AP": 0.61}})
    refs = [Ref("old", "p/old", "r1"), Ref("new", "p/new", "r2")]
    out = gate_status(d, gate({"metric": "AP", "betterThan": "old"}), refs, "bench1")
    assert out["promoted"] == {"trainingJob": "new", "run": "r2", "experimentPrefix": "p/new", "benchmarkRun": "bench1"}
    assert out["gate"]["passed"] is True and out["gate"]["winnerRun"] == "r2"
    failed = gate_status(d, gate({"metric": "AP", "min": 0.99}), refs, "bench1")
    assert "promoted" not in failed and failed["gate"]["passed"] is False


def test_the_api_refuses_a_gate_without_candidates_or_with_a_stranger_baseline() -> None:
    with pytest.raises(ValueError, match="every model is a betterThan baseline"):
        BenchmarkSpec.model_validate({"models": [{"trainingJob": "a"}], "gate": [{"metric": "AP", "betterThan": "a"}]})
    with pytest.raises(ValueError, match=r"spec.gate\[0\].betterThan: TrainingJob 'z'"):
        BenchmarkSpec.model_validate({"models": [{"trainingJob": "a"}], "gate": [{"metric": "AP", "betterThan": "z"}]})


# --- many random documents against a reference ------------------------------------------------

METRICS = ["AP", "AP50", "ece"]


def reference_gate(d: dict[str, Any], conds: list[dict[str, Any]]) -> tuple[set[str], str | None]:
    """The rules restated directly: (the passing candidates, the winner)."""
    order = d["modelOrder"]

    def value(m: str, metric: str) -> float | None:
        return d["models"][m]["metrics"]["calibration"]["ece"] if metric == "ece" else d["models"][m]["metrics"][metric]

    def interval(cand: str, base: str, metric: str) -> tuple[float, float] | None:
        for e in d.get("comparison", {}).get("differences", {}).get(metric, []):
            if not e["paired"] or e["low"] is None:
                continue
            if (e["a"], e["b"]) == (cand, base):
                return e["low"], e["high"]
            if (e["a"], e["b"]) == (base, cand):
                return -e["high"], -e["low"]
        return None

    baselines = {c["betterThan"] for c in conds if "betterThan" in c}
    passing = set()
    for m in order:
        if m in baselines:
            continue
        ok = True
        for c in conds:
            v = value(m, c["metric"])
            if v is None:
                ok = False
                continue
            lower = c["metric"] == "ece"
            if "min" in c and v < c["min"]:
                ok = False
            if "max" in c and v > c["max"]:
                ok = False
            if "betterThan" in c:
                b = value(c["betterThan"], c["metric"])
                if b is None or not (v < b if lower else v > b):
                    ok = False
                elif c.get("significant"):
                    iv = interval(m, c["betterThan"], c["metric"])
                    if iv is None or not (iv[1] < 0 if lower else iv[0] > 0):
                        ok = False
        if ok:
            passing.add(m)
    metric = conds[0]["metric"] if conds else "AP"
    lower = metric == "ece"
    ranked = [m for m in order if m in passing and value(m, metric) is not None]
    if not ranked:
        return passing, None
    best = min(value(m, metric) for m in ranked) if lower else max(value(m, metric) for m in ranked)  # type: ignore[type-var]
    return passing, next(m for m in ranked if value(m, metric) == best)


def random_case(rng: random.Random) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    names = [f"m{i}" for i in range(rng.randint(1, 4))]
    grid = [round(x * 0.05, 2) for x in range(21)]  # coarse values: ties and equal-to-bound cases happen

    def v() -> float | None:
        return None if rng.random() < 0.12 else rng.choice(grid)

    values = {n: {"AP": v(), "AP50": v()} for n in names}
    cal = {n: {"calibration": {"ece": v(), "mce": 0.5}} for n in names}
    differences: dict[str, list[dict[str, Any]]] = {}
    for metric in METRICS:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if rng.random() < 0.15:
                    continue  # a missing entry
                lo = rng.choice([-0.2, -0.1, -0.05, 0.0, 0.02, 0.1])
                hi = lo + rng.choice([0.0, 0.03, 0.1, 0.3])
                null = rng.random() < 0.1
                differences.setdefault(metric, []).append(
                    diff(a, b, (lo + hi) / 2, None if null else lo, None if null else hi, rng.random() > 0.1))
    d = doc(values, differences, **cal)
    conds: list[dict[str, Any]] = []
    baseline = rng.choice(names) if len(names) > 1 and rng.random() < 0.6 else None
    for _ in range(rng.randint(0, 3)):
        c: dict[str, Any] = {"metric": rng.choice(METRICS)}
        kind = rng.choice(["min", "max", "both", "better"] if baseline else ["min", "max", "both"])
        if kind in ("min", "both"):
            c["min"] = rng.choice(grid)
        if kind in ("max", "both"):
            c["max"] = rng.choice(grid)
        if kind == "better":
            c["betterThan"] = baseline
            # Only metrics with bootstrap intervals can be `significant` (the API refuses the others).
            c["significant"] = c["metric"] != "ece" and rng.random() < 0.75
        conds.append(c)
    return d, conds


def test_random_documents_agree_with_the_reference() -> None:
    rng = random.Random(11)
    seen = {"passed": 0, "failed": 0, "significant": 0}
    for _ in range(3000):
        d, conds = random_case(rng)
        result = evaluate_gate(d, gate(*conds))
        passing, winner = reference_gate(d, conds)
        got = {c.model for c in result.checks if c.passed and
               all(x.passed for x in result.checks if x.model == c.model)}
        if conds:
            assert got == passing, (d, conds)
        assert result.winner == winner, (d, conds, result)
        assert result.passed == (winner is not None)
        if winner is not None:
            assert result.winner_experiment_prefix == d["models"][winner]["experimentPrefix"]
        seen["passed" if result.passed else "failed"] += 1
        seen["significant"] += any(c.get("significant") for c in conds)
        for check in result.checks:  # every check names its model and metric and carries the numbers
            assert check.message.startswith(f"{check.model} {check.metric}")
    assert min(seen.values()) > 200, seen


# --- the core: references, resolution, status across runs, the CRD rule ----------------------------

def _core_fixtures() -> tuple[Any, Any, Any]:
    from kubeforge.api import parse_resource

    gv = "kubeforge.io/v1alpha1"

    def res(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"apiVersion": gv, "kind": kind, "metadata": {"name": name, "namespace": "ml"},
                                "spec": spec}
        if status is not None:
            body["status"] = status
        return parse_resource(body)

    svc = res("InferenceService", "svc", {"model": {"benchmark": "cmp", "pick": "best"}})
    bench_spec = {"datasetVersion": "v1", "models": [{"trainingJob": "old"}, {"trainingJob": "new"}],
                  "gate": [{"metric": "AP50", "min": 0.5}]}
    return res, svc, bench_spec


def test_a_service_naming_a_benchmark_waits_for_promotion_then_serves_the_winner() -> None:
    from kubeforge.api.references import WAITING_FOR_PROMOTION, references
    from kubeforge.core.resolve import WAITING_MARK, Waiting, build_run

    res, svc, bench_spec = _core_fixtures()
    assert [(r.role, r.field, r.kind, r.name) for r in references(svc)] == [
        ("served", "spec.model.benchmark", "Benchmark", "cmp")]

    def look(bench: Any) -> Any:
        return lambda kind, ns, name: bench if (kind, name) == ("Benchmark", "cmp") else None

    with pytest.raises(Waiting, match=r"spec\.model\.benchmark: Benchmark 'cmp' does not exist") as gone:
        build_run(svc, look(None), "file:///s")
    assert gone.value.reason == WAITING_FOR_PROMOTION and WAITING_MARK in gone.value.message
    running = res("Benchmark", "cmp", bench_spec, {"phase": "Running"})
    with pytest.raises(Waiting, match="is Running and has no run whose gate passed yet") as waiting:
        build_run(svc, look(running), "file:///s")
    assert WAITING_MARK in waiting.value.message
    failed_gate = {"passed": False, "metric": "AP50", "message": "new AP50 0.41 < 0.5; old AP50 0.3 < 0.5"}
    failed = res("Benchmark", "cmp", bench_spec, {"phase": "Succeeded", "runId": "b1", "gate": failed_gate})
    with pytest.raises(Waiting) as no_pass:
        build_run(svc, look(failed), "file:///s")
    assert no_pass.value.message == ("InferenceService/ml/svc: spec.model.benchmark: Benchmark 'cmp' has no run whose "
                                     "gate passed (run b1: new AP50 0.41 < 0.5; old AP50 0.3 < 0.5); waiting for "
                                     "a run whose gate passes")
    promoted = {"trainingJob": "new", "run": "aaaaaa1111",
                "experimentPrefix": "experiments/ml_s/new_tv/runs/aaaaaa1111", "benchmarkRun": "b2"}
    passed = res("Benchmark", "cmp", bench_spec, {"phase": "Succeeded", "runId": "b1", "gate": failed_gate,
                                                  "promoted": promoted})
    run = build_run(svc, look(passed), "file:///s")
    assert (run.experiment_prefix, run.training_run, run.training_job) == (  # type: ignore[union-attr]
        promoted["experimentPrefix"], "aaaaaa1111", "new")
    rolled = res("Benchmark", "cmp", bench_spec, {"phase": "Succeeded", "promoted": {
        **promoted, "trainingJob": "old", "run": "bbbbbb2222",
        "experimentPrefix": "experiments/ml_s/old_tv/runs/bbbbbb2222"}})
    assert build_run(svc, look(rolled), "file:///s").run_id != run.run_id  # a new winner is a new serve run


def test_promoted_survives_a_run_whose_gate_fails_and_gate_passed_tells_the_numbers() -> None:
    from kubeforge.api import BenchmarkStatus
    from kubeforge.core import status as cs
    from kubeforge.steps.runs import benchmark_run
    from kubeforge.steps.spec import DatasetRef

    res, _, bench_spec = _core_fixtures()
    bench = res("Benchmark", "cmp", bench_spec)
    data = DatasetRef(dataset="shapes", digest="a" * 64)
    first = benchmark_run(bench, "file:///s", data, ["p/old/r1", "p/new/r2"], ["r1", "r2"])
    assert [m.run for m in first.models] == ["r1", "r2"]
    assert benchmark_run(bench, "file:///s", data, ["p/old/r1", "p/new/r2"]).run_id == first.run_id  # ids unchanged
    assert '"run": "r2"' in first.model_dump_json(indent=1, exclude_unset=True)  # run.json carries it

    status, _ = cs.start_run(BenchmarkStatus(), first, 1)
    d = doc({"old": {"AP50": 0.3, "AP": 0.1}, "new": {"AP50": 0.61, "AP": 0.2}})
    result = gate_status(d, bench.spec.gate, first.models, first.run_id)
    status = cs.apply_result(bench, status, {"headline": "AP50=0.300", **result}, 1)
    assert isinstance(status, BenchmarkStatus) and status.promoted is not None
    assert (status.promoted.training_job, status.promoted.run, status.promoted.benchmark_run) == ("new", "r2",
                                                                                                   first.run_id)
    cond = next(c for c in status.conditions if c.type == "GatePassed")
    assert (cond.status, cond.reason, cond.message) == (
        "True", "GatePassed", "new wins on AP50 0.61: new AP50 0.61 >= 0.5")

    second = benchmark_run(bench, "file:///s", data, ["p/old/r1", "p/new/r3"], ["r1", "r3"])
    status, _ = cs.start_run(status, second, 2)
    assert isinstance(status, BenchmarkStatus) and status.gate is None and status.promoted is not None
    assert next(c for c in status.conditions if c.type == "GatePassed").status == "Unknown"
    worse = gate_status(doc({"old": {"AP50": 0.3}, "new": {"AP50": 0.41}}), bench.spec.gate, second.models,
                        second.run_id)
    status = cs.apply_result(bench, status, worse, 2)
    assert isinstance(status, BenchmarkStatus)
    assert status.gate is not None and not status.gate.passed
    assert status.promoted is not None and status.promoted.run == "r2"  # the earlier winner stands
    cond = next(c for c in status.conditions if c.type == "GatePassed")
    assert (cond.status, cond.reason) == ("False", "GateFailed")
    assert cond.message == (f"old AP50 0.3 < 0.5; new AP50 0.41 < 0.5; still promoted: new "
                            f"(Benchmark run {first.run_id})")

    # A run that fails (here: its step errored) judges nothing: GatePassed is False, not left Unknown.
    third = benchmark_run(bench, "file:///s", data, ["p/old/r1", "p/new/r4"], ["r1", "r4"])
    status, _ = cs.start_run(status, third, 3)
    status = cs.fail(status, "StepFailed", "benchmark step exited with code 1", 3)
    assert isinstance(status, BenchmarkStatus) and status.promoted is not None and status.promoted.run == "r2"
    cond = next(c for c in status.conditions if c.type == "GatePassed")
    assert (cond.status, cond.reason) == ("False", "RunFailed")
    assert cond.message == f"run {third.run_id} failed before its gate was judged; still promoted: new " \
                           f"(Benchmark run {first.run_id})"

    # No gate: status.gate and promoted (the best model), but no GatePassed condition.
    plain = res("Benchmark", "cmp", {k: v for k, v in bench_spec.items() if k != "gate"})
    run = benchmark_run(plain, "file:///s", data, ["p/old/r1", "p/new/r2"], ["r1", "r2"])
    status, _ = cs.start_run(status, run, 3)
    status = cs.apply_result(plain, status, gate_status(d, [], run.models, run.run_id), 3)
    assert isinstance(status, BenchmarkStatus) and status.gate is not None and status.gate.passed
    assert not [c for c in status.conditions if c.type == "GatePassed"]
    assert status.promoted is not None and status.promoted.training_job == "new"


def test_the_served_run_notice_names_the_benchmark_and_both_models() -> None:
    from kubeforge.api import InferenceServiceStatus
    from kubeforge.core import status as cs
    from kubeforge.steps.runs import serve_run

    _, svc, _ = _core_fixtures()
    first = serve_run(svc, "file:///s", "experiments/x/new/runs/aaaaaa1111", "aaaaaa1111", "new")
    status, _ = cs.start_run(InferenceServiceStatus(), first, 1)
    assert isinstance(status, InferenceServiceStatus) and status.training_job == "new"
    second = serve_run(svc, "file:///s", "experiments/x/old/runs/bbbbbb2222", "bbbbbb2222", "old")
    status, _ = cs.start_run(status, second, 1)
    assert cs.served_run_notice(svc, "aaaaaa1111", status, "new") == (
        "Benchmark cmp promoted a new winner: serving TrainingJob old run bbbbbb2222 instead of TrainingJob new "
        "run aaaaaa1111")


def test_the_crd_refuses_both_or_neither_model_source() -> None:
    from tests.test_crd_validation import cel_errors

    def svc(model: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService", "metadata": {"name": "s"},
                "spec": {"model": model}}

    assert cel_errors(svc({"benchmark": "cmp", "pick": "best"})) == []
    assert cel_errors(svc({"trainingJob": "det", "run": "abcdef"})) == []
    assert cel_errors(svc({"trainingJob": "det", "benchmark": "cmp"})) == [
        "spec.model: set exactly one of trainingJob or benchmark"]
    assert cel_errors(svc({"format": "onnx"})) == ["spec.model: set exactly one of trainingJob or benchmark"]
    assert cel_errors(svc({"benchmark": "cmp", "run": "abcdef"})) == [
        "spec.model: run pins a run of trainingJob; it cannot go with benchmark"]


def test_bounds_judge_the_unrounded_metric_not_the_rounded_headline() -> None:
    d = doc({"m": {"AP50": 0.4999996, "AP": 0.3}})
    d["models"]["m"]["headline"]["AP50"] = 0.5  # what the status shows, rounded
    res = evaluate_gate(d, gate({"metric": "AP50", "min": 0.5}))
    assert not res.passed and res.checks[0].value == pytest.approx(0.4999996, abs=0)


def test_the_api_refuses_unknown_metrics_and_significance_without_intervals() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"spec.gate \(AP5O\): not a Benchmark metric; expected one of"):
        GateCondition.model_validate({"metric": "AP5O", "min": 0.5})
    with pytest.raises(ValidationError, match=r"spec.gate \(ece\): significant needs a metric with bootstrap"):
        GateCondition.model_validate({"metric": "ece", "betterThan": "old", "significant": True})
    # Every name the catalog lists for the gate is accepted; the interval ones with significance too.
    from kubeforge.models import catalog

    for name in catalog.GATE_METRICS:
        GateCondition.model_validate({"metric": name, "min": 0})
    for name in catalog.INTERVAL_METRICS:
        GateCondition.model_validate({"metric": name, "betterThan": "b", "significant": True})


def test_better_than_judges_models_of_different_class_sets_on_the_shared_classes() -> None:
    # Own classes: new looks better; on the classes both know (as the difference is taken) it is not.
    d = doc({"old": {"AP": 0.4}, "new": {"AP": 0.6}})
    d["comparison"].update(classSetsDiffer=True, sharedClasses=["circle"],
                           sharedMetrics={"old": {"AP": 0.55}, "new": {"AP": 0.5}})
    res = evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"}))
    assert not res.passed
    assert res.checks[0].message == "on the classes both models know: circle; new AP 0.5 < old 0.55"
    d["comparison"]["sharedMetrics"]["new"]["AP"] = 0.7
    assert evaluate_gate(d, gate({"metric": "AP", "betterThan": "old"})).passed
