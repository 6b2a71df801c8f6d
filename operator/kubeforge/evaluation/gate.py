"""The promotion gate of a Benchmark run (pure: reads the metrics document, nothing else).

`evaluate_gate(doc, gate, models)` judges every candidate (the models of the run that are no
`betterThan` baseline) against every condition of `spec.gate` and picks the winner: the best
candidate that met them all, on the first condition's metric. Without a gate every model is a
candidate and the winner is the best on the task's first headline metric. docs/evaluation.md
("Promotion gates") describes it for users.

Values come from `models[m]["headline"]`, then `models[m]["metrics"]` (a scalar, or null), then the
nested metrics named in NESTED (e.g. `ece` is `metrics.calibration.ece`). Significance comes from
`comparison.differences[metric]` (a pair is stored once, `a` before `b` in modelOrder, difference
a - b with its bootstrap interval [low, high]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kubeforge.api.benchmark import GateCheck, GateCondition, GateResult
from kubeforge.models.catalog import BENCHMARK_METRICS, BENCHMARK_MINIMISED, BENCHMARK_NESTED

# Metrics where lower is better: a candidate "beats" a baseline by being lower, and wins by being lowest.
MINIMISED = BENCHMARK_MINIMISED
# Metrics that live below `metrics` in the document, by the name a gate uses.
NESTED = BENCHMARK_NESTED
# Without a gate, the winner is the best model on its task's first headline metric.
FIRST_HEADLINE = {task: m.headline[0] for task, m in BENCHMARK_METRICS.items()}
# Headline entries that are settings, not scores.
NOT_SCORES = frozenset({"threshold"})


_MISSING = object()


class GateError(ValueError):
    """The gate names something the metrics document cannot answer (a metric the task lacks)."""


class ModelRun(Protocol):
    """What the gate needs of a run's model (kubeforge.steps.spec.BenchmarkModel has it)."""

    training_job: str
    experiment_prefix: str
    run: str | None


def lower_is_better(metric: str) -> bool:
    return metric in MINIMISED


def fmt(value: float | None) -> str:
    return "null" if value is None else f"{value:.4g}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_value(entry: Mapping[str, Any], metric: str) -> tuple[bool, float | None]:
    """(whether the model's entry has `metric` at all, its value or None when it is null). The unrounded
    value of `metrics` first: `headline` is rounded for display, and a bound must not pass by rounding."""
    node: Any = entry.get("metrics") or {}
    for part in NESTED.get(metric, (metric,)):
        if not isinstance(node, Mapping) or part not in node:
            node = _MISSING
            break
        node = node[part]
    if node is None:
        return True, None
    if _number(node):
        return True, float(node)
    headline = entry.get("headline") or {}
    if _number(headline.get(metric)):
        return True, float(headline[metric])
    return False, None  # absent, or a table or a list: not a metric a gate can bound


def available_metrics(doc: Mapping[str, Any]) -> list[str]:
    """The metric names a gate may use on this document: headline metrics first, then other scalars."""
    headline: list[str] = []
    others: set[str] = set()
    for entry in (doc.get("models") or {}).values():
        for name in entry.get("headline") or {}:
            if name not in headline and name not in NOT_SCORES:
                headline.append(name)
        for name, value in (entry.get("metrics") or {}).items():
            if value is None or _number(value):
                others.add(name)
        others.update(n for n in NESTED if metric_value(entry, n)[0])
    return headline + sorted(others - set(headline) - NOT_SCORES)


def _better(a: float, b: float, metric: str) -> bool:
    return a < b if lower_is_better(metric) else a > b


def _difference(doc: Mapping[str, Any], metric: str, cand: str, base: str
                ) -> tuple[Mapping[str, Any] | None, float]:
    """The comparison entry of (cand, base) for `metric` and the sign that turns it into cand - base."""
    entries = ((doc.get("comparison") or {}).get("differences") or {}).get(metric) or []
    for entry in entries:
        if entry.get("a") == cand and entry.get("b") == base:
            return entry, 1.0
        if entry.get("a") == base and entry.get("b") == cand:
            return entry, -1.0
    return None, 1.0


def _significance(doc: Mapping[str, Any], metric: str, cand: str, base: str) -> tuple[bool, str]:
    """Whether the bootstrap interval of cand - base excludes zero on the better side, in words."""
    entry, sign = _difference(doc, metric, cand, base)
    resamples = (doc.get("bootstrap") or {}).get("resamples")
    if entry is None:
        why = ("spec.bootstrap.resamples is 0" if resamples == 0 else
               f"metrics.json has no comparison.differences entry for {metric} of {cand} and {base}")
        return False, f"no bootstrap interval of the difference ({why}), so it cannot be significant"
    if not entry.get("paired", False):
        return False, (f"no paired bootstrap interval: {cand} and {base} were not evaluated on the same images, "
                       "so the difference cannot be significant")
    low, high, diff = entry.get("low"), entry.get("high"), entry.get("difference")
    if not (_number(low) and _number(high)):
        why = "spec.bootstrap.resamples is 0" if resamples == 0 else "the interval is null"
        return False, f"no bootstrap interval of the difference ({why}), so it cannot be significant"
    lo, hi = sorted((sign * float(low), sign * float(high)))
    d = sign * float(diff) if _number(diff) else None
    words = f"difference {fmt(d)} [{fmt(lo)}, {fmt(hi)}]"
    ok = hi < 0 if lower_is_better(metric) else lo > 0
    if ok:
        return True, f"{words} excludes 0"
    if lo > 0 or hi < 0:
        return False, f"{words} excludes 0 on the wrong side: not significantly better"
    return False, f"{words} includes 0: not significant"


def _check(doc: Mapping[str, Any], models: Mapping[str, Any], cand: str, cond: GateCondition) -> GateCheck:
    metric = cond.metric
    _, value = metric_value(models[cand], metric)
    if value is None:
        return GateCheck(model=cand, metric=metric, value=None, passed=False,
                         message=f"{cand} {metric} is null (no value to judge)")
    parts: list[str] = []
    passed = True
    if cond.min is not None:
        ok = value >= cond.min
        passed &= ok
        parts.append(f"{cand} {metric} {fmt(value)} {'>=' if ok else '<'} {fmt(cond.min)}")
    if cond.max is not None:
        ok = value <= cond.max
        passed &= ok
        parts.append(f"{cand} {metric} {fmt(value)} {'<=' if ok else '>'} {fmt(cond.max)}")
    if cond.better_than is not None:
        base = cond.better_than
        _, base_value = metric_value(models[base], metric) if base in models else (False, None)
        shared = (doc.get("comparison") or {}).get("sharedMetrics") or {}
        if cand in shared and base in shared and metric in shared[cand] and metric in shared[base]:
            # Trained on different class sets: compared on the classes both know, as the difference is.
            value, base_value = shared[cand][metric], shared[base][metric]
            parts.append(f"on the classes both models know: {', '.join(doc['comparison'].get('sharedClasses', []))}")
        if value is None or base_value is None:
            passed = False
            parts.append(f"{cand} {metric} {fmt(value)}, baseline {base} {metric} is null: cannot beat it")
        else:
            beats = _better(value, base_value, metric)
            if beats:
                sign = "<" if lower_is_better(metric) else ">"
            else:
                sign = "==" if value == base_value else (">" if lower_is_better(metric) else "<")
            text = f"{cand} {metric} {fmt(value)} {sign} {base} {fmt(base_value)}"
            if not beats:
                text += " (lower is better)" if lower_is_better(metric) else ""
                passed = False
            elif cond.significant:
                ok, words = _significance(doc, metric, cand, base)
                passed &= ok
                text += f", {words}"
            parts.append(text)
    return GateCheck(model=cand, metric=metric, value=value, passed=passed, message="; ".join(parts))


def _best(values: Mapping[str, float | None], order: Sequence[str], metric: str) -> str | None:
    """The model with the best value (ties: the first in order); None when none has a value."""
    best: str | None = None
    for name in order:
        value = values.get(name)
        if value is None:
            continue
        if best is None or _better(value, values[best], metric):  # type: ignore[arg-type]
            best = name
    return best


def _first_headline(doc: Mapping[str, Any], order: Sequence[str]) -> str:
    models = doc.get("models") or {}
    task = models[order[0]].get("task") if order else None
    if task in FIRST_HEADLINE:
        return FIRST_HEADLINE[task]
    names = [n for n in (models[order[0]].get("headline") or {}) if n not in NOT_SCORES] if order else []
    if not names:
        raise GateError("metrics.json: the first model has no headline metric to pick a winner on")
    return names[0]


def evaluate_gate(doc: Mapping[str, Any], gate: Sequence[GateCondition],
                  models: Sequence[ModelRun] = ()) -> GateResult:
    """The gate of one Benchmark run. `models`: the run's models, for the winner's run id and prefix
    (default: the document's experimentPrefix). GateError when a condition names a metric the task does
    not report or a baseline the run did not evaluate."""
    entries: Mapping[str, Any] = doc.get("models") or {}
    order = [m for m in doc.get("modelOrder") or list(entries) if m in entries]
    if not order:
        raise GateError("metrics.json has no models to judge")
    known = available_metrics(doc)
    for i, cond in enumerate(gate):
        if not any(metric_value(entries[m], cond.metric)[0] for m in order):
            raise GateError(f"spec.gate[{i}].metric: {cond.metric!r} is not a metric of this benchmark "
                            f"({entries[order[0]].get('task', 'unknown task')}); metrics: {', '.join(known)}")
        if cond.better_than is not None and cond.better_than not in entries:
            raise GateError(f"spec.gate[{i}].betterThan: {cond.better_than!r} is not a model of this run "
                            f"({', '.join(order)})")
    baselines = {c.better_than for c in gate if c.better_than}
    candidates = [m for m in order if m not in baselines]
    if gate:
        metric = gate[0].metric
        checks = [_check(doc, entries, m, cond) for m in candidates for cond in gate]
        passing = [m for m in candidates if all(c.passed for c in checks if c.model == m)]
    else:
        metric = _first_headline(doc, order)
        checks, passing = [], candidates
    values = {m: metric_value(entries[m], metric)[1] for m in passing}
    winner = _best(values, order, metric)
    result = GateResult(passed=winner is not None, winner=winner, metric=metric, checks=checks)
    if winner is not None:
        ref = next((r for r in models if r.training_job == winner), None)
        result.winner_run = ref.run if ref is not None else None
        result.winner_experiment_prefix = (ref.experiment_prefix if ref is not None
                                           else entries[winner].get("experimentPrefix"))
    result.message = _message(result, gate, candidates, values, metric)
    return result


def _message(result: GateResult, gate: Sequence[GateCondition], candidates: Sequence[str],
             values: Mapping[str, float | None], metric: str) -> str:
    if not gate:
        if result.winner is None:
            return f"no gate, and no model has a value for {metric}"
        others = [m for m in candidates if m != result.winner and values.get(m) is not None]
        tail = (", ahead of " + ", ".join(f"{m} {fmt(values[m])}" for m in others)) if others else ""
        return f"no gate: {result.winner} is best on {metric} ({fmt(values[result.winner])}){tail}"
    if result.winner is None:
        failed = [c.message for c in result.checks if not c.passed]
        return "; ".join(failed) or "no candidate passed"
    mine = [c.message for c in result.checks if c.model == result.winner]
    passing = [m for m in values if m != result.winner and values[m] is not None]
    also = f" (also passed: {', '.join(passing)})" if passing else ""
    return f"{result.winner} wins on {metric} {fmt(values[result.winner])}{also}: " + "; ".join(mine)


def gate_status(doc: Mapping[str, Any], gate: Sequence[GateCondition], models: Sequence[ModelRun],
                benchmark_run: str | None) -> dict[str, Any]:
    """What the Benchmark step adds to its result: `gate`, and `promoted` when a winner was found (a
    run without one leaves the earlier `promoted` in status as it is; kubeforge.core.status)."""
    result = evaluate_gate(doc, gate, models)
    out: dict[str, Any] = {"gate": result.dump()}
    if result.passed and result.winner and result.winner_experiment_prefix:
        promoted = {"trainingJob": result.winner, "experimentPrefix": result.winner_experiment_prefix,
                    "benchmarkRun": benchmark_run or ""}
        if result.winner_run:
            promoted["run"] = result.winner_run
        out["promoted"] = promoted
    return out
