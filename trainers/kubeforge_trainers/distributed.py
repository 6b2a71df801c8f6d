"""Distributed set-up, in one place: torchrun's environment, the process group, rank-0 gating.

torchrun (started by the indexed Job, see operator/builders.py) sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process. With WORLD_SIZE unset or 1 this
module does nothing, so a single-process run behaves exactly as it did before ranks existed.
Everything the run publishes (checkpoints, progress, metrics log, export, experiment_info) is
rank 0's to write; the other ranks train their shard and wait.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(env: dict[str, str], name: str, default: int) -> int:
    value = (env.get(name) or "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r}: torchrun sets it to an integer") from None


def from_env(env: dict[str, str] | None = None) -> DistEnv:
    """The rank layout torchrun put in the environment (a plain run: rank 0 of 1)."""
    env = dict(os.environ) if env is None else env
    world = _int(env, "WORLD_SIZE", 1)
    rank, local = _int(env, "RANK", 0), _int(env, "LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} WORLD_SIZE={world}: the rank must lie in [0, WORLD_SIZE)")
    return DistEnv(rank=rank, local_rank=local, world_size=world)


_current = DistEnv()


def current() -> DistEnv:
    """The layout `setup` initialised (rank 0 of 1 before it, or in a plain run)."""
    return _current


def setup(device: str | None = None) -> DistEnv:
    """Join the process group when WORLD_SIZE > 1; idempotent. NCCL on CUDA, gloo on CPU."""
    global _current
    env = from_env()
    if env.enabled and not dist.is_initialized():
        use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if use_cuda:
            # One GPU per process: NCCL needs each rank on its own device before the first collective.
            torch.cuda.set_device(env.local_rank)
        # env:// reads MASTER_ADDR / MASTER_PORT (torchrun sets both).
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=env.rank, world_size=env.world_size)
    _current = env
    return env


def teardown() -> None:
    global _current
    if dist.is_initialized():
        dist.destroy_process_group()
    _current = DistEnv()


def device_for(device: str) -> torch.device:
    """A CUDA run puts each local rank on its own GPU; CPU is CPU."""
    if device.startswith("cuda") and _current.enabled:
        return torch.device("cuda", _current.local_rank)
    return torch.device(device)


def barrier() -> None:
    if _current.enabled and dist.is_initialized():
        dist.barrier()


def broadcast(obj: T, src: int = 0) -> T:
    """Rank `src`'s object on every rank (a plain run: the object itself). Also a barrier."""
    if not (_current.enabled and dist.is_initialized()):
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: T) -> list[T]:
    """Every rank's object, in rank order, on every rank."""
    if not (_current.enabled and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * _current.world_size
    dist.all_gather_object(out, obj)
    return out


def mean(value: float) -> float:
    """The mean of a float over ranks (equal-sized shards, so an unweighted mean is right)."""
    if not (_current.enabled and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64,
                     device=device_for("cuda") if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / _current.world_size


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the model when distributed; the model itself otherwise."""
    if not _current.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module DDP wraps: what checkpoints and the export hold, so a single process loads them."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sampler(dataset: torch.utils.data.Dataset, seed: int) -> torch.utils.data.DistributedSampler | None:
    """This rank's shard of the training data; None (plain shuffling) in a single process.

    The same seed on every rank is what makes the shards disjoint: each rank shuffles the same
    permutation and takes every world_size-th index of it. Call `set_epoch` every epoch.
    """
    if not _current.enabled:
        return None
    return torch.utils.data.DistributedSampler(dataset, num_replicas=_current.world_size, rank=_current.rank,
                                               shuffle=True, seed=seed, drop_last=False)
