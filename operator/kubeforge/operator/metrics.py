"""Prometheus metrics of one operator instance (its own registry, served on KUBEFORGE_METRICS_PORT).

Served at `/metrics` (the chart's `metrics` port and Service):

- `kubeforge_reconciles_total{kind}`, `kubeforge_reconcile_errors_total{kind}`: handler calls and
  unexpected failures per kind (every kind listed from the start, at 0);
- `kubeforge_resources{kind,phase}`: resources per phase, as this instance last wrote them;
- `kubeforge_training_epoch` / `kubeforge_training_epochs{namespace,name}`: a TrainingJob's progress;
- `kubeforge_operator_active`: 1 while this replica handles resources, 0 while Kopf's peering keeps it
  a standby (another replica has a higher `kubeforge_operator_peering_priority`) or has not yet
  seen the peering object; `kubeforge_operator_peering_priority`: this replica's priority;
- `process_*` (memory, CPU, open files, start time) and `python_*` of the operator process.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from kubeforge.api import KINDS

# Kopf has no hook for its peering pause; it logs each change (kopf/_core/engines/peering.py), and
# tests/test_operator_peering.py fails if those messages change.
KOPF_PEERING_LOGGER = "kopf._core.engines.peering"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter("kubeforge_reconciles_total", "Reconciliations per kind.", ["kind"],
                                  registry=self.registry)
        self.errors = Counter("kubeforge_reconcile_errors_total", "Failed reconciliations per kind.", ["kind"],
                              registry=self.registry)
        self.resources = Gauge("kubeforge_resources", "Resources per kind and phase.", ["kind", "phase"],
                               registry=self.registry)
        self.epoch = Gauge("kubeforge_training_epoch", "Last finished epoch of a TrainingJob.",
                           ["namespace", "name"], registry=self.registry)
        self.epochs = Gauge("kubeforge_training_epochs", "Planned epochs of a TrainingJob.", ["namespace", "name"],
                            registry=self.registry)
        self.active = Gauge("kubeforge_operator_active",
                            "1 while this replica handles resources; 0 while Kopf's peering pauses it.",
                            registry=self.registry)
        self.peering_priority = Gauge("kubeforge_operator_peering_priority",
                                      "Kopf peering priority of this replica (the highest live one is active).",
                                      registry=self.registry)
        for kind in KINDS:  # present at 0 from the start: a rate() or an alert needs the series
            self.reconciles.labels(kind)
            self.errors.labels(kind)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._phases: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def set_phase(self, kind: str, namespace: str, name: str, phase: str | None) -> None:
        """Record a resource's phase (None: it is gone) and recount the per-phase gauge of its kind."""
        with self._lock:
            key = (kind, namespace, name)
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts: dict[str, int] = {}
            for (k, _, _), p in self._phases.items():
                if k == kind:
                    counts[p] = counts.get(p, 0) + 1
            for p in {*counts, *(lbl for (k2, lbl) in self._known() if k2 == kind)}:
                self.resources.labels(kind, p).set(counts.get(p, 0))

    def _known(self) -> list[tuple[str, str]]:
        return [(s.labels["kind"], s.labels["phase"]) for m in self.resources.collect() for s in m.samples]

    def set_progress(self, namespace: str, name: str, epoch: int, epochs: int) -> None:
        self.epoch.labels(namespace, name).set(epoch)
        self.epochs.labels(namespace, name).set(epochs)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.set_phase(kind, namespace, name, None)
        if kind == "TrainingJob":
            for gauge in (self.epoch, self.epochs):
                try:
                    gauge.remove(namespace, name)
                except KeyError:
                    pass

    def track_peering(self, priority: int) -> None:
        """Follow Kopf's pausing and resuming of this process in `kubeforge_operator_active`.

        Process-wide (Kopf's peering logger is a module's): for `kubeforge operator run`, one operator
        per process. Starts at 0, as Kopf starts paused until it has read the peering object. With
        several watched namespaces Kopf pauses per namespace and the gauge follows the latest change;
        they agree, as every replica joins the peering of every namespace it watches.
        """
        self.peering_priority.set(priority)
        self.active.set(0)
        peering_log = logging.getLogger(KOPF_PEERING_LOGGER)
        if peering_log.getEffectiveLevel() > logging.INFO:
            peering_log.setLevel(logging.INFO)
        peering_log.addHandler(_PeeringStateHandler(self.active))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """/metrics on `port` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)


class _PeeringStateHandler(logging.Handler):
    """Sets a gauge from Kopf's "Pausing operations…" / "Resuming operations…" peering messages."""

    def __init__(self, gauge: Gauge) -> None:
        super().__init__(level=logging.INFO)
        self.gauge = gauge

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Pausing "):  # "… in favour of [peers]" or "… all operators, including self"
            self.gauge.set(0)
        elif message.startswith("Resuming operations"):
            self.gauge.set(1)
