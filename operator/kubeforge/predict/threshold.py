"""The default confidence threshold: the one the model's Benchmark found best (F1-optimal), not a fixed 0.5.

A Benchmark's `metrics.json` (steps/benchmark.py) records, per evaluated model, the run it evaluated
(`experimentPrefix`) and `metrics.threshold`, the confidence that maximises F1 on its split
(evaluation/detection.py). `benchmark_threshold` finds the newest such record for one TrainingJob run;
the serve step writes it into the served config (`triton_repo.THRESHOLD_PARAMETER`), so a client with
only a URL uses it, and `kubeforge predict` says which threshold it used and where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeforge.store import layout
from kubeforge.store.base import Store

DEFAULT_THRESHOLD = 0.5
METRICS_FILE = "metrics.json"  # steps/benchmark.py METRICS_FILE (not imported: that module pulls ONNX Runtime)


@dataclass(frozen=True)
class Threshold:
    value: float
    source: str  # in words, for the CLI and logs

    def describe(self) -> str:
        return f"threshold {self.value:g} ({self.source})"


def from_metrics(doc: dict[str, Any], experiment_prefix: str) -> tuple[str, float] | None:
    """(TrainingJob, threshold) of the model in one Benchmark metrics document that evaluated this run."""
    want = experiment_prefix.rstrip("/")
    for name, entry in (doc.get("models") or {}).items():
        value = (entry.get("metrics") or {}).get("threshold")
        if str(entry.get("experimentPrefix", "")).rstrip("/") == want and value is not None:
            return name, float(value)
    return None


def benchmark_threshold(store: Store, experiment_prefix: str, namespace: str | None = None) -> Threshold | None:
    """The F1-optimal threshold of the newest Benchmark run that evaluated the TrainingJob run at
    `experiment_prefix` (its output prefix), or None when no Benchmark recorded one (classification
    and semantic segmentation never do: they have no confidence threshold)."""
    root = layout.benchmark_prefix(namespace, "") if namespace else "benchmarks/"
    best: tuple[str, Threshold] | None = None
    for key in store.list(root):
        if not key.endswith(f"/{METRICS_FILE}"):
            continue
        try:
            doc = store.get_json(key)
        except (KeyError, ValueError):
            continue  # a run being written, or not a metrics document: not a record
        found = from_metrics(doc, experiment_prefix) if isinstance(doc, dict) else None
        if found is None:
            continue
        bench = doc.get("benchmark") or {}
        run = key.rsplit("/", 2)[-2]
        created = str(doc.get("createdAt", ""))
        where = (f"F1-optimal on Benchmark {bench.get('namespace', '?')}/{bench.get('name', '?')}, run {run}, "
                 f"{doc.get('dataset', {}).get('split', '?')} split")
        if best is None or created > best[0]:
            best = (created, Threshold(found[1], where))
    return best[1] if best else None


def choose(override: float | None, recorded: Threshold | None, given_as: str = "--threshold") -> Threshold:
    """The override (`given_as` names where it was given) over the recorded Benchmark threshold over 0.5
    (saying so)."""
    if override is not None:
        return Threshold(override, given_as)
    if recorded is not None:
        return recorded
    return Threshold(DEFAULT_THRESHOLD, "default: no Benchmark recorded one for this model")
