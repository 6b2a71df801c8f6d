"""How many CPU threads a training process may use, and how they are shared out.

torch starts as many intra-op threads as the machine has cores, whatever the container was
given: a pod limited to 2 CPUs on a 64-core node then runs 64 threads that the kernel throttles
to 2 cores' worth of time, and two trainings on one machine fight over every core. The budget
is what this process was given, first found wins:

1. the container's cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`);
2. `spec.resources.cpu` (a Kubernetes quantity: "2", "1.5", "500m"), for local runs with no quota;
3. the CPUs this process may run on (`os.sched_getaffinity`),

never more than (3). DataLoader workers are counted out of the same budget (each worker runs
one torch thread), so data loading and the training loop do not fight over the same cores.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")


@dataclass(frozen=True)
class CpuBudget:
    cpus: int
    source: str  # cgroup | resources.cpu | affinity


@dataclass(frozen=True)
class ThreadPlan:
    """torch intra-op and inter-op threads and DataLoader workers for one training process."""

    budget: CpuBudget
    intra_op: int
    inter_op: int
    workers: int
    workers_requested: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def parse_cpu_quantity(value: str) -> float:
    """A Kubernetes CPU quantity in cores: "2" -> 2.0, "500m" -> 0.5; errors name the field."""
    match = _QUANTITY.match(value.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"spec.resources.cpu: expected a positive CPU quantity such as \"2\", \"1.5\" or \"500m\", "
                         f"got {value!r}")
    number = float(match.group(1))
    return number / 1000 if match.group(2) else number


def cgroup_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in cores, or None when there is none (or no cgroup filesystem)."""
    v2 = root / "cpu.max"
    if v2.is_file():
        fields = v2.read_text().split()
        if len(fields) >= 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    for controller in (root / "cpu", root / "cpu,cpuacct", root):
        quota, period = controller / "cpu.cfs_quota_us", controller / "cpu.cfs_period_us"
        if quota.is_file() and period.is_file():
            q, p = int(quota.read_text().strip()), int(period.read_text().strip())
            return q / p if q > 0 and p > 0 else None
    return None


def affinity_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _whole(cores: float) -> int:
    # A fractional quota rounds down (the rest is too little for another busy thread), at least one.
    return max(1, math.floor(cores + 1e-9))


def cpu_budget(requested: str | None = None, root: Path = CGROUP_ROOT, available: int | None = None) -> CpuBudget:
    available = available if available is not None else affinity_cpus()
    quota = cgroup_cpus(root)
    if quota is not None:
        return CpuBudget(min(_whole(quota), available), "cgroup")
    if requested is not None:
        return CpuBudget(min(_whole(parse_cpu_quantity(requested)), available), "resources.cpu")
    return CpuBudget(available, "affinity")


def plan_threads(budget: CpuBudget, num_workers: int, processes: int = 1) -> ThreadPlan:
    """Split the budget between this process's loop and its DataLoader workers.

    `processes`: training processes sharing the budget on this node (torchrun's LOCAL_WORLD_SIZE).
    """
    mine = max(1, budget.cpus // max(1, processes))
    # The loop keeps at least one core; workers beyond the rest would only take turns with it.
    workers = min(num_workers, max(0, mine - 1))
    intra = max(1, mine - workers)
    # Eager training runs one op at a time; the inter-op pool only serves forks (TorchScript), so keep it small.
    return ThreadPlan(budget, intra, min(2, intra), workers, num_workers)


def apply(plan: ThreadPlan) -> None:
    import torch

    torch.set_num_threads(plan.intra_op)
    try:
        torch.set_num_interop_threads(plan.inter_op)
    except RuntimeError:
        # Settable once per process, before any inter-op work; a second training in one process keeps it.
        pass


def configure(requested: str | None, num_workers: int) -> ThreadPlan:
    """Plan for this process (its cgroup, its affinity, its node's torchrun processes) and apply it."""
    plan = plan_threads(cpu_budget(requested), num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    apply(plan)
    return plan
