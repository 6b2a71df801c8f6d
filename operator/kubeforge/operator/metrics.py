"""Prometheus metrics of one operator instance (its own registry, served on KUBEFORGE_METRICS_PORT)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


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

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """/metrics on `port` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
