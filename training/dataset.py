"""Scenes to training batches: targets, flips, and a resumable sampling order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from training.config import DataConfig
from training.data.cityscapes import CityscapesScenes
from training.data.procedural import ProceduralScenes
from training.data.sample import SceneSample
from training.targets import build_targets


class SceneSource(Protocol):
    """Any dataset of `SceneSample`s (`ProceduralScenes`, `CityscapesScenes`, `DiskScenes`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SceneSample: ...


def build_scenes(config: DataConfig, split: str) -> SceneSource:
    """The scenes of ``split`` ("train" or "val") for the configured source."""
    if config.source == "cityscapes":
        assert config.root is not None
        return CityscapesScenes(config.root, split=split, height=config.height, width=config.width)
    count = config.train_count if split == "train" else config.val_count
    return ProceduralScenes(
        split=split, seed=config.seed, count=count, height=config.height, width=config.width
    )


def flip_sample(sample: SceneSample) -> SceneSample:
    """Mirror a sample left-right; targets built afterwards follow the mirrored instances."""
    return SceneSample(
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        semantic=np.ascontiguousarray(sample.semantic[:, ::-1]),
        instance=np.ascontiguousarray(sample.instance[:, ::-1]),
        depth=np.ascontiguousarray(sample.depth[:, ::-1]),
        name=sample.name + ":flipped",
    )


class TaskDataset(Dataset[dict[str, Tensor]]):
    """Model inputs and targets for a scene source.

    Indexed by ``(scene_index, flip)`` pairs from `StepSampler`, or by plain scene
    indices (no flip) for evaluation. Items: ``image`` ``float32 [3, H, W]`` in [0, 1]
    and the tensors of `training.targets.build_targets`.
    """

    def __init__(self, scenes: SceneSource) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Tensor]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        sample = self.scenes[index]
        if flip:
            sample = flip_sample(sample)
        item = {name: torch.from_numpy(array) for name, array in build_targets(sample).items()}
        item["image"] = torch.from_numpy(sample.image).permute(2, 0, 1).float().div_(255.0)
        return item


class StepSampler(Sampler[tuple[int, bool]]):
    """The training order as a pure function of the step, so a resumed run sees the same batches.

    Global sample ``j`` (step ``j // (B * world)``) is scene ``perm_e[j % N]`` of the
    epoch ``e = j // N``, with ``perm_e`` a permutation seeded by (seed, e), and is
    flipped when a hash of (seed, j) says so. Rank ``r`` of ``world`` processes takes
    its own ``B`` samples of each global batch.
    """

    def __init__(
        self,
        num_scenes: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        hflip: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_scenes, self.batch_size, self.seed = num_scenes, batch_size, seed
        self.start_step, self.hflip = start_step, hflip
        self.rank, self.world_size = rank, world_size
        self._epoch, self._perm = -1, np.arange(0)

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        step = self.start_step
        while True:
            first = (step * self.world_size + self.rank) * self.batch_size
            for j in range(first, first + self.batch_size):
                yield self.sample(j)
            step += 1

    def sample(self, j: int) -> tuple[int, bool]:
        epoch = j // self.num_scenes
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(epoch,))))
            self._epoch, self._perm = epoch, rng.permutation(self.num_scenes)
        flip = self.hflip and bool(
            np.random.SeedSequence(self.seed, spawn_key=(j, 1)).generate_state(1)[0] & 1
        )
        return int(self._perm[j % self.num_scenes]), flip

    def __len__(self) -> int:
        raise TypeError("StepSampler is endless; the trainer stops by step count")


def batch_to(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Tensor]:
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved
