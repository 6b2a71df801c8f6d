"""CPU thread budget from cgroup files (fake ones here), spec.resources.cpu and the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kubeforge_trainers import threads
from kubeforge_trainers.threads import CpuBudget, cgroup_cpus, cpu_budget, parse_cpu_quantity, plan_threads


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(("files", "cores"), [
    ({"cpu.max": "200000 100000\n"}, 2.0),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu,cpuacct/cpu.cfs_quota_us": "400000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 4.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota_v1_and_v2(tmp_path: Path, files: dict[str, str], cores: float | None) -> None:
    assert cgroup_cpus(_write(tmp_path, files)) == cores


def test_budget_prefers_the_quota_then_the_spec_then_affinity_and_never_exceeds_the_machine(tmp_path: Path) -> None:
    quota = _write(tmp_path / "q", {"cpu.max": "300000 100000"})
    none = _write(tmp_path / "n", {"cpu.max": "max 100000"})
    assert cpu_budget("1", quota, available=8) == CpuBudget(3, "cgroup")
    assert cpu_budget("2", none, available=8) == CpuBudget(2, "resources.cpu")
    assert cpu_budget("500m", none, available=8) == CpuBudget(1, "resources.cpu")
    assert cpu_budget("16", none, available=4) == CpuBudget(4, "resources.cpu")
    assert cpu_budget(None, none, available=6) == CpuBudget(6, "affinity")
    assert cpu_budget(None, quota, available=2) == CpuBudget(2, "cgroup")
    # The real affinity mask of this process is the default ceiling.
    assert cpu_budget(None, none).cpus == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("text", "cores"), [("2", 2.0), ("1.5", 1.5), ("500m", 0.5), (" 4 ", 4.0), ("2500m", 2.5)])
def test_cpu_quantities(text: str, cores: float) -> None:
    assert parse_cpu_quantity(text) == cores


@pytest.mark.parametrize("text", ["", "two", "2Gi", "-1", "0", "1e3"])
def test_bad_cpu_quantity_names_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=r"spec\.resources\.cpu"):
        parse_cpu_quantity(text)


@pytest.mark.parametrize(("cpus", "workers", "processes", "intra", "kept"), [
    (8, 0, 1, 8, 0),
    (8, 2, 1, 6, 2),
    (2, 4, 1, 1, 1),   # workers never take the loop's last core
    (1, 2, 1, 1, 0),
    (8, 1, 2, 3, 1),   # two torchrun processes on the node share it
])
def test_workers_come_out_of_the_same_budget(cpus: int, workers: int, processes: int, intra: int, kept: int) -> None:
    plan = plan_threads(CpuBudget(cpus, "affinity"), workers, processes)
    assert (plan.intra_op, plan.workers, plan.workers_requested) == (intra, kept, workers)
    assert 1 <= plan.inter_op <= plan.intra_op
    assert plan.intra_op + plan.workers <= max(1, cpus // processes)


def test_apply_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        threads.apply(plan_threads(CpuBudget(1, "resources.cpu"), 0))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
