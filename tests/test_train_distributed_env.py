"""kubeforge_trainers.distributed without a process group: torchrun's env, and no-ops in one process."""

from __future__ import annotations

import pytest
import torch

from kubeforge_trainers import distributed


def test_env_layout_and_plain_run_defaults() -> None:
    assert distributed.from_env({}) == distributed.DistEnv(0, 0, 1)
    env = distributed.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (env.rank, env.local_rank, env.world_size, env.enabled, env.is_main) == (3, 1, 4, True, False)
    with pytest.raises(ValueError, match="RANK=4 WORLD_SIZE=4"):
        distributed.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.from_env({"WORLD_SIZE": "two"})


def test_single_process_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = distributed.setup("cpu")
    try:
        assert not env.enabled and not torch.distributed.is_initialized()
        model = torch.nn.Linear(2, 2)
        assert distributed.wrap(model, torch.device("cpu")) is model and distributed.unwrap(model) is model
        assert distributed.sampler(list(range(8)), seed=0) is None
        assert distributed.broadcast({"a": 1}) == {"a": 1} and distributed.gather(5) == [5]
        assert distributed.mean(2.5) == 2.5
    finally:
        distributed.teardown()


def test_shards_are_disjoint_and_cover_the_data() -> None:
    # What each rank's DistributedSampler takes with the same seed: disjoint halves of one permutation.
    data = list(range(19))
    shards = [list(torch.utils.data.DistributedSampler(data, num_replicas=2, rank=r, seed=7)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 10
    assert set(shards[0]) | set(shards[1]) == set(data)
