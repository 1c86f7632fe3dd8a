"""Mixing several data sources into every batch, resumably."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from training.config import DataConfig
from training.dataset import (
    MixedStepSampler,
    MixedTaskDataset,
    StepSampler,
    build_training_sources,
    samples_per_batch,
)


@pytest.mark.parametrize(
    ("shares", "batch", "expected"),
    [
        ({"procedural": 0.5, "camvid": 0.5}, 8, {"procedural": 4, "camvid": 4}),
        ({"procedural": 0.75, "camvid": 0.25}, 8, {"procedural": 6, "camvid": 2}),
        ({"procedural": 2 / 3, "camvid": 1 / 3}, 8, {"procedural": 5, "camvid": 3}),
        ({"procedural": 0.95, "camvid": 0.05}, 4, {"procedural": 3, "camvid": 1}),
        ({"procedural": 1.0}, 6, {"procedural": 6}),
    ],
)
def test_batch_is_split_by_share(shares: dict[str, float], batch: int, expected: dict[str, int]) -> None:
    assert samples_per_batch(shares, batch) == expected


def test_every_batch_holds_each_source_in_its_share() -> None:
    sampler = MixedStepSampler([10, 3], [3, 1], seed=0)
    keys = list(itertools.islice(iter(sampler), 4 * 5))
    for step in range(5):
        batch = keys[step * 4 : (step + 1) * 4]
        assert [k[0] for k in batch] == [0, 0, 0, 1]
    # Each source walks through all its scenes before repeating one (an epoch).
    first_source = [k[1] for k in keys if k[0] == 0][:10]
    assert sorted(first_source) == list(range(10))
    second_source = [k[1] for k in keys if k[0] == 1][:3]
    assert sorted(second_source) == [0, 1, 2]


def test_a_resumed_sampler_continues_the_same_order() -> None:
    whole = list(itertools.islice(iter(MixedStepSampler([7, 5], [2, 2], seed=3)), 4 * 9))
    resumed = list(itertools.islice(iter(MixedStepSampler([7, 5], [2, 2], seed=3, start_step=6)), 4 * 3))
    assert resumed == whole[4 * 6 :]


def test_a_one_source_mix_orders_its_scenes_like_a_plain_run() -> None:
    # A run's batches must not change with how its one source is wrapped: both walk
    # the same step-pure order, resumed or not, on any rank.
    for start_step, rank in ((0, 0), (5, 1)):
        plain = StepSampler(9, 3, seed=4, start_step=start_step, rank=rank, world_size=2)
        mixed = MixedStepSampler([9], [3], seed=4, start_step=start_step, rank=rank, world_size=2)
        keys = list(itertools.islice(iter(mixed), 30))
        assert [(index, flip) for _, index, flip, _ in keys] == list(itertools.islice(iter(plain), 30))
        assert [j for *_, j in keys] == [
            j for step in range(start_step, start_step + 10) for j in plain.positions(step)
        ]


def test_ranks_take_disjoint_samples_of_each_global_batch() -> None:
    ranks = [
        list(itertools.islice(iter(MixedStepSampler([50, 50], [2, 2], 0, 0, True, r, 2)), 8)) for r in (0, 1)
    ]
    positions = [{(k[0], k[3]) for k in keys} for keys in ranks]
    assert not positions[0] & positions[1]


def test_two_source_batches_carry_camvid_without_instance_or_depth_targets(camvid_root: Path) -> None:
    config = DataConfig(height=24, width=32, train_count=6, mix={"procedural": 0.5, "camvid": 0.5})
    config.camvid_root = str(camvid_root)
    sources = build_training_sources(config, batch_size=4)
    assert [(s.name, s.per_batch, s.augment is not None) for s in sources] == [
        ("procedural", 2, False),
        ("camvid", 2, True),
    ]
    loader = DataLoader(
        MixedTaskDataset(sources, seed=0), batch_size=4, sampler=MixedStepSampler([6, 3], [2, 2], seed=0)
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 24, 32)
    procedural, camvid = slice(0, 2), slice(2, 4)
    assert batch["depth_mask"][procedural].all()
    assert not batch["depth_mask"][camvid].any()
    assert not batch["instance_mask"][camvid].any()
    assert (batch["semantic"][camvid] != 255).any()
    # Augmentation draws from the sample's position: the same key gives the same crop.
    dataset = MixedTaskDataset(sources, seed=0)
    assert torch.equal(dataset[(1, 2, False, 17)]["image"], dataset[(1, 2, False, 17)]["image"])
    assert not torch.equal(dataset[(1, 2, False, 17)]["image"], dataset[(1, 2, False, 18)]["image"])
