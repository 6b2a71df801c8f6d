"""`kubeforge operator run` in a process of its own, as a pod runs it: for tests that need a real
process (its own /metrics and /healthz ports, its own Kopf, a death by SIGKILL).

Logged in to the emulator through the emulator's kubeconfig ($KUBECONFIG); everything else comes
from the `KUBEFORGE_*` environment the caller passes, as the chart's Deployment passes it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from prometheus_client.parser import text_string_to_metric_families

from kubeforge.ports import free_ports


def kubeforge_executable() -> str:
    return shutil.which("kubeforge") or str(Path(sys.executable).parent / "kubeforge")


class OperatorProcess:
    """`with OperatorProcess(kubeconfig, workdir, "a", env) as op:`; started when /healthz answers."""

    def __init__(self, kubeconfig: str | Path, workdir: str | Path, name: str,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ("operator", "run"),
                 healthz_path: str = "/healthz", metrics_path: str = "/metrics") -> None:
        self.name = name
        self.metrics_port, self.health_port = free_ports(2)
        self.env = {**os.environ, **(env or {}), "KUBECONFIG": str(kubeconfig),
                    "KUBEFORGE_METRICS_PORT": str(self.metrics_port), "KUBEFORGE_HEALTH_PORT": str(self.health_port)}
        self.args = args
        self.healthz_path, self.metrics_path = healthz_path, metrics_path
        self.log_path = Path(workdir) / f"operator-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Self:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([kubeforge_executable(), *self.args], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator {self.name} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if self.healthz()[0] == 200:
                return self
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"operator {self.name}: no /healthz in {timeout}s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a node losing the pod: no cleanup, no goodbye in the peering object."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, as the kubelet stops a pod; SIGKILL if it does not exit in `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- what it says ------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _get(self, port: int, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as rsp:
                return rsp.status, rsp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""  # nothing listens (not yet, or no longer)

    def healthz(self) -> tuple[int, bytes]:
        return self._get(self.health_port, self.healthz_path)

    def metrics(self) -> dict[str, Any]:
        """`/metrics` parsed as Prometheus text: {family name: Metric}; a failed scrape raises."""
        status, body = self._get(self.metrics_port, self.metrics_path)
        if status != 200:
            raise RuntimeError(f"operator {self.name}: /metrics answered {status}")
        return {family.name: family for family in text_string_to_metric_families(body.decode())}

    def sample(self, metric: str, /, **labels: str) -> float | None:
        """The value of one sample (`metric` as exposed, e.g. kubeforge_reconciles_total), else None."""
        for family in self.metrics().values():
            for s in family.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None
